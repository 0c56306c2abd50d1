"""argparse value types with ranges, shared by the flags and the TOML config file (which feeds
its values through the same flags, so a bad value fails the same way in both)."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def ranged(kind: type, lo: float, hi: float) -> Callable[[str], float]:
    """int or float within lo..hi; ArgumentTypeError names the range (never clamped)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is outside {lo:g}..{hi:g}")
        return value

    parse.__name__ = kind.__name__  # argparse's "invalid int value" wording for other errors
    return parse


def size_px(text: str) -> int:
    """A generation width or height: a positive multiple of 16."""
    value = ranged(int, 16, 8192)(text)
    if value % 16:
        raise argparse.ArgumentTypeError(f"{value} is not a multiple of 16 "
                                         f"(nearest: {max(16, round(value / 16) * 16)})")
    return value


def pipeline_name(text: str) -> str:
    """A registered pipeline recipe (engine.pipelines, case and '_' forgiven) -> its canonical name;
    ArgumentTypeError lists the pipelines otherwise."""
    from vacelive.engine.pipelines import get_recipe  # plain data, no torch

    try:
        return get_recipe(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
