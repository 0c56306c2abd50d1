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
from typing import Callable, Sequence

import torch
from torch import nn

from vacelive.engine.checkpoint import CheckpointError, CheckpointReader, first_keys, progress_bar
from vacelive.engine.dit.vace import VACE_PREFIXES


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
    from vacelive.engine.dit.model import CausalWanModel
    from vacelive.engine.dit.vace import VaceWanModel
    from vacelive.engine.lora import LoraSet

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
