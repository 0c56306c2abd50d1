"""Memory-efficient loading of every public DiT / VACE checkpoint layout (model-spec Appendix A).

Layouts understood (detected, not configured):
  * Wan base DiT `diffusion_pytorch_model.safetensors`: bare keys.
  * Self-Forcing / LongLive / SDv2 / MemFlow `.pt`: a dict with `generator` / `generator_ema` /
    `model` (EMA chosen by flag) holding keys `model.<bare key>`; `_fsdp_wrapped_module.` is
    stripped wherever it appears.
  * RewardForcing / Krea flat dicts (.pt or .safetensors): bare, or `model.` on every key.
  * VACE: module-only file (`Wan2_1-VACE_module_1_3B_bf16.safetensors`: only `vace_blocks.*` and
    `vace_patch_embedding.*`) or a full VACE checkpoint, filtered by those prefixes.
Order: base (load_dit_weights) -> VACE (load_vace_weights) -> LoRA (engine.lora).

How memory stays low: the model is built on the meta device (no allocation), files are opened
lazily (safetensors `safe_open` mmap; `torch.load(mmap=True, weights_only=True)`), each tensor
is converted once to its final device and dtype (fp8 e4m3/e5m2 upcast here) and handed to
`load_state_dict(assign=True)`, which adopts it as the parameter: no second copy of the model.
Parameters that the model keeps in fp32 (model.FP32_PARAMS) are loaded as fp32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from engine.dit.vace import VACE_PREFIXES

FSDP_TAG = "_fsdp_wrapped_module."
# sub-dicts of trainer checkpoints, in order of preference
GENERATOR_KEYS = ("generator", "model", "state_dict", "generator_ema")
_ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the file and the first keys."""


def _first(items: Sequence, limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


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
            lines.append(f"  {len(self.missing)} missing: {_first(self.missing)}")
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} unexpected: {_first(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} (file {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched]
            lines.append(f"  {len(self.mismatched)} shape mismatches: {_first(shown, 3)}")
        return "\n".join(lines)


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
            raise CheckpointError(f"{self.path}: expected a dict of tensors, got {type(obj).__name__}")
        order = list(prefer) if prefer is not None else list(GENERATOR_KEYS)
        if ema:
            if not isinstance(obj.get("generator_ema"), dict):
                raise CheckpointError(f"{self.path}: EMA weights requested but there is no 'generator_ema' (top-level keys: {_first(sorted(map(str, obj)))})")
            order = ["generator_ema"]
        for name in order:
            sub = obj.get(name)
            if isinstance(sub, dict):
                return {k: v for k, v in sub.items() if isinstance(v, torch.Tensor)}, name
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise CheckpointError(f"{self.path}: no tensors found (top-level keys: {_first(sorted(map(str, obj)))})")
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


def _progress(total_bytes: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, desc=desc, disable=not enabled or total_bytes < (512 << 20))


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
            raise CheckpointError(f"{path}: no {kind} keys in this file (first keys: {_first(ck.keys())})")
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
        with _progress(sum(ck.nbytes(k) for k in todo), f"{kind} {os.path.basename(str(path))}", progress) as bar:
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


def load_dit_weights(model: nn.Module, path, *, ema: bool = False, device=None, strict: bool = True, progress: bool = True) -> LoadReport:
    """Base DiT weights (any layout above) into a CausalWanModel or a VaceWanModel's base keys.
    VACE keys in the file (full VACE checkpoint) are skipped, not errors."""
    return load_matching(model, path, select=lambda k: not k.startswith(VACE_PREFIXES), kind="DiT",
                         ema=ema, device=device, strict=strict, progress=progress)


def load_vace_weights(model: nn.Module, path, *, device=None, strict: bool = True, progress: bool = True) -> LoadReport:
    """`vace_blocks.*` + `vace_patch_embedding.*` from a VACE module-only or full checkpoint."""
    return load_matching(model, path, select=lambda k: k.startswith(VACE_PREFIXES), kind="VACE",
                         device=device, strict=strict, progress=progress)


@dataclass
class LoadedDiT:
    model: nn.Module
    loras: "object"  # engine.lora.LoraSet
    reports: list


def build_model(cfg, dit_path, *, vace_path=None, loras: Sequence = (), ema: bool = False, dtype=torch.bfloat16,
                device="cuda", vace_in_dim: int | None = None, progress: bool = True) -> LoadedDiT:
    """Meta-device build -> base weights -> VACE wrap + weights -> LoRAs (engine.lora.LoraSpec)."""
    from engine.dit.model import CausalWanModel
    from engine.dit.vace import VaceWanModel
    from engine.lora import LoraSet

    with torch.device("meta"):
        base = CausalWanModel(cfg)
        model = VaceWanModel(base, vace_in_dim=vace_in_dim) if vace_path else base
    model.to(dtype)  # free on meta; FP32_PARAMS stay fp32
    reports = [load_dit_weights(model, dit_path, ema=ema, device=device, progress=progress)]
    if vace_path:
        reports.append(load_vace_weights(model, vace_path, device=device, progress=progress))
    lora_set = LoraSet(model)
    for spec in loras:
        reports.append(lora_set.add(spec.name, spec.path, scale=spec.scale, mode=spec.mode, alpha=spec.alpha))
    model.eval().requires_grad_(False)
    return LoadedDiT(model, lora_set, reports)
