"""Control-to-output latency, measured end to end (torch-free: the relay side uses it too).

The control FrameHistory stamps every frame with the time it was read from its source
(FrameWindow.arrived, time.monotonic()). The run loop hands each chunk's output frames to
`register` with the stamps of the control frames that conditioned them (output frame j of a
chunk <- control frame j of its window: a chunk of F frames is conditioned by F control frames).
The pacer's sink tap calls `sent(frame)` right after the sink took a frame; the first send of a
registered frame records now - arrival. Held frames re-sent on an underrun, padding and stills
(no stamp) are not counted. p50/p99 over the last `window` frames.
"""
from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict, deque
from typing import Any, Callable, Sequence


class LatencyTracker:
    def __init__(self, window: int = 1024, max_pending: int = 512,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.max_pending = max_pending
        self._pending: OrderedDict[int, tuple[Any, float]] = OrderedDict()
        self._ms: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def register(self, frames: Sequence[Any], arrived: Sequence[float | None]) -> int:
        """Remember the control arrival time of each output frame (same order); returns how many
        were registered (0 when the counts differ: no frame-to-frame correspondence)."""
        if len(frames) != len(arrived):
            return 0
        n = 0
        with self._lock:
            for frame, t in zip(frames, arrived):
                if t is None:
                    continue
                try:
                    ref = weakref.ref(frame)
                except TypeError:  # an object without weak references: identity only
                    ref = (lambda f=frame: f)
                self._pending[id(frame)] = (ref, float(t))
                n += 1
            while len(self._pending) > self.max_pending:  # frames the pacer dropped never arrive
                self._pending.popitem(last=False)
        return n

    def sent(self, frame: Any) -> None:
        """The sink has just taken `frame` (a pacer tap listener)."""
        now = self.clock()
        with self._lock:
            entry = self._pending.pop(id(frame), None)
            if entry is None:
                return
            ref, t = entry
            if ref() is not frame:  # the id was reused by another object
                return
            self._ms.append((now - t) * 1e3)
            self.count += 1

    def percentiles(self) -> dict[str, float]:
        """{"p50_ms", "p99_ms", "frames"} over the window (0.0 before any measured frame)."""
        with self._lock:
            values = sorted(self._ms)
        if not values:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "frames": 0}

        def pct(q: float) -> float:
            return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

        return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "frames": len(values)}

    def values_ms(self) -> list[float]:
        with self._lock:
            return list(self._ms)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._ms.clear()
