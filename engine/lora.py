"""LoRA on the main DiT blocks (PEFT on every block Linear, as in LongLive 1.0,
github.com/NVlabs/LongLive): LongLive's performance LoRA and user LoRAs.

Targets: exactly the 10 Linears of every MAIN block (`blocks.N.self_attn.{q,k,v,o}`,
`blocks.N.cross_attn.{q,k,v,o}`, `blocks.N.ffn.{0,2}`) = 300 for 1.3B; never VACE blocks.
File format (PEFT `get_peft_model_state_dict`): `base_model.model.blocks.N.<linear>.lora_{A,B}.weight`
(an adapter name after lora_A/B is tolerated), raw or under `generator_lora`; .pt or .safetensors.
The file stores no alpha: alpha defaults to the rank (LongLive: r = alpha = 256, scaling 1.0).

Two modes, several named LoRAs, each with its own scale:
  "merged" (default, zero runtime cost): W <- W + scale * alpha/r * B @ A, computed in fp32 and
           rounded once into the weight dtype. set_scale() applies the difference of scales;
           each change rounds W once more (in bf16 that is ~1 ulp per change), so a knob that
           moves constantly should use "live".
  "live"   PEFT LoRA layers (peft.inject_adapter_in_model) with a runtime scale: set_scale() is
           free and exact. Costs two thin matmuls per targeted Linear per forward.
Every change bumps the model's weights_version, so cached cross-attention text K/V are recomputed.
Load order: base -> VACE -> LoRA (after a live LoRA the state-dict names carry `base_layer`).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from vacelive.engine.checkpoint import CheckpointError, CheckpointReader, LoadReport, first_keys

TARGET_PATTERN = re.compile(r"blocks\.\d+\.(self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02])")
_KEY = re.compile(r"(?:base_model\.model\.)?(?P<target>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_\-]+)?\.weight")
MODES = ("merged", "live")


@dataclass
class LoraSpec:
    name: str
    path: str
    scale: float = 1.0
    mode: str = "merged"
    alpha: float | None = None


def _linear(module: nn.Module) -> nn.Module:
    return getattr(module, "base_layer", module)


def lora_target_names(model: nn.Module) -> list[str]:
    """Names of the Linears a LoRA may target (main blocks only)."""
    return [n for n, m in model.named_modules()
            if TARGET_PATTERN.fullmatch(n) and isinstance(_linear(m), nn.Linear)]


def read_lora(source) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{target module name: (A [r, in], B [out, r])} from a PEFT-format LoRA file (path) or an
    in-memory state dict with the same keys."""
    if isinstance(source, Mapping):
        return _pair_up("<state dict>", source.items())
    with CheckpointReader(source, prefer=("generator_lora",)) as ck:
        return _pair_up(str(source), ((k, ck.tensor(k)) for k in ck.keys()))


def _pair_up(path: str, items) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in items:
        m = _KEY.fullmatch(key)
        if m is None:
            raise CheckpointError(f"{path}: {key!r} is not a LoRA key (expected base_model.model.blocks.N.<linear>.lora_A/B.weight)")
        target = m["target"]
        if not TARGET_PATTERN.fullmatch(target):
            raise CheckpointError(f"{path}: {key!r} targets {target!r}, not one of the 10 Linears of a main block")
        pairs.setdefault(target, {})[m["ab"]] = tensor
    out = {}
    for target, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            have, lack = ("A", "B") if "A" in ab else ("B", "A")
            raise CheckpointError(f"{path}: {target} has lora_{have} but no lora_{lack}")
        a, b = ab["A"], ab["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{path}: {target}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not form a rank-r pair")
        out[target] = (a, b)
    if not out:
        raise CheckpointError(f"{path}: no LoRA tensors")
    return out


@dataclass
class _Lora:
    name: str
    mode: str
    scale: float
    alpha: float
    rank: int
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]


class LoraSet:
    """The LoRAs applied to one model (a CausalWanModel or a VaceWanModel)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._loras: dict[str, _Lora] = {}

    @property
    def scales(self) -> dict[str, float]:
        return {n: l.scale for n, l in self._loras.items()}

    @property
    def modes(self) -> dict[str, str]:
        """name -> "merged" or "live"."""
        return {n: l.mode for n, l in self._loras.items()}

    def add(self, name: str, source, *, scale: float = 1.0, mode: str = "merged", alpha: float | None = None) -> LoadReport:
        """source: a LoRA file path or a PEFT-format state dict. Returns the load report."""
        if mode not in MODES:
            raise ValueError(f"LoRA mode must be one of {MODES}, got {mode!r}")
        if name in self._loras:
            raise ValueError(f"a LoRA named {name!r} is already applied")
        path = "<state dict>" if isinstance(source, Mapping) else str(source)
        weights = read_lora(source)
        self._check(path, weights)
        ranks = {a.shape[0] for a, _ in weights.values()}
        if len(ranks) != 1:
            raise CheckpointError(f"{path}: mixed LoRA ranks {sorted(ranks)}")
        rank = ranks.pop()
        lora = _Lora(name, mode, float(scale), float(alpha if alpha is not None else rank), rank, weights)
        if mode == "merged":
            self._merge(lora, lora.scale)
        else:
            self._inject(lora)
        self._loras[name] = lora
        self._bump()
        return LoadReport(str(path), "LoRA", f"{mode}, r={rank}, alpha={lora.alpha:g}, scale={lora.scale:g}", loaded=2 * len(weights))

    def set_scale(self, name: str, scale: float) -> None:
        lora = self._get(name)
        scale = float(scale)
        if scale == lora.scale:
            return
        if lora.mode == "merged":
            self._merge(lora, scale - lora.scale)
        else:
            for target in lora.weights:
                self.model.get_submodule(target).set_scale(name, scale)
        lora.scale = scale
        self._bump()

    def remove(self, name: str) -> None:
        lora = self._get(name)
        del self._loras[name]
        if lora.mode == "merged":
            self._merge(lora, -lora.scale)
        else:
            for target in lora.weights:
                self.model.get_submodule(target).delete_adapter(name)
            self._unwrap_empty_layers()
        self._bump()

    # ---- internals ------------------------------------------------------------------------------
    def _get(self, name: str) -> _Lora:
        if name not in self._loras:
            raise KeyError(f"no LoRA named {name!r} (have: {sorted(self._loras)})")
        return self._loras[name]

    def _bump(self) -> None:
        if hasattr(self.model, "bump_weights_version"):
            self.model.bump_weights_version()

    def _check(self, path: str, weights) -> None:
        targets = set(lora_target_names(self.model))
        unknown = sorted(set(weights) - targets)
        if unknown:
            raise CheckpointError(f"{path}: LoRA targets not in the model: {first_keys(unknown)}")
        bad = []
        for target, (a, b) in weights.items():
            lin = _linear(self.model.get_submodule(target))
            if a.shape[1] != lin.in_features or b.shape[0] != lin.out_features:
                bad.append(f"{target} (A {tuple(a.shape)}, B {tuple(b.shape)} vs Linear {lin.in_features}->{lin.out_features})")
        if bad:
            raise CheckpointError(f"{path}: LoRA shapes do not match the model: {first_keys(bad, 3)}")

    @torch.no_grad()
    def _merge(self, lora: _Lora, scale: float) -> None:
        factor = scale * lora.alpha / lora.rank
        for target, (a, b) in lora.weights.items():
            w = _linear(self.model.get_submodule(target)).weight
            delta = b.to(w.device, torch.float32) @ a.to(w.device, torch.float32)
            w.copy_(torch.add(w.float(), delta, alpha=factor).to(w.dtype))

    @torch.no_grad()
    def _inject(self, lora: _Lora) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, bias="none",
                            target_modules=sorted(lora.weights))
        with warnings.catch_warnings():  # several adapters on one model is what we want here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(config, self.model, adapter_name=lora.name)
        live = [n for n, l in self._loras.items() if l.mode == "live"] + [lora.name]
        for target, (a, b) in lora.weights.items():
            layer = self.model.get_submodule(target)
            layer.lora_A[lora.name].weight.copy_(a)
            layer.lora_B[lora.name].weight.copy_(b)
            layer.set_scale(lora.name, lora.scale)
        for module in self.model.modules():
            if hasattr(module, "lora_A"):
                module.set_adapter([n for n in live if n in module.lora_A], inference_mode=True)

    def _unwrap_empty_layers(self) -> None:
        """Put plain Linears back where a PEFT layer has no adapter left (clean state dict again)."""
        for name, module in list(self.model.named_modules()):
            if hasattr(module, "lora_A") and hasattr(module, "base_layer") and len(module.lora_A) == 0:
                parent, _, child = name.rpartition(".")
                setattr(self.model.get_submodule(parent), child, module.base_layer)
        peft_config = getattr(self.model, "peft_config", None)
        if isinstance(peft_config, dict):
            live = {n for n, l in self._loras.items() if l.mode == "live"}
            for name in list(peft_config):
                if name not in live:
                    del peft_config[name]
