"""3D rotary position embedding of Wan2.1 (model-spec §1.3 "3D RoPE", §2.3 frame offset).

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


class RopeTable(nn.Module):
    """fp32 cos/sin of the Wan 3D RoPE, and the rotation itself."""

    def __init__(self, head_dim: int, max_positions: int = 1024):
        super().__init__()
        self.head_dim = head_dim
        self.max_positions = max_positions
        self.split = rope_split(head_dim)
        self._build(torch.device("cpu"))

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

    def token_freqs(self, frame_positions: Positions, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token cos/sin [n_frames*h*w, 1, head_dim/2] for frames at `frame_positions`
        (tokens ordered frame, row, column as after patchify); rows and columns start at 0."""
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
        out = []
        for table in (self.cos, self.sin):
            frames = torch.cat([table[a:b, :nf] for a, b in runs]) if len(runs) != 1 else table[runs[0][0]:runs[0][1], :nf]
            rows = table[:h, nf:nf + nh]
            cols = table[:w, nf + nh:]
            full = torch.cat(
                [
                    frames[:, None, None, :].expand(n, h, w, nf),
                    rows[None, :, None, :].expand(n, h, w, nh),
                    cols[None, None, :, :].expand(n, h, w, nw),
                ],
                dim=-1,
            )
            out.append(full.reshape(n * h * w, 1, nf + nh + nw))
        return out[0], out[1]

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Rotate x [B, L, H, D] by per-token angles (cos/sin [L, 1, D/2]); fp32 math, x's dtype out."""
        xf = x.float().unflatten(-1, (-1, 2))
        a, b = xf[..., 0], xf[..., 1]
        if inverse:
            sin = -sin
        out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
        return out.flatten(-2).to(x.dtype)
