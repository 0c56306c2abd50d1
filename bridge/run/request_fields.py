"""Engine request assembly from one parameter snapshot: the part that needs no file or frame I/O.

Fields named like a live parameter are copied as-is (no translation table); prompts,
lora_scales, outpaint and reset are assembled here. The run loop adds video, mask, refs and
extension (they need frame histories, files and per-stream state) and reads pause and output_fps
itself. A new request field that is a plain parameter of the same name needs no code here; one
that is built from several parameters gets one line in `request_fields()`.
"""
from __future__ import annotations

from dataclasses import fields
from functools import lru_cache
from typing import Any

from vacelive.bridge.layout import request_layout
from vacelive.bridge.schema import DEFAULT_SCHEMA
from vacelive.bridge.store import Snapshot
from vacelive.engine.request import ChunkRequest, Outpaint, Prompt

OUTPAINT_SIDES = {
    "none": (), "left": ("left",), "right": ("right",), "top": ("top",), "bottom": ("bottom",),
    "horizontal": ("left", "right"), "vertical": ("top", "bottom"),
    "all": ("left", "right", "top", "bottom"),
}


@lru_cache(maxsize=1)
def direct_fields() -> frozenset[str]:
    """ChunkRequest fields that are plain parameters of the same name (scalars and enums)."""
    plain = {p.name for p in DEFAULT_SCHEMA.live if p.type in ("float", "int", "bool", "enum")}
    return frozenset(f.name for f in fields(ChunkRequest)) & plain


def outpaint(direction: str, ratio: float) -> Outpaint | None:
    sides = OUTPAINT_SIDES[direction]
    return Outpaint(**{s: ratio for s in sides}) if sides and ratio > 0 else None


def request_fields(snap: Snapshot) -> dict[str, Any]:
    """Keyword arguments for ChunkRequest from `snap` (see module docstring)."""
    v = snap.values
    out: dict[str, Any] = {name: v[name] for name in direct_fields() if name in v}
    out["prompts"] = [Prompt(text, weight) for text, weight in v["prompts"]]
    out["lora_scales"] = {n[5:]: s for n, s in v.items() if n.startswith("lora/")}
    out["outpaint"] = outpaint(v["outpaint_direction"], v["outpaint_ratio"])
    out["reset"] = snap.action("reset") is not None
    out["layout"] = request_layout(v["layout_boxes"])
    return out
