"""Beat clocks: where the beat is at any moment. An internal clock (fixed tempo, tap tempo) or an
Ableton Link session (LinkPython-extern), behind one interface, on the host's monotonic clock.

Times are `time.monotonic()` seconds. Beats count from an arbitrary origin; a bar is `quantum`
beats (4 by default, Link's usual quantum) and bar lines fall where `beat % quantum == 0`, which
for Link is the phase every peer of the session agrees on.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

MIN_BPM, MAX_BPM = 20.0, 999.0  # Link's own tempo range


def clamp_bpm(bpm: float) -> float:
    if not math.isfinite(bpm):
        raise ValueError(f"tempo {bpm!r} is not a number")
    return min(max(float(bpm), MIN_BPM), MAX_BPM)


class BeatClock:
    """The interface the quantiser uses."""

    quantum: float = 4.0

    @property
    def tempo(self) -> float:
        raise NotImplementedError

    def set_tempo(self, bpm: float, at: float | None = None) -> None:
        raise NotImplementedError

    def beat_at(self, t: float) -> float:
        raise NotImplementedError

    def time_at_beat(self, beat: float) -> float:
        raise NotImplementedError

    def phase_at(self, t: float) -> float:
        """Position inside the bar, 0 <= phase < quantum."""
        return self.beat_at(t) % self.quantum

    @property
    def peers(self) -> int:
        return 0

    @property
    def source(self) -> str:
        return "internal"

    def close(self) -> None:  # noqa: B027
        pass


class InternalClock(BeatClock):
    """A fixed tempo from an origin; tempo changes keep the beat continuous; tap tempo."""

    def __init__(self, bpm: float = 120.0, quantum: float = 4.0, origin: float | None = None,
                 now: Callable[[], float] = time.monotonic, tap_window: int = 8,
                 tap_timeout: float = 2.0) -> None:
        self._now = now
        self.quantum = float(quantum)
        self._bpm = clamp_bpm(bpm)
        self._t0 = now() if origin is None else origin  # time of beat 0 ...
        self._b0 = 0.0  # ... or of beat _b0 after a tempo change
        self._taps: list[float] = []
        self.tap_window, self.tap_timeout = tap_window, tap_timeout
        self._lock = threading.Lock()

    @property
    def tempo(self) -> float:
        return self._bpm

    def set_tempo(self, bpm: float, at: float | None = None) -> None:
        at = self._now() if at is None else at
        with self._lock:
            beat = self._b0 + (at - self._t0) * self._bpm / 60.0
            self._t0, self._b0, self._bpm = at, beat, clamp_bpm(bpm)

    def beat_at(self, t: float) -> float:
        return self._b0 + (t - self._t0) * self._bpm / 60.0

    def time_at_beat(self, beat: float) -> float:
        return self._t0 + (beat - self._b0) * 60.0 / self._bpm

    def continue_from(self, beat: float, at: float) -> None:
        """Carry on from `beat` at time `at` (e.g. where a Link session was when it was left)."""
        with self._lock:
            self._t0, self._b0 = at, float(beat)

    def tap(self, at: float | None = None) -> float | None:
        """One tap: after two or more taps (each within tap_timeout of the previous) the tempo
        is their mean interval and the tap lands on a beat. Returns the new tempo or None."""
        at = self._now() if at is None else at
        if self._taps and at - self._taps[-1] > self.tap_timeout:
            self._taps = []
        self._taps = (self._taps + [at])[-self.tap_window:]
        if len(self._taps) < 2:
            return None
        interval = (self._taps[-1] - self._taps[0]) / (len(self._taps) - 1)
        bpm = clamp_bpm(60.0 / interval)
        with self._lock:
            # the tap is a downbeat of a beat: keep the bar count, snap the phase
            beat = round(self._b0 + (at - self._t0) * self._bpm / 60.0)
            self._t0, self._b0, self._bpm = at, float(beat), bpm
        return bpm


class LinkClock(BeatClock):
    """An Ableton Link session through LinkPython-extern (`import link`). Link's clock is the
    host's steady clock in microseconds (std::chrono::steady_clock: CLOCK_MONOTONIC on Linux,
    mach_absolute_time on macOS, QueryPerformanceCounter on Windows); the offset to
    time.monotonic() is sampled at each call so the two time bases never drift apart."""

    def __init__(self, bpm: float = 120.0, quantum: float = 4.0, module: Any = None) -> None:
        if module is None:
            try:
                import link as module
            except ImportError as exc:
                from vacelive.bridge.transports.base import TransportUnavailable

                raise TransportUnavailable(f"Ableton Link needs LinkPython-extern ({exc}): "
                                           "pip install LinkPython-extern") from exc
        self.quantum = float(quantum)
        self._link = module.Link(clamp_bpm(bpm))
        self._link.enabled = True
        self._clock = self._link.clock()

    def _offset_s(self) -> float:
        return self._clock.micros() / 1e6 - time.monotonic()

    def _micros(self, t: float) -> int:
        return int(round((t + self._offset_s()) * 1e6))

    @property
    def tempo(self) -> float:
        return float(self._link.captureSessionState().tempo())

    def set_tempo(self, bpm: float, at: float | None = None) -> None:
        state = self._link.captureAppSessionState()
        state.setTempo(clamp_bpm(bpm), self._micros(time.monotonic() if at is None else at))
        self._link.commitAppSessionState(state)

    def beat_at(self, t: float) -> float:
        return float(self._link.captureSessionState().beatAtTime(self._micros(t), self.quantum))

    def time_at_beat(self, beat: float) -> float:
        micros = self._link.captureSessionState().timeAtBeat(beat, self.quantum)
        return micros / 1e6 - self._offset_s()

    @property
    def peers(self) -> int:
        return int(self._link.numPeers())

    @property
    def source(self) -> str:
        return "link"

    def close(self) -> None:
        self._link.enabled = False
