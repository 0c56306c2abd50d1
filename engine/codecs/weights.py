"""Reading codec checkpoints (.pth / .safetensors) and matching them to a model, with clear errors."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from vacelive.engine.checkpoint import CheckpointError, CheckpointReader

from .base import CodecLoadError

_SUFFIXES = {".safetensors", ".pth", ".pt", ".bin", ".ckpt"}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat tensor dict from `path` on the CPU through the shared lazy reader (mmap: tensors
    are paged in as they are moved to their device)."""
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise CodecLoadError(f"{path}: unsupported checkpoint type {path.suffix!r} "
                             "(expected .pth or .safetensors)")
    try:
        with CheckpointReader(path, prefer=("state_dict", "model")) as ck:
            return {k: ck.tensor(k) for k in ck.keys()}
    except CheckpointError as exc:
        raise CodecLoadError(str(exc)) from exc


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str,
                     what: str) -> None:
    """Raise CodecLoadError naming `source` and the first missing / unexpected / mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
                 for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if not (missing or unexpected or misshaped):
        return
    parts = [f"{source}: not a {what} checkpoint: {len(missing)} missing, "
             f"{len(unexpected)} unexpected, {len(misshaped)} mis-shaped of {len(expected)} keys"]
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("mis-shaped", misshaped)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            parts.append(f"first {label}: {', '.join(keys[:3])}{more}")
    raise CodecLoadError("; ".join(parts))


def build_and_load(factory: Callable[[], nn.Module], sd: Mapping[str, torch.Tensor], source: str,
                   what: str, device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    """Build the model on the meta device (no memory, no init), check the keys, adopt the tensors
    with `assign=True` and move them once to (device, dtype)."""
    with torch.device("meta"):
        model = factory()
    check_state_dict(model, sd, source, what)
    model.load_state_dict(sd, strict=True, assign=True)
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()
