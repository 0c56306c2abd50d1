"""Layout boxes over OSC: `/vace/layout/box id x y w h`, `/vace/layout/remove id`,
`/vace/layout/clear` edit the `layout_boxes` parameter (one "id x y w h" string per box, so the
boxes are echoed, stored in presets and morph-free like any parameter); the run loop hands them to
the engine as `ChunkRequest.layout`, where the layout annotator draws them
(engine.conditioning.layout). Coordinates: top-left corner and size, fractions 0-1 of the frame.
Torch-free (relay side).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from vacelive.bridge.param_types import PREFIX, ParamError

MAX_BOXES = 16


def _number(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParamError(f"{PREFIX}/layout/box: {what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ParamError(f"{PREFIX}/layout/box: {what} must be finite")
    return v


def parse_entry(entry: str) -> tuple[str, tuple[float, float, float, float]] | None:
    """'id x y w h' -> (id, (x, y, w, h)); None if malformed (a hand-edited preset, say)."""
    parts = str(entry).split()
    if len(parts) != 5:
        return None
    try:
        x, y, w, h = (float(p) for p in parts[1:])
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    return parts[0], (x, y, w, h)


def boxes(entries: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    out = {}
    for e in entries:
        parsed = parse_entry(e)
        if parsed is not None:
            out[parsed[0]] = parsed[1]
    return out


def request_layout(entries: Sequence[str]) -> dict[str, tuple[float, float, float, float]] | None:
    """ChunkRequest.layout from the parameter value (None: no boxes)."""
    return boxes(entries) or None


def _entry(box_id: str, x: float, y: float, w: float, h: float) -> str:
    return f"{box_id} {x:.6g} {y:.6g} {w:.6g} {h:.6g}"


def with_box(entries: Sequence[str], args: Sequence[Any]) -> tuple[str, ...]:
    """The value after `/vace/layout/box id x y w h`: the box is added, or moved if it exists
    (keeping its place in the list)."""
    if len(args) != 5:
        raise ParamError(f"{PREFIX}/layout/box: expects id x y w h (5 arguments), got {len(args)}")
    box_id = str(args[0]).strip()
    if not box_id or any(c.isspace() for c in box_id):
        raise ParamError(f"{PREFIX}/layout/box: the id must be one word, got {args[0]!r}")
    x, y, w, h = (_number(v, n) for v, n in zip(args[1:], ("x", "y", "w", "h")))
    if w <= 0 or h <= 0:
        raise ParamError(f"{PREFIX}/layout/box: width and height must be above 0")
    new = _entry(box_id, x, y, w, h)
    out, placed = [], False
    for e in entries:
        parsed = parse_entry(e)
        if parsed is not None and parsed[0] == box_id:
            out.append(new)
            placed = True
        else:
            out.append(e)
    if not placed:
        if len(out) >= MAX_BOXES:
            raise ParamError(f"{PREFIX}/layout/box: at most {MAX_BOXES} boxes; remove one first")
        out.append(new)
    return tuple(out)


def without_box(entries: Sequence[str], args: Sequence[Any]) -> tuple[str, ...]:
    """The value after `/vace/layout/remove id` (an unknown id is an error, so typos show)."""
    if len(args) != 1:
        raise ParamError(f"{PREFIX}/layout/remove: expects one box id")
    box_id = str(args[0]).strip()
    out = tuple(e for e in entries if (parse_entry(e) or ("",))[0] != box_id)
    if len(out) == len(entries):
        raise ParamError(f"{PREFIX}/layout/remove: no box {box_id!r}")
    return out
