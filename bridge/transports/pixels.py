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


def rgba_to_uyvy(frame: np.ndarray) -> np.ndarray:
    """[H,W,4] uint8 RGBA (alpha ignored) -> [H,W,2] uint8 UYVY, BT.709 limited range.
    The pair's chroma is the mean of its two pixels' chroma."""
    h, w = frame.shape[:2]
    if w % 2:
        raise ValueError(f"UYVY needs an even width, got {w}")
    rgb = frame[..., :3].astype(np.float32) * (1.0 / 255.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = KR * r + KG * g + KB * b
    cb = (b - y) / (2.0 * (1.0 - KB))
    cr = (r - y) / (2.0 * (1.0 - KR))
    cb = 0.5 * (cb[:, 0::2] + cb[:, 1::2])
    cr = 0.5 * (cr[:, 0::2] + cr[:, 1::2])
    out = np.empty((h, w, 2), np.uint8)
    out[:, :, 1] = np.clip(np.rint(16.0 + 219.0 * y), 0, 255)
    out[:, 0::2, 0] = np.clip(np.rint(128.0 + 224.0 * cb), 0, 255)
    out[:, 1::2, 0] = np.clip(np.rint(128.0 + 224.0 * cr), 0, 255)
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
