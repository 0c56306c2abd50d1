"""3D rotary position embedding of Wan2.1 (`rope_params`/`rope_apply` in Wan2.1
`wan/modules/model.py`; frame offset as in Self-Forcing `causal_rope_apply`).

A head vector of size d is read as d/2 complex numbers from consecutive pairs. The first
`d/2 - 2*(d//6)` pairs rotate with the latent frame index, the next `d//6` with the token row,
the last `d//6` with the token column: (22, 21, 21) for d = 128. Each axis has its own table
`angle[p, j] = p / 10000**(2j / dim_axis)` with dim_axis = 2 * pairs of that axis.

The table is computed ONCE at init in float64 (exactly the reference formula) and kept as fp32
cos/sin buffers; the rotation itself runs in fp32 and is cast back (the reference rotates in
float64; fp32 keeps every angle's error below ~1e-7 rad, far under bf16 resolution). Buffers are
non-persistent: never in the state dict.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

Positions = Sequence[int]


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs per axis (frame, row, column); (22, 21, 21) for head_dim 128."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    hw = head_dim // 6
    return head_dim // 2 - 2 * hw, hw, hw


def rope_angles_f64(head_dim: int, max_positions: int) -> torch.Tensor:
    """[max_positions, head_dim/2] float64 angles: frame | row | column columns (CPU)."""
    parts = []
    for pairs in rope_split(head_dim):
        dim_axis = 2 * pairs
        inv = 1.0 / torch.pow(
            10000.0, torch.arange(0, dim_axis, 2, dtype=torch.float64, device="cpu") / dim_axis
        )
        parts.append(torch.outer(torch.arange(max_positions, dtype=torch.float64, device="cpu"), inv))
    return torch.cat(parts, dim=1)


def position_runs(positions: Positions) -> list[tuple[int, int]]:
    """Split a list of ints into maximal runs of consecutive values: [(start, stop), ...]."""
    if isinstance(positions, range) and positions.step == 1:
        return [(positions.start, positions.stop)] if len(positions) else []
    runs: list[tuple[int, int]] = []
    for p in positions:
        p = int(p)
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return runs


def default_build_device() -> torch.device:
    """Where a table built in __init__ belongs: the device of an enclosing `with torch.device(...)`
    (so a model built directly on CUDA gets its tables there), CPU under a meta context (tables are
    real values, never meta; weight loading moves them next to the parameters)."""
    device = torch.empty(0).device
    return torch.device("cpu") if device.type == "meta" else device


class RopeTable(nn.Module):
    """fp32 cos/sin of the Wan 3D RoPE, and the rotation itself."""

    def __init__(self, head_dim: int, max_positions: int = 1024):
        super().__init__()
        self.head_dim = head_dim
        self.max_positions = max_positions
        self.split = rope_split(head_dim)
        self._build(default_build_device())

    def _build(self, device: torch.device) -> None:
        # Explicit CPU float64 even under a `torch.device("meta")` context, then fp32 on `device`.
        angles = rope_angles_f64(self.head_dim, self.max_positions)
        self.register_buffer("cos", angles.cos().float().to(device), persistent=False)
        self.register_buffer("sin", angles.sin().float().to(device), persistent=False)

    def rebuild(self) -> None:
        """Recompute the table (after `to_empty()` or a stray dtype cast)."""
        device = self.cos.device
        self._build(device if device.type != "meta" else torch.device("cpu"))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # `model.to(bfloat16)` must not round the table: rebuild it in fp32 from float64.
        if self.cos.dtype != torch.float32 and self.cos.device.type != "meta":
            self.rebuild()
        return self

    def token_freqs(self, frame_positions: Positions, h: int, w: int) -> torch.Tensor:
        """Per-token rotations (cos, sin) [n_frames*h*w, 1, head_dim/2, 2] fp32 for frames at
        `frame_positions` (tokens ordered frame, row, column as after patchify); rows and columns
        start at 0."""
        runs = position_runs(frame_positions)
        n = sum(b - a for a, b in runs)
        top = max((b for _, b in runs), default=0)
        low = min((a for a, _ in runs), default=0)
        if low < 0 or top > self.max_positions or h > self.max_positions or w > self.max_positions:
            raise ValueError(
                f"RoPE position out of the table: frames {low}..{top - 1}, grid {h}x{w}, table "
                f"has {self.max_positions} positions per axis (absolute frame RoPE ends at "
                f"{self.max_positions} latent frames; use a KV cache in rope_mode='relative')"
            )
        nf, nh, nw = self.split
        parts = []
        for table in (self.cos, self.sin):
            frames = table[runs[0][0]:runs[0][1], :nf] if len(runs) == 1 else torch.cat([table[a:b, :nf] for a, b in runs])
            parts.append(torch.cat(
                [
                    frames[:, None, None, :].expand(n, h, w, nf),
                    table[:h, nf:nf + nh][None, :, None, :].expand(n, h, w, nh),
                    table[:w, nf + nh:][None, None, :, :].expand(n, h, w, nw),
                ],
                dim=-1,
            ).reshape(n * h * w, 1, nf + nh + nw))
        return torch.stack(parts, dim=-1)

    @staticmethod
    def rotate(x: torch.Tensor, freqs: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Rotate x [..., L, H, D] (pairs (2j, 2j+1) as complex numbers) by per-token `freqs`
        [L, 1, D/2, 2] (cos, sin): a complex multiply in fp32, result in x's dtype."""
        xr = x.float().unflatten(-1, (-1, 2))
        if torch.compiler.is_compiling():
            # Inductor has no complex codegen: the real form fuses into one kernel.
            a, b = xr[..., 0], xr[..., 1]
            c, s = freqs[..., 0], freqs[..., 1]
            if inverse:
                s = -s
            return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2).to(x.dtype)
        # Eager: one complex-multiply kernel instead of ~6 real elementwise kernels.
        f = torch.view_as_complex(freqs)
        out = torch.view_as_complex(xr) * (f.conj() if inverse else f)
        return torch.view_as_real(out).flatten(-2).to(x.dtype)
