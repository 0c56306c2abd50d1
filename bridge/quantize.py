"""Quantised changes: a prompt cut, a preset recall or morph, a reference swap armed to *appear*
on the next beat, bar or N bars, and lengths given in beats.

Why "appear": a change taken at a chunk boundary reaches the screen much later. The chunk
generated now is shown only after the frames already waiting in the pacer and after the
generation itself:

    first_frame_time(boundary t0) = t0 + max(L, B / fps) + offset

* L: the generation latency of a chunk (the run loop's recent chunk times, request to frames);
* B: frames buffered in the pacer at the boundary, which play out at the output rate fps first;
  if the chunk takes longer than they last (L > B / fps), the pacer holds and the chunk's first
  frame goes out as soon as it arrives;
* offset: a constant the performer sets (`beat_offset_ms`) for what happens after our output
  (NDI/Spout transport, a projector's processing): positive shows changes later.

Chunks follow each other every P = F / fps seconds of output (F frames a chunk), so the chunk
after this one shows its first frame P later. An armed change for target time T is applied at the
first boundary whose chunk's first frame is *nearest* T:

    apply now  iff  first_frame_time(t0) + P / 2 >= T

(the next chunk would land at least as far past T as this one lands before it), and at once if T
has already passed. docs/tempo.md walks through a worked example.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from vacelive.bridge.tempo import BeatClock

QUANTA = ("none", "beat", "bar", "2bars", "4bars", "8bars")
_LEN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(beats?|bars?|chunks?|b)?\s*$", re.I)
_Q = re.compile(r"^\s*(\d+)?\s*(beats?|bars?)\s*$", re.I)


def parse_quantum(text: str | float | int, quantum: float = 4.0) -> float:
    """Grid size in beats: "none"/"now"/0 -> 0, "beat" -> 1, "bar" -> quantum, "4bars" -> 4 *
    quantum, "2beats" -> 2, a number -> that many beats."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = text.strip().lower()
        if t in ("none", "now", "off", "", "0"):
            return 0.0
        m = _Q.match(t)
        if m:
            n = float(m.group(1) or 1)
            value = n * (quantum if m.group(2).startswith("bar") else 1.0)
        else:
            try:
                value = float(t)
            except ValueError:
                raise ValueError(f"quantize {text!r}: use none, beat, bar, 2bars, 4bars, 8bars, "
                                 "Nbeats, Nbars or a number of beats") from None
    if not math.isfinite(value) or value < 0 or value > 64 * quantum:
        raise ValueError(f"quantize {text!r}: 0..{64 * quantum:g} beats")
    return value


def parse_length(text: str | float | int, quantum: float = 4.0) -> tuple[float, str]:
    """A morph/transition length: a plain number is chunks; "8beats", "2bars", "3chunks".
    Returns (amount, unit) with unit "beats" or "chunks" (bars become beats)."""
    if isinstance(text, (int, float)):
        return float(text), "chunks"
    m = _LEN.match(text)
    if not m:
        raise ValueError(f"length {text!r}: a number of chunks, or Nbeats / Nbars")
    n = float(m.group(1))
    unit = (m.group(2) or "chunks").lower()
    if unit.startswith("bar"):
        return n * quantum, "beats"
    if unit.startswith("b"):
        return n, "beats"
    return n, "chunks"


def beats_to_chunks(beats: float, bpm: float, fps: float, chunk_frames: int) -> int:
    """Chunks whose output lasts `beats` at this tempo and output rate (at least 1 when beats >
    0): a chunk shows chunk_frames / fps seconds, a beat lasts 60 / bpm seconds."""
    if beats <= 0:
        return 0
    seconds = beats * 60.0 / bpm
    return max(1, int(math.floor(seconds * fps / chunk_frames + 0.5)))


def next_grid_beat(beat_now: float, grid: float) -> float:
    """The next multiple of `grid` strictly after beat_now (grid 0: now)."""
    if grid <= 0:
        return beat_now
    return (math.floor(beat_now / grid + 1e-9) + 1.0) * grid


@dataclass
class Armed:
    """A change waiting for its beat: `apply()` runs on the run-loop thread at the boundary
    chosen (it writes the store, so the change is in that chunk's snapshot)."""

    target_beat: float
    label: str
    apply: Callable[[], Any]
    armed_at: float = 0.0


@dataclass
class Timing:
    """What the run loop knows at a chunk boundary."""

    now: float  # the boundary time (time.monotonic())
    latency: float  # L: expected generation time of this chunk, seconds
    buffered: int  # B: frames waiting in the pacer
    fps: float  # output frame rate
    chunk_frames: int  # F
    offset: float = 0.0  # performer's output offset, seconds

    def first_frame_time(self) -> float:
        return self.now + max(self.latency, self.buffered / self.fps) + self.offset

    @property
    def chunk_period(self) -> float:
        return self.chunk_frames / self.fps


@dataclass
class Quantizer:
    clock: BeatClock
    pending: list[Armed] = field(default_factory=list)
    fired: list[tuple[str, float, float]] = field(default_factory=list)  # (label, target, shown)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def arm(self, grid_beats: float, label: str, apply: Callable[[], Any],
            at: float | None = None, lead: float = 0.0) -> float:
        """Arm a change for the next grid line (in beats) after time `at` + `lead` seconds;
        returns the target beat. grid 0 arms it for the next boundary."""
        import time

        at = time.monotonic() if at is None else at
        beat = self.clock.beat_at(at + lead)
        target = next_grid_beat(beat, grid_beats) if grid_beats > 0 else beat
        with self._lock:
            self.pending.append(Armed(target, label, apply, at))
        return target

    def cancel(self) -> int:
        with self._lock:
            n, self.pending = len(self.pending), []
        return n

    def due(self, timing: Timing) -> list[Armed]:
        """The armed changes this boundary must apply (see the module docstring)."""
        shown = timing.first_frame_time()
        half = timing.chunk_period / 2.0
        out, keep = [], []
        with self._lock:
            for a in self.pending:
                target_time = self.clock.time_at_beat(a.target_beat)
                (out if shown + half >= target_time else keep).append(a)
            self.pending = keep
        for a in out:
            self.fired.append((a.label, a.target_beat, self.clock.beat_at(shown)))
        del self.fired[:-64]
        return out
