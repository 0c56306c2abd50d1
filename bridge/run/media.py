"""Image and clip files for the run loop: reference images, extension anchors, snapshot PNGs.

Files are named by the performer over OSC, so every failure becomes a MediaError whose message
names the file and what is wrong with it; the run loop reports it and carries on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CLIP_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}
MAX_CLIP_FRAMES = 49  # an extension clip conditions a few chunks; more frames only cost memory
MAX_PIXELS = 4096 * 4096


class MediaError(ValueError):
    """A file that cannot be used; str() is shown to the performer."""


def _path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not str(path).strip():
        raise MediaError("empty file path")
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if not p.is_file():
        raise MediaError(f"{p}: not a file")
    return p


def load_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGBA [H, W, 4] (top row first)."""
    from PIL import Image, UnidentifiedImageError

    p = _path(path)
    try:
        with Image.open(p) as im:
            if im.width * im.height > MAX_PIXELS:
                raise MediaError(f"{p}: {im.width}x{im.height} is too large (max {MAX_PIXELS} pixels)")
            return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{p}: cannot read as an image ({exc})") from None


def load_clip(path: str | Path, max_frames: int = MAX_CLIP_FRAMES) -> np.ndarray:
    """The first `max_frames` frames of a video file as uint8 RGBA [F, H, W, 4]."""
    import av

    p = _path(path)
    frames = []
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise MediaError(f"{p}: has no video stream")
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgba"))
                if len(frames) >= max_frames:
                    break
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{p}: cannot read as a video ({exc})") from None
    if not frames:
        raise MediaError(f"{p}: no frames could be decoded")
    return np.stack(frames)


def load_anchor(path: str | Path, clip: bool, side: str = "first") -> np.ndarray:
    """An extension anchor: an image [H,W,4], or for clip modes a clip [F,H,W,4] (a still image
    given for a clip mode is a one-frame clip; a video given for a frame mode gives its first
    frame as the first anchor, its last frame as the last anchor)."""
    if Path(path).suffix.lower() in CLIP_SUFFIXES:
        frames = load_clip(path)
        return frames if clip else frames[0 if side == "first" else -1]
    image = load_image(path)
    return image[None] if clip else image


def to_numpy_rgba(frame: Any) -> np.ndarray:
    """A numpy or torch (any device) uint8 [H,W,4] frame as a host numpy array."""
    if not isinstance(frame, np.ndarray):
        frame = frame.detach().cpu().numpy()
    return np.ascontiguousarray(frame)


def write_png(frame: Any, path: str | Path) -> Path:
    """Write an RGBA frame as PNG (atomically: a reader never sees half a file)."""
    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    Image.fromarray(to_numpy_rgba(frame), "RGBA").save(tmp, format="PNG")
    tmp.replace(p)
    return p
