"""Layout annotator: VACE's layout maps from boxes given live (OSC) or by a detector plug-in.

VACE's `LayoutBboxAnnotator` draws each box as a 2-pixel outline (cv2.rectangle, thickness 2) in
the box colour (black by default; VACE colours boxes by RAM tag only when given its tag colour
file) on a white frame, and moves a box linearly from its start to its end position: frame i of
n is start + (end - start) * i / n. In a stream the start is where the box was asked to be for
the previous chunk and the end is where it is asked to be now, so boxes glide between chunks
without a jump and arrive exactly at the start of the next chunk. A box that appears is drawn at
once where it was put; a removed box disappears.

Boxes are normalised (x, y, w, h): top-left corner and size as fractions of the frame.

Detector hook: `set_layout_detector(fn)` with fn(frames [F, 3, H, W] in 0..1) -> one
{id: (x, y, w, h)} per frame makes the layout annotator track boxes in the incoming video (it
runs on the annotator thread); without one, boxes come from `/vace/layout/box`.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch

Box = tuple[float, float, float, float]
Detector = Callable[[torch.Tensor], Sequence[Mapping[str, Box]]]

THICKNESS = 2
BACKGROUND = 1.0  # white
BOX_COLOR = (0.0, 0.0, 0.0)  # black

_detector: Detector | None = None


def set_layout_detector(fn: Detector | None) -> None:
    """Register (or remove, with None) the detector that tracks boxes in the input video."""
    global _detector
    _detector = fn


def layout_detector() -> Detector | None:
    return _detector


def clean_boxes(boxes: Mapping[str, Sequence[float]] | None, notes: list[str] | None = None) -> dict[str, Box]:
    """Valid boxes only: four finite numbers, positive size (anything else dropped with a notice)."""
    out: dict[str, Box] = {}
    for key, b in (boxes or {}).items():
        try:
            x, y, w, h = (float(v) for v in b)
        except (TypeError, ValueError):
            if notes is not None:
                notes.append(f"Layout box {key!r} is not four numbers (x y w h); ignored.")
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            if notes is not None:
                notes.append(f"Layout box {key!r} needs finite x y and a positive width and height; ignored.")
            continue
        out[str(key)] = (x, y, w, h)
    return out


def draw(frame: torch.Tensor, box: Box, color: Sequence[float] = BOX_COLOR, thickness: int = THICKNESS) -> None:
    """Outline a normalised box on frame [3, H, W] in place (clipped to the frame)."""
    H, W = frame.shape[-2:]
    x, y, w, h = box
    x0, y0 = int(x * W), int(y * H)  # VACE: box.astype(int), then rectangle((x, y), (x + w, y + h))
    x1, y1 = x0 + int(w * W), y0 + int(h * H)
    c = torch.tensor(color, dtype=frame.dtype, device=frame.device).view(3, 1, 1)
    half = thickness // 2
    # the four sides as filled strips `thickness` wide, centred on the box edge like cv2's lines
    for ya, yb, xa, xb in ((y0 - half, y0 - half + thickness, x0 - half, x1 - half + thickness),
                           (y1 - half, y1 - half + thickness, x0 - half, x1 - half + thickness),
                           (y0 - half, y1 - half + thickness, x0 - half, x0 - half + thickness),
                           (y0 - half, y1 - half + thickness, x1 - half, x1 - half + thickness)):
        ya, yb, xa, xb = max(0, ya), min(H, yb), max(0, xa), min(W, xb)
        if ya < yb and xa < xb:
            frame[:, ya:yb, xa:xb] = c


def render(boxes_per_frame: Sequence[Mapping[str, Box]], height: int, width: int,
           device: torch.device | str = "cpu") -> torch.Tensor:
    """One layout map per entry: [F, 3, H, W] in 0..1, white with the boxes outlined."""
    out = torch.full((len(boxes_per_frame), 3, height, width), BACKGROUND, device=device)
    for i, boxes in enumerate(boxes_per_frame):
        for key in sorted(boxes):
            draw(out[i], boxes[key])
    return out


class LayoutTrack:
    """Boxes of a stream: each chunk moves every box from where it was asked to be for the
    previous chunk to where it is asked to be now (module doc)."""

    def __init__(self) -> None:
        self.previous: dict[str, Box] = {}

    def reset(self) -> None:
        self.previous = {}

    def frames(self, boxes: Mapping[str, Box], n: int) -> list[dict[str, Box]]:
        """The boxes of each of the chunk's n frames; remembers `boxes` as the next start."""
        start = self.previous
        out = []
        for i in range(n):
            t = i / n
            frame = {}
            for key, end in boxes.items():
                s = start.get(key, end)
                frame[key] = tuple(a + (b - a) * t for a, b in zip(s, end))
            out.append(frame)
        self.previous = dict(boxes)
        return out

    def __call__(self, boxes: Mapping[str, Box], n: int, height: int, width: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        return render(self.frames(boxes, n), height, width, device)


def detect_and_render(frames: torch.Tensor, detector: Detector) -> torch.Tensor:
    """The detector's boxes of each frame drawn at the frames' size (the tracked layout)."""
    per_frame = list(detector(frames))
    if len(per_frame) != frames.shape[0]:
        raise RuntimeError(f"Layout detector returned {len(per_frame)} box sets for {frames.shape[0]} frames.")
    return render([clean_boxes(b) for b in per_frame], frames.shape[-2], frames.shape[-1], frames.device)
