"""Preset morphs: a move from the current live values to a preset's over N chunk boundaries.

Numbers interpolate, weighted prompt lists cross-fade, discrete values switch at the midpoint.
The parameter store steps a running morph once per snapshot (so each chunk sees one step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from vacelive.bridge.param_types import Param, Prompts, Schema, dominant_text


def blend_prompts(a: Prompts, b: Prompts, t: float, max_items: int = 8) -> Prompts:
    """Weighted prompt list moving from `a` (t=0) to `b` (t=1): old weights fade by (1-t), new
    weights grow by t; the same text in both keeps the sum. Capped at max_items by weight."""
    if t <= 0:
        return a
    if t >= 1:
        return b
    merged: dict[str, float] = {}
    for text, w in a:
        merged[text] = merged.get(text, 0.0) + w * (1.0 - t)
    for text, w in b:
        merged[text] = merged.get(text, 0.0) + w * t
    items = [(text, w) for text, w in merged.items() if w > 0]
    if len(items) > max_items:
        keep = set(sorted(items, key=lambda tw: -tw[1])[:max_items])
        items = [tw for tw in items if tw in keep]
    return tuple(items)


def morph_value(p: Param, start: Any, goal: Any, t: float) -> Any:
    """The value of `p` at fraction t of a morph: numbers interpolate, prompts blend, discrete
    values switch at the midpoint."""
    if p.morph == "lerp":
        return p.coerce(start + (goal - start) * t)
    if p.morph == "prompts":
        return blend_prompts(start, goal, t, p.max_items or 8)
    return goal if t >= 0.5 else start


@dataclass
class Morph:
    name: str
    steps: int
    target: dict[str, Any]
    start: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def advance(self, schema: Schema, values: Mapping[str, Any]) -> dict[str, Any]:
        """One step: the values that move (relative to `values`, the current ones)."""
        self.step += 1
        t = self.step / self.steps
        moved = {}
        for name, goal in self.target.items():
            p = schema[name]
            if p.alias_of:  # derived from its target below
                continue
            value = morph_value(p, self.start[name], goal, t)
            if value != values[name]:
                moved[name] = value
        if "prompts" in moved:
            moved["prompt"] = dominant_text(moved["prompts"])
        return moved
