"""Loading the DiT and its VACE blocks from every public checkpoint layout.

Layouts understood (detected, not configured):
  * Wan base DiT `diffusion_pytorch_model.safetensors`: bare keys.
  * Self-Forcing / LongLive / SDv2 / MemFlow `.pt`: a dict with `generator` / `generator_ema` /
    `model` (EMA chosen by flag) holding keys `model.<bare key>`; `_fsdp_wrapped_module.` is
    stripped wherever it appears.
  * RewardForcing / Krea flat dicts (.pt or .safetensors): bare, or `model.` on every key.
  * VACE: module-only file (`Wan2_1-VACE_module_1_3B_bf16.safetensors`: only `vace_blocks.*` and
    `vace_patch_embedding.*`) or a full VACE checkpoint, filtered by those prefixes.
Order: base (load_dit_weights) -> VACE (load_vace_weights) -> LoRA (engine.lora);
`from_checkpoint` does all three on a meta-built model.

How memory stays low: the model is built on the meta device (no allocation), files are opened
lazily by engine.checkpoint (safetensors mmap; `torch.load(mmap=True, weights_only=True)`), each
tensor is converted once to its final device and dtype (fp8 e4m3/e5m2 upcast there) and adopted
by `load_state_dict(assign=True)`: no second copy of the model. Parameters that the model keeps
in fp32 (model.FP32_PARAMS) are loaded as fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from vacelive.engine.checkpoint import LoadReport, load_matching
from vacelive.engine.dit.model import CausalWanModel
from vacelive.engine.dit.vace import VACE_PREFIXES, VaceWanModel
from vacelive.engine.lora import LoraSet


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
    loras: LoraSet
    reports: list


def from_checkpoint(cfg, dit_path, *, vace_path=None, loras: Sequence = (), ema: bool = False, dtype=torch.bfloat16,
                device="cuda", vace_in_dim: int | None = None, progress: bool = True) -> LoadedDiT:
    """Meta-device build -> base weights -> VACE wrap + weights -> LoRAs (engine.lora.LoraSpec)."""
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
