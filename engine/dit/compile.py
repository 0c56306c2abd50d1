"""Optional torch.compile of the DiT blocks (an optimisation switch; eager is the default path).

Only the pure tensor parts of every block are compiled (`modulations`, `pre_attention`,
`post_attention`: norms, modulation, projections, RoPE, cross-attention, FFN). The KV-cache
writes/reads and the self-attention SDPA call stay eager between them, so the Python-int cache
bookkeeping never becomes a guard and one compiled graph serves every block of the same shape
(main and VACE blocks share the class).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

COMPILED_METHODS = ("modulations", "pre_attention", "post_attention")


def compile_blocks(model: nn.Module, **compile_kwargs) -> Callable[[], None]:
    """Compile the pure parts of every block of `model` (base or VACE wrapper) in place.
    Returns a function that restores the eager methods."""
    import torch._dynamo.config as dynamo_config

    # Blocks are distinct module instances: allow enough entries that none falls back to eager.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 512))
    blocks = [m for m in model.modules() if all(hasattr(m, n) for n in COMPILED_METHODS)]
    for block in blocks:
        for name in COMPILED_METHODS:
            setattr(block, name, torch.compile(getattr(block, name), **compile_kwargs))

    def restore() -> None:
        for block in blocks:
            for name in COMPILED_METHODS:
                block.__dict__.pop(name, None)

    return restore
