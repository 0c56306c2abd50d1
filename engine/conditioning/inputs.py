"""Live textures -> clean device tensors: layout, dtype, channels, frame count, size, NaN/Inf.

Everything here works on the target device and never rejects what it can fix:
- layout (channels last, the I/O convention): [H, W], [H, W, C], [F, H, W] (one-channel frames),
  [F, H, W, C] or [1, F, H, W, C]; C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA);
  numpy arrays or torch tensors on any device (anything numpy can turn into an array works too);
- dtype: uint8 (0..255), uint16 (0..65535), bool, or float in 0..1 (float16/bfloat16/32/64);
- non-finite floats become 0 (NaN, -Inf) or 1 (+Inf), floats outside 0..1 are clipped; both with
  a notice;
- frame count (`take_frames`): one frame is a still held for the whole chunk; more frames than the
  chunk needs: the newest are used; fewer: the last one is repeated, with a notice;
- size (`fit`): crop (fill the frame, cut the overflow), letterbox (fit inside, pad the rest) or
  stretch, all as one resize on the device.
What cannot be fixed (a 5-channel texture, an int32 array, an empty array) raises InputError with a
sentence for the performer; the caller drops that input for the chunk and carries on.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# BT.601 luma, as cv2.COLOR_RGB2GRAY (VACE's gray annotator).
LUMA = (0.299, 0.587, 0.114)


class InputError(ValueError):
    """An input that cannot be used this chunk. str(error) is a sentence for the performer."""


def frames01(x: Any, what: str, device: torch.device, notices: list[str]) -> torch.Tensor:
    """Any supported frames -> float32 [F, C, H, W] in [0, 1] on `device` (see module doc)."""
    t = _as_tensor(x, what)
    t = _to_fchw(t, what)
    if t.dtype == torch.uint8:
        return t.to(device, non_blocking=True).float().div_(255.0)
    if t.dtype == torch.uint16:
        return t.to(device, non_blocking=True).float().div_(65535.0)
    if t.dtype == torch.bool:
        return t.to(device, non_blocking=True).float()
    if not t.is_floating_point():
        raise InputError(f"{what} is {str(t.dtype).replace('torch.', '')}: send uint8 (0-255), uint16 or float (0-1) pixels.")
    t = t.detach().to(device, non_blocking=True).float()
    finite = torch.isfinite(t)
    nonfinite, outside = torch.stack([(~finite).any(), (((t < 0) | (t > 1)) & finite).any()]).tolist()
    if nonfinite:
        notices.append(f"{what} has NaN or infinite pixels; they were replaced (NaN -> black, +Inf -> white).")
        t = torch.nan_to_num_(t, nan=0.0, posinf=1.0, neginf=0.0)
    if outside:
        notices.append(f"{what} has float values outside 0-1; they were clipped (float pixels are 0-1).")
    if nonfinite or outside:
        t = t.clamp_(0.0, 1.0)
    return t


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if x is None:
        raise InputError(f"{what} is empty.")
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001 - anything not array-like is reported, not raised
        raise InputError(f"{what} is a {type(x).__name__}, not an image: send a numpy array or torch tensor.") from None
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise InputError(f"{what} is not an array of pixels (dtype {a.dtype}).")
    return torch.from_numpy(np.ascontiguousarray(a))


def _to_fchw(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.numel() == 0:
        raise InputError(f"{what} is empty (shape {tuple(t.shape)}).")
    if t.ndim == 5 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        return t[None, None]
    if t.ndim == 3:
        if t.shape[-1] <= 4:
            return t.permute(2, 0, 1)[None]  # [H, W, C]
        return t[:, None]  # [F, H, W] one-channel frames
    if t.ndim == 4:
        if t.shape[-1] > 4:
            raise InputError(f"{what} has {t.shape[-1]} channels (shape {tuple(t.shape)}): send 1 (gray), 3 (RGB) or 4 (RGBA) channels, channels last.")
        return t.permute(0, 3, 1, 2)
    raise InputError(f"{what} has shape {tuple(t.shape)}: send [H, W, C] images or [F, H, W, C] frames (channels last).")


def take_frames(x: torch.Tensor, n: int, what: str, notices: list[str]) -> torch.Tensor:
    """[F, ...] -> exactly n frames: a still is held (a view), extra frames drop the oldest, too
    few repeat the last (notice)."""
    f = x.shape[0]
    if f == n:
        return x
    if f == 1:
        return x.expand(n, *x.shape[1:])
    if f > n:
        return x[f - n:]
    notices.append(f"{what} has {f} frames but this chunk takes {n}; its last frame was repeated.")
    return torch.cat([x, x[-1:].expand(n - f, *x.shape[1:])])


def to_rgb(x: torch.Tensor, what: str, background: float | None = None) -> torch.Tensor:
    """[F, C, H, W] -> [F, 3, H, W]. Gray is repeated; alpha is dropped, or composited over a
    `background` gray level (references: white, like VACE's white canvas)."""
    c = x.shape[1]
    if c == 3:
        return x
    if c in (2, 4):
        color, alpha = x[:, :-1], x[:, -1:]
        if background is not None:
            color = torch.lerp(torch.full_like(color, background), color, alpha)
        return color.expand(-1, 3, -1, -1) if c == 2 else color
    if c == 1:
        return x.expand(-1, 3, -1, -1)
    raise InputError(f"{what} has {c} channels: send 1 (gray), 3 (RGB) or 4 (RGBA).")


def mask_plane(x: torch.Tensor, channel: str, what: str, notices: list[str]) -> torch.Tensor:
    """[F, C, H, W] -> [F, 1, H, W] from the chosen channel ('alpha', 'red' or 'luma'). A texture
    without alpha falls back to its luma (notice); a one-channel mask is used as it is."""
    c = x.shape[1]
    if c == 1:
        return x
    if c not in (2, 3, 4):
        raise InputError(f"{what} has {c} channels: send a 1-channel mask or an RGB(A) texture.")
    if channel == "alpha":
        if c in (2, 4):
            return x[:, -1:]
        notices.append(f"{what} has no alpha channel; its luma (brightness) is used as the mask.")
        channel = "luma"
    if c == 2:  # gray + alpha: red and luma are the gray plane
        return x[:, :1]
    if channel == "red":
        return x[:, :1]
    if channel == "luma":
        return luma(x[:, :3])
    raise InputError(f"mask channel must be alpha, red or luma, got {channel!r}.")


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """[F, 3, H, W] -> [F, 1, H, W] BT.601 luma."""
    r, g, b = LUMA
    return rgb[:, 0:1] * r + rgb[:, 1:2] * g + rgb[:, 2:3] * b


def fit(x: torch.Tensor, height: int, width: int, policy: str, fill: float) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Resize [F, C, h, w] to [F, C, height, width] by `policy` (bilinear, antialiased when
    shrinking). Returns the frames and the rectangle (y0, y1, x0, x1) the picture covers; outside
    it (letterbox bars) every value is `fill`."""
    f, c, h, w = x.shape
    full = (0, height, 0, width)
    if (h, w) == (height, width):
        return x, full
    if policy == "stretch":
        return _resize(x, height, width), full
    if policy == "crop":
        if w * height > width * h:  # too wide: cut the sides
            cw = max(1, round(h * width / height))
            x0 = (w - cw) // 2
            x = x[..., :, x0:x0 + cw]
        else:  # too tall: cut top and bottom
            ch = max(1, round(w * height / width))
            y0 = (h - ch) // 2
            x = x[..., y0:y0 + ch, :]
        return _resize(x, height, width), full
    if policy == "letterbox":
        scale = min(height / h, width / w)
        nh, nw = min(height, max(1, round(h * scale))), min(width, max(1, round(w * scale)))
        y0, x0 = (height - nh) // 2, (width - nw) // 2
        out = x.new_full((f, c, height, width), fill)
        out[..., y0:y0 + nh, x0:x0 + nw] = _resize(x, nh, nw)
        return out, (y0, y0 + nh, x0, x0 + nw)
    raise InputError(f"fit must be crop, letterbox or stretch, got {policy!r}.")


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (height, width):
        return x
    shrink = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)


def to_signed(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the engine's [-1, 1] (0.5 gray -> 0.0, VACE's "missing" fill)."""
    return x01 * 2.0 - 1.0
