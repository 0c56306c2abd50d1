"""FP8 (e4m3) Linears for the DiT blocks: an optimisation switch, off by default.

Why: the 10 Linears of a block are ~40 % of a chunk's FLOPs at 832×480 (the rest is attention);
Hopper runs e4m3 matmuls at twice the bf16 rate. What: weights are quantised once per output
channel (scale = amax / 448), activations per row (token) at run time, and `torch._scaled_mm`
multiplies with both scale vectors and adds the bias in its epilogue (rowwise scaling, bf16 out).
Per-row/per-channel scales keep one outlier token or channel from crushing the others' precision.

The swap is reversible and keeps the state dict untouched: `Fp8Linear` replaces an `nn.Linear` in
its parent module, keeping its parameters under the same names; `Fp8Linears.restore()` puts the
original modules back (needed before
a merged-LoRA rescale, which edits the bf16 weights; `refresh()` re-quantises afterwards).
Cross-attention K/V are left in bf16: they run once per prompt, not per chunk.

`keep_originals=False` ("compact", for the 14B model on one GPU): each swapped Linear's bf16
weight storage is freed right after it is quantised, so the block Linears cost 1 byte per weight
instead of 3 (28 GB of bf16 + 14 GB of e4m3 for Krea 14B becomes ~14 GB). That is one-way:
restore()/refresh() refuse (no bf16 left to go back to or re-merge a LoRA into), and the state
dict then holds empty tensors for those weights.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
# The per-chunk Linears of a block (main and VACE blocks share the class); names relative to it.
BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o", "ffn.0", "ffn.2")


def fp8_supported(device: torch.device | str) -> bool:
    """Rowwise-scaled e4m3 matmuls: Hopper (sm_89+) on CUDA; the CPU kernel exists for tests."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return device.type == "cpu"


def _rowwise_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 [M, K], fp32 scale [M, 1]) with x ≈ q * scale."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).to(E4M3), scale


class Fp8Linear(nn.Module):
    """y = x W^T + b with W and x in e4m3 (rowwise scales), output in the original weight dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.in_features % 16 or linear.out_features % 16:
            raise ValueError(f"FP8 matmul needs feature sizes divisible by 16, got {linear.in_features}->{linear.out_features}")
        # The original parameters stay registered under their own names (same tensors, no copy),
        # so the state dict and its keys are unchanged while FP8 is on.
        self.weight, self.bias = linear.weight, linear.bias
        self.out_dtype = linear.weight.dtype
        q, scale = _rowwise_quantize(linear.weight.detach())
        # _scaled_mm wants the second operand column-major: keep W [out, in] row-major, pass W.t().
        self.register_buffer("weight_fp8", q, persistent=False)
        self.register_buffer("weight_scale", scale.t().contiguous(), persistent=False)  # [1, out]

    # None: every call runs in FP8. A set of row counts (tokens per call; --fp8 auto, engine.dit.
    # fp8_auto): only calls with that many rows run in FP8, the others in the original dtype.
    rows: frozenset[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is not None and x.numel() // x.shape[-1] not in self.rows:
            return nn.functional.linear(x, self.weight, self.bias)
        lead = x.shape[:-1]
        xq, xs = _rowwise_quantize(x.reshape(-1, x.shape[-1]))
        y = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.weight_scale,
                             bias=None if self.bias is None else self.bias.detach(), out_dtype=self.out_dtype)
        return y.unflatten(0, lead)


def _block_linears(model: nn.Module, names: Iterable[str]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) for every block Linear named in `names`, in main and VACE blocks."""
    found = []
    for module in model.modules():
        if not (hasattr(module, "self_attn") and hasattr(module, "ffn") and hasattr(module, "modulation")):
            continue
        for name in names:
            parent_path, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_path)
            child = getattr(parent, attr)
            if isinstance(child, nn.Linear):
                found.append((parent, attr, child))
    return found


class Fp8Linears:
    """Handle of an FP8 swap on one model: `restore()` brings the bf16 Linears back,
    `refresh()` re-quantises (after weights or merged LoRAs changed)."""

    def __init__(self, model: nn.Module, names: Iterable[str] = BLOCK_LINEARS,
                 on_change: Callable[[], None] | None = None, keep_originals: bool = True,
                 rows_by_shape: dict[tuple[int, int], frozenset[int]] | None = None):
        """rows_by_shape (--fp8 auto): {(in, out): row counts that run in FP8}; a Linear whose shape
        has no row count there stays bf16 (not swapped). None: every block Linear, every call."""
        self.model, self.names, self.on_change = model, tuple(names), on_change
        self.keep_originals = keep_originals
        self.rows_by_shape = rows_by_shape
        if rows_by_shape is not None and not keep_originals:
            raise ValueError("per-shape FP8 (--fp8 auto) needs the bf16 weights: keep_originals=True")
        self.released = False
        self._swapped: list[tuple[nn.Module, str, nn.Linear]] = []
        self.apply()

    def apply(self) -> None:
        if self._swapped:
            return
        self._swapped = _block_linears(self.model, self.names)
        chosen = self.rows_by_shape
        if chosen is not None:
            self._swapped = [e for e in self._swapped if chosen.get((e[2].in_features, e[2].out_features))]
        for parent, attr, linear in self._swapped:
            fp8 = Fp8Linear(linear)
            if chosen is not None:
                fp8.rows = frozenset(chosen[(linear.in_features, linear.out_features)])
            setattr(parent, attr, fp8)
            if not self.keep_originals:  # free the bf16 copy now: peak = one Linear's temporaries
                linear.weight.data = linear.weight.data.new_empty(0)
                self.released = True
        self._changed()

    def restore(self) -> None:
        if self.released:
            raise RuntimeError("FP8 was applied with keep_originals=False: the bf16 weights were freed, "
                               "so they cannot be restored (reload the model instead)")
        for parent, attr, linear in self._swapped:
            setattr(parent, attr, linear)
        self._swapped = []
        self._changed()

    def refresh(self) -> None:
        self.restore()
        self.apply()

    @property
    def count(self) -> int:
        return len(self._swapped)

    def _changed(self) -> None:
        # Cached text K/V do not depend on the swapped Linears (cross_attn.k/v stay bf16), but a
        # model that tracks weight versions must still know its forward changed.
        if self.on_change is not None:
            self.on_change()


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||: how the FP8 path is compared with bf16 on the same weights."""
    out, ref = out.float(), ref.float()
    return (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp(min=1e-30)).item()


__all__ = ["BLOCK_LINEARS", "Fp8Linear", "Fp8Linears", "fp8_supported", "relative_error"]
