"""Optional torch.compile of the DiT blocks (an optimisation switch; eager is the default path).

Only the pure tensor parts of every block are compiled (`modulations`, `pre_attention`,
`post_attention`: norms, modulation, projections, RoPE, cross-attention, FFN). The KV-cache
writes/reads and the self-attention SDPA call stay eager between them, so the Python-int cache
bookkeeping never becomes a guard and one compiled graph serves every block of the same shape
(main and VACE blocks share the class).

Nothing compiles during a show. Graphs are static (`dynamic=False`): each call signature (the
shapes and dtypes of the tensor arguments, and `rotate_keys`, which is False once the KV cache
stores un-rotated keys) is its own graph, and a signature met for the first time compiles on
the spot (seconds for a whole model). `CompiledBlocks.warming()` records the signatures a
warm-up produces (engine.warmup runs every forward shape the stream can reach); once sealed, a
signature that the warm-up did not see runs the block's eager methods instead of compiling, and
is counted (`eager_calls`). The sealing itself (CompiledMethods) serves the codecs' per-chunk
encode/decode functions too (`--compile-codec`). `compile_count()` counts TorchDynamo frame
compilations (every first compile and every recompile, of any compiled function in the
process): the generator reads it around each chunk and reports a compile during a show
(engine.generator).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILED_METHODS = ("modulations", "pre_attention", "post_attention")


def compile_count() -> int:
    """TorchDynamo frame compilations so far in this process (first compiles and recompiles);
    0 where TorchDynamo is unavailable."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # a torch build without dynamo
        return 0
    return int(counters["frames"]["total"])


def call_signature(args: tuple) -> tuple:
    """What a static graph of a block method is specialised on, cheaply (it runs per call): shape
    and dtype of each top-level tensor argument and the value of plain Python arguments
    (`rotate_keys`). Tuples (the six modulation tensors) count by length: their shapes follow
    from the top-level tensors' frame and token counts."""
    out: list[Any] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append((a.shape, a.dtype))  # torch.Size is a hashable tuple
        elif isinstance(a, (tuple, list)):
            out.append(len(a))
        elif isinstance(a, (bool, int, float, str)) or a is None:
            out.append(a)
        else:
            out.append(type(a).__name__)
    return tuple(out)


def allow_many_graphs(limit: int = 512) -> None:
    """Blocks are distinct module instances, and every shape is its own graph: allow enough cache
    entries per function that none falls back to eager because of the cache size."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), limit))


class CompiledMethods:
    """torch.compile of named methods of some objects (instance attributes shadow the class's
    methods), with a closed set of signatures once a warm-up has sealed it. Serves the DiT blocks
    (CompiledBlocks) and the codecs' chunk functions (engine.codecs.base.Codec.use_compile).
    Calling the object restores the eager methods."""

    def __init__(self, targets, what: str, **compile_kwargs):
        """targets: [(object, method names)]; what: names them in the log."""
        allow_many_graphs()
        self.targets = [(obj, tuple(names)) for obj, names in targets]
        self.what = what
        self.compile_kwargs = dict(compile_kwargs)  # what else compiles such methods uses the same (fp8_auto)
        self.allowed: set[tuple] | None = None  # None: not sealed, every call is compiled
        self.eager_calls = 0
        self._warming = False
        self._warned: set[tuple] = set()
        for obj, names in self.targets:
            for name in names:
                eager = getattr(obj, name)
                setattr(obj, name, self._dispatch(name, torch.compile(eager, **compile_kwargs), eager))

    def _dispatch(self, name: str, compiled: Callable, eager: Callable) -> Callable:
        def call(*args):
            if self.allowed is None and not self._warming:
                return compiled(*args)
            key = (name,) + call_signature(args)
            if self._warming:
                self.allowed.add(key)
                return compiled(*args)
            if key in self.allowed:
                return compiled(*args)
            self.eager_calls += 1
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s: %s called with a signature the start-up warm-up did not compile (%s); "
                            "running it eagerly", self.what, name, key[1:])
            return eager(*args)

        return call

    @property
    def sealed(self) -> bool:
        return self.allowed is not None

    @contextlib.contextmanager
    def warming(self) -> Iterator["CompiledMethods"]:
        """Calls inside compile and add their signatures to the allowed set; afterwards the set is
        sealed (signatures outside it run eagerly). Nested or repeated warm-ups add to it."""
        if self.allowed is None:
            self.allowed = set()
        self._warming = True
        try:
            yield self
        finally:
            self._warming = False

    def restore(self) -> None:
        for obj, names in self.targets:
            for name in names:
                # nn.Module keeps plain attributes in __dict__ too
                obj.__dict__.pop(name, None)

    __call__ = restore


class CompiledBlocks(CompiledMethods):
    """The compiled pure parts of every block of one model (main and VACE blocks)."""

    def __init__(self, model: nn.Module, **compile_kwargs):
        self.blocks = [m for m in model.modules() if all(hasattr(m, n) for n in COMPILED_METHODS)]
        super().__init__([(b, COMPILED_METHODS) for b in self.blocks], "compiled DiT blocks", **compile_kwargs)


def compile_blocks(model: nn.Module, **compile_kwargs) -> CompiledBlocks:
    """Compile the pure parts of every block of `model` (base or VACE wrapper) in place.
    Returns the CompiledBlocks; calling it restores the eager methods."""
    return CompiledBlocks(model, **compile_kwargs)
