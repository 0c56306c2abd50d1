"""Reading checkpoint files: one lazy, per-tensor reader for every weight file vacelive loads
(DiT, VACE, LoRA, VAE/TAE, umT5), so mmap, sub-dict selection, prefix stripping, error wording and
the progress bar exist once.

`.safetensors` is opened with `safe_open` (mmap, tensors materialised one at a time); torch files
(`.pt/.pth/.bin/.ckpt`) with `torch.load(mmap=True, weights_only=True)` (legacy non-zip files fall
back to a plain `weights_only` load). Trainer checkpoints are dicts of sub-dicts: the reader picks
the first sub-dict named in `prefer`, then strips `_fsdp_wrapped_module.` and a leading `model.`
present on every key.

`load_matching` loads the keys of one file into a model built on the meta device (each tensor
converted once to its final device and dtype and adopted with `load_state_dict(assign=True)`: no
second copy of the model) and says what matched in a LoadReport. The per-model entries live
beside each model: engine.dit.weights (DiT, VACE), engine.lora, engine.codecs (Wan VAE, TAE),
engine.text.encoder (umT5).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

FSDP_TAG = "_fsdp_wrapped_module."
# sub-dicts of trainer checkpoints, in order of preference
GENERATOR_KEYS = ("generator", "model", "state_dict", "generator_ema")
_ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the file and the first keys."""


def first_keys(items: Sequence, limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def normalize_keys(keys: Iterable[str]) -> dict[str, str]:
    """{normalized key: key in file}: drop `_fsdp_wrapped_module.`, then a leading `model.` when
    every key has it (trainer wrappers); collisions are an error."""
    keys = list(keys)
    cleaned = [k.replace(FSDP_TAG, "") for k in keys]
    if cleaned and all(k.startswith("model.") for k in cleaned):
        cleaned = [k[len("model."):] for k in cleaned]
    out: dict[str, str] = {}
    for new, old in zip(cleaned, keys):
        if new in out:
            raise CheckpointError(f"keys {out[new]!r} and {old!r} both normalize to {new!r}")
        out[new] = old
    return out


class CheckpointReader:
    """Lazy, per-tensor access to one checkpoint file (use as a context manager).

    prefer: names of sub-dicts to pick in a dict checkpoint, in order (default: the generator
    ones; with ema=True `generator_ema` is required)."""

    def __init__(self, path: str | os.PathLike, *, ema: bool = False, prefer: Sequence[str] | None = None):
        self.path = str(path)
        self._st = None
        self._dict: dict[str, torch.Tensor] | None = None
        if not os.path.exists(self.path):
            raise CheckpointError(f"{self.path}: file not found")
        try:
            if self.path.endswith(".safetensors"):
                from safetensors import safe_open

                self._st = safe_open(self.path, framework="pt", device="cpu")
                self.source = "safetensors"
                raw_keys = list(self._st.keys())
            else:
                obj = self._torch_load()
                self._dict, self.source = self._select(obj, ema, prefer)
                raw_keys = list(self._dict.keys())
        except CheckpointError:
            raise
        except Exception as exc:  # corrupt / unknown file: say which one
            raise CheckpointError(f"{self.path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
        self._names = normalize_keys(raw_keys)

    def _torch_load(self):
        try:
            return torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            return torch.load(self.path, map_location="cpu", weights_only=True)  # legacy (non-zip) format

    def _select(self, obj, ema: bool, prefer):
        if not isinstance(obj, dict):
            raise CheckpointError(f"{self.path}: expected a flat dict of tensors (or a trainer dict of them), got {type(obj).__name__}")
        order = list(prefer) if prefer is not None else list(GENERATOR_KEYS)
        if ema:
            if not isinstance(obj.get("generator_ema"), dict):
                raise CheckpointError(f"{self.path}: EMA weights requested but there is no 'generator_ema' (top-level keys: {first_keys(sorted(map(str, obj)))})")
            order = ["generator_ema"]
        for name in order:
            sub = obj.get(name)
            if isinstance(sub, dict):
                return {k: v for k, v in sub.items() if isinstance(v, torch.Tensor)}, name
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise CheckpointError(f"{self.path}: no tensors found (top-level keys: {first_keys(sorted(map(str, obj)))})")
        return tensors, "flat"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._st = None
        self._dict = None

    def keys(self) -> list[str]:
        return list(self._names)

    def shape(self, key: str) -> tuple[int, ...]:
        raw = self._names[key]
        if self._st is not None:
            return tuple(self._st.get_slice(raw).get_shape())
        return tuple(self._dict[raw].shape)

    def nbytes(self, key: str) -> int:
        raw = self._names[key]
        if self._st is not None:
            sl = self._st.get_slice(raw)
            n = 1
            for s in sl.get_shape():
                n *= s
            return n * _ST_BYTES.get(sl.get_dtype(), 4)
        t = self._dict[raw]
        return t.numel() * t.element_size()

    def tensor(self, key: str) -> torch.Tensor:
        raw = self._names[key]
        return self._st.get_tensor(raw) if self._st is not None else self._dict[raw]


def progress_bar(total_bytes: int, desc: str, enabled: bool = True):
    """tqdm byte counter, shown only for multi-GB-scale files (>= 512 MiB) so tests stay quiet."""
    from tqdm.auto import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, desc=desc, disable=not enabled or total_bytes < (512 << 20))


@dataclass
class LoadReport:
    path: str
    kind: str  # "DiT" / "VACE" / "LoRA"
    source: str  # layout / sub-dict used
    loaded: int = 0
    skipped: int = 0  # keys deliberately ignored (e.g. VACE keys while loading the base)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        head = f"{self.path} [{self.kind}, {self.source}]: {self.loaded} tensors loaded, {self.skipped} skipped"
        lines = [head]
        if self.missing:
            lines.append(f"  {len(self.missing)} missing: {first_keys(self.missing)}")
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} unexpected: {first_keys(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} (file {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched]
            lines.append(f"  {len(self.mismatched)} shape mismatches: {first_keys(shown, 3)}")
        return "\n".join(lines)


def place_buffers(model: nn.Module, device) -> None:
    """Move non-persistent buffers (RoPE / sinusoid tables) next to the loaded parameters."""
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.device != torch.device(device) and buf.device.type != "meta":
                module._buffers[name] = buf.to(device)


def load_matching(model: nn.Module, path, *, select: Callable[[str], bool], kind: str, ema: bool = False,
                  device=None, strict: bool = True, progress: bool = True) -> LoadReport:
    """Load the keys of `path` accepted by `select` into the model's parameters of the same keys."""
    expected = {k: v for k, v in model.state_dict(keep_vars=True).items() if select(k)}
    with CheckpointReader(path, ema=ema) as ck:
        present = [k for k in ck.keys() if select(k)]
        report = LoadReport(str(path), kind, ck.source, skipped=len(ck.keys()) - len(present))
        if not present:
            raise CheckpointError(f"{path}: no {kind} keys in this file (first keys: {first_keys(ck.keys())})")
        report.missing = sorted(set(expected) - set(present))
        report.unexpected = sorted(set(present) - set(expected))
        for k in present:
            if k in expected and ck.shape(k) != tuple(expected[k].shape):
                report.mismatched.append((k, ck.shape(k), tuple(expected[k].shape)))
        if strict and not report.ok:
            raise CheckpointError(f"checkpoint does not match the model\n{report}")
        bad = {k for k, _, _ in report.mismatched}
        todo = [k for k in present if k in expected and k not in bad]
        tensors: dict[str, torch.Tensor] = {}
        with progress_bar(sum(ck.nbytes(k) for k in todo), f"{kind} {os.path.basename(str(path))}", progress) as bar:
            for k in todo:
                ref = expected[k]
                dev = device if device is not None else (ref.device if ref.device.type != "meta" else "cpu")
                tensors[k] = ck.tensor(k).to(device=dev, dtype=ref.dtype)
                bar.update(ck.nbytes(k))
        model.load_state_dict(tensors, strict=False, assign=True)
        report.loaded = len(tensors)
    first = next(iter(tensors.values()))
    place_buffers(model, first.device)
    if hasattr(model, "bump_weights_version"):
        model.bump_weights_version()
    return report
