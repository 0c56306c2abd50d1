"""Pixel layouts at transport boundaries: RGBA <-> BGRA and RGBA <-> UYVY 4:2:2 (numpy, no torch).

UYVY (the native NDI and SDI layout) packs two pixels in four bytes, U0 Y0 V0 Y1, with chroma
shared by the pair. The matrix is BT.709 with limited ("video") range, Y 16..235 and Cb/Cr
16..240 around 128: the colour space NDI documents for HD and the one its SDK uses when it
converts UYVY to RGB (NDI SDK documentation, "Video frames": NDIlib_FourCC_video_type_UYVY).
Widths must be even for UYVY (a pixel pair shares its chroma).
"""
from __future__ import annotations

import numpy as np

# BT.709 luma coefficients (ITU-R BT.709-6, item 3.2)
KR, KB = 0.2126, 0.0722
KG = 1.0 - KR - KB


def bgra_to_rgba(frame: np.ndarray) -> np.ndarray:
    """Swap R and B of [H,W,4] (the same swap turns RGBA into BGRA)."""
    return np.ascontiguousarray(frame[..., [2, 1, 0, 3]])


def _fixed(x: float) -> int:
    return int(round(x * 65536))


# BT.709 limited range in 16.16 fixed point: Y = 16 + 219/255 (Kr R + Kg G + Kb B);
# Cb = 128 + 224/255 (B - Y') / (2 (1 - Kb)); Cr = 128 + 224/255 (R - Y') / (2 (1 - Kr))
_SY = 219.0 / 255.0
_SB = 224.0 / (255.0 * 2.0 * (1.0 - KB))
_SR = 224.0 / (255.0 * 2.0 * (1.0 - KR))
_Y = [_fixed(_SY * k) for k in (KR, KG, KB)]
_CB = [_fixed(_SB * k) for k in (-KR, -KG, 1.0 - KB)]
_CR = [_fixed(_SR * k) for k in (1.0 - KR, -KG, -KB)]


def rgba_to_uyvy(frame: np.ndarray) -> np.ndarray:
    """[H,W,4] uint8 RGBA (alpha ignored) -> [H,W,2] uint8 UYVY, BT.709 limited range, in
    integer fixed point (a live sender converts every frame). A pixel pair's chroma is the
    chroma of the pair's mean colour (the transform is linear, so that is the mean chroma)."""
    h, w = frame.shape[:2]
    if w % 2:
        raise ValueError(f"UYVY needs an even width, got {w}")
    r, g, b = (frame[..., i].astype(np.int32) for i in range(3))
    out = np.empty((h, w, 2), np.uint8)
    y = (_Y[0] * r + _Y[1] * g + _Y[2] * b + (16 << 16) + (1 << 15)) >> 16
    out[:, :, 1] = np.clip(y, 0, 255)
    rp, gp, bp = r[:, 0::2] + r[:, 1::2], g[:, 0::2] + g[:, 1::2], b[:, 0::2] + b[:, 1::2]
    cb = (_CB[0] * rp + _CB[1] * gp + _CB[2] * bp + (128 << 17) + (1 << 16)) >> 17
    cr = (_CR[0] * rp + _CR[1] * gp + _CR[2] * bp + (128 << 17) + (1 << 16)) >> 17
    out[:, 0::2, 0] = np.clip(cb, 0, 255)
    out[:, 1::2, 0] = np.clip(cr, 0, 255)
    return out


def uyvy_to_rgba(packed: np.ndarray, alpha: int = 255) -> np.ndarray:
    """[H,W,2] (or [H, 2W] bytes) uint8 UYVY -> [H,W,4] uint8 RGBA, BT.709 limited range."""
    if packed.ndim == 2:
        packed = packed.reshape(packed.shape[0], -1, 2)
    h, w = packed.shape[:2]
    y = (packed[:, :, 1].astype(np.float32) - 16.0) * (1.0 / 219.0)
    cb = np.repeat((packed[:, 0::2, 0].astype(np.float32) - 128.0) * (1.0 / 224.0), 2, axis=1)
    cr = np.repeat((packed[:, 1::2, 0].astype(np.float32) - 128.0) * (1.0 / 224.0), 2, axis=1)
    r = y + 2.0 * (1.0 - KR) * cr
    b = y + 2.0 * (1.0 - KB) * cb
    g = (y - KR * r - KB * b) / KG
    out = np.empty((h, w, 4), np.uint8)
    for i, c in enumerate((r, g, b)):
        out[..., i] = np.clip(np.rint(c * 255.0), 0, 255)
    out[..., 3] = alpha
    return out
