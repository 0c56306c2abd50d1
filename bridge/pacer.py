"""Frame pacer: turns 12-frame chunk bursts into a steady stream of single frames.

The generator delivers a whole chunk (12 frames) every few hundred milliseconds. Pushed straight
into a "latest texture" protocol such as Spout or Syphon, a receiver would mostly see the last
frame of each burst. The pacer buffers chunks and emits one frame per tick on its own thread:

* rate: a fixed `target_fps`, or (target_fps=None) the measured generation rate, an EMA of the
  frames/s of chunk arrivals. In measured mode a gentle servo (±`max_correction`) nudges the rate
  so the frames left in the buffer when a chunk arrives stay near `headroom`: without it any bias
  in the estimate slowly walks the buffer into underruns or overruns.
* underrun (buffer empty at a tick): the last frame is held (re-sent when `resend_held`) and
  counted in `repeated`.
* overrun (more than `capacity` frames buffered): the oldest frames are dropped and counted.
* jitter: |actual inter-frame interval - intended interval|, p50/p99 over a rolling window.
* ticks are scheduled on an absolute timeline (next_due += interval), so sleep overshoot does not
  accumulate; after a stall longer than `max_lateness` the timeline re-anchors instead of
  bursting to catch up.
* the GIL: a thread that wakes from sleep waits for the interpreter lock until the running thread
  releases it or the switch interval (`sys.setswitchinterval`, 5 ms by default) forces a switch.
  The generator thread holds it while it launches kernels, so at 5 ms every tick could be up to
  5 ms late. While a pacer runs, the process's switch interval is at most `gil_switch_interval`
  (0.5 ms); the previous value comes back when the last pacer stops.

`clock` and `sleep` are injectable; ManualClock below makes tests deterministic.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PacerStats:
    mode: str  # "fixed" or "measured"
    fps_out: float  # the rate ticks are scheduled at right now
    fps_generation: float | None  # EMA of the measured chunk-arrival rate (None before 2 chunks)
    emitted: int  # ticks that sent a frame (new or held)
    repeated: int  # ticks on underrun (the held frame)
    dropped: int  # frames dropped on overrun, oldest first
    buffered: int
    jitter_p50_ms: float
    jitter_p99_ms: float
    reanchors: int  # timeline resets after a stall longer than max_lateness
    sink_errors: int


class Pacer:
    def __init__(
        self,
        sink: Any,
        target_fps: float | None = None,
        *,
        capacity: int = 36,
        initial_fps: float = 24.0,
        ema_alpha: float = 0.3,
        min_fps: float = 1.0,
        max_fps: float = 120.0,
        headroom: float = 3.0,
        max_correction: float = 0.08,
        resend_held: bool = True,
        stall_factor: float = 4.0,
        max_lateness: float = 0.1,
        idle_poll: float = 0.005,
        jitter_window: int = 1024,
        gil_switch_interval: float | None = 0.0005,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        start: bool = True,
    ) -> None:
        """sink: a FrameSink (its .send is called) or any callable taking one frame."""
        self._send = sink.send if hasattr(sink, "send") else sink
        self.target_fps = target_fps
        self.capacity = capacity
        self.initial_fps = initial_fps
        self.ema_alpha = ema_alpha
        self.min_fps, self.max_fps = min_fps, max_fps
        self.headroom = headroom
        self.max_correction = max_correction
        self.resend_held = resend_held
        self.stall_factor = stall_factor
        self.max_lateness = max_lateness
        self.idle_poll = idle_poll
        self.gil_switch_interval = gil_switch_interval
        self._clock, self._sleep = clock, sleep

        self._lock = threading.Lock()
        self._buffer: deque[Any] = deque()
        self._held: Any = None
        self._ema: float | None = None
        self._leftover: float | None = None  # smoothed frames left in the buffer at chunk arrival
        self._chunk = 12
        self._last_push: float | None = None
        self._next_due: float | None = None
        self._last_emit: float | None = None
        self._last_interval: float | None = None
        self._errors: deque[float] = deque(maxlen=jitter_window)
        self._emitted = self._repeated = self._dropped = self._reanchors = self._sink_errors = 0
        self._last_sink_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- producer side ---------------------------------------------------------------------------
    def push(self, frames: Any) -> None:
        """Queue one chunk: an array/tensor [F,H,W,4] or a sequence of [H,W,4] frames, oldest
        first. Frames are kept by reference (no copy); the producer must not reuse them."""
        items: Sequence[Any] = [frames[i] for i in range(len(frames))]
        if not items:
            return
        now = self._clock()
        with self._lock:
            self._measure(len(items), now)
            self._buffer.extend(items)
            overflow = len(self._buffer) - self.capacity
            for _ in range(max(0, overflow)):
                self._buffer.popleft()
            if overflow > 0:
                self._dropped += overflow

    def _measure(self, n: int, now: float) -> None:
        # frames left over when this chunk arrives: the servo's input
        left = float(len(self._buffer))
        self._leftover = left if self._leftover is None else self._leftover + 0.3 * (left - self._leftover)
        self._chunk = n
        if self._last_push is not None:
            dt = now - self._last_push
            expected = n / self._ema if self._ema else None
            if dt > 0 and not (expected and dt > self.stall_factor * expected):
                inst = min(max(n / dt, self.min_fps), self.max_fps)
                self._ema = inst if self._ema is None else self._ema + self.ema_alpha * (inst - self._ema)
        self._last_push = now

    def set_target_fps(self, fps: float | None) -> None:
        """A fixed output rate, or None to follow the measured generation rate."""
        with self._lock:
            self.target_fps = fps

    # -- output side -------------------------------------------------------------------------------
    def _fps(self) -> float:
        if self.target_fps:
            return float(self.target_fps)
        if self._ema is None:
            return self.initial_fps
        correction = 0.0
        if self._leftover is not None and self._chunk:
            correction = 0.5 * (self._leftover - self.headroom) / self._chunk
            correction = min(max(correction, -self.max_correction), self.max_correction)
        return min(max(self._ema * (1.0 + correction), self.min_fps), self.max_fps)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            _SwitchInterval.acquire(self.gil_switch_interval)
            self._thread = threading.Thread(target=self._run, name="pacer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.tick()
            if wait > 0:
                self._sleep(wait)

    def tick(self) -> float:
        """Emit the frame due now, if any; return seconds until the next tick (the thread's loop)."""
        now = self._clock()
        with self._lock:
            if self._next_due is None:
                if not self._buffer:
                    return self.idle_poll  # nothing ever arrived (or after a reset): idle
                self._next_due = now
            if now < self._next_due:
                return self._next_due - now
            interval = 1.0 / self._fps()
            if self._buffer:
                frame = self._buffer.popleft()
                self._held = frame
            else:
                frame = self._held if self.resend_held else None
                self._repeated += 1
            if now - self._next_due > self.max_lateness:
                self._next_due = now  # stalled: re-anchor instead of bursting to catch up
                self._reanchors += 1
                self._last_emit = None
            self._next_due += interval
            if self._last_emit is not None and self._last_interval is not None:
                self._errors.append(abs((now - self._last_emit) - self._last_interval))
            self._last_emit, self._last_interval = now, interval
            wait = self._next_due - now
        if frame is not None:
            try:
                self._send(frame)
                self._emitted += 1
            except Exception as exc:  # a sink failure never stops the clock
                self._sink_errors += 1
                msg = f"{type(exc).__name__}: {exc}"
                if msg != self._last_sink_error:
                    log.warning("pacer sink failed: %s", msg)
                    self._last_sink_error = msg
        return max(0.0, wait)

    @property
    def stats(self) -> PacerStats:
        with self._lock:
            errs = np.asarray(self._errors, dtype=np.float64)
            p50, p99 = (np.percentile(errs, [50, 99]) * 1e3) if errs.size else (0.0, 0.0)
            return PacerStats(
                mode="fixed" if self.target_fps else "measured",
                fps_out=self._fps(),
                fps_generation=self._ema,
                emitted=self._emitted,
                repeated=self._repeated,
                dropped=self._dropped,
                buffered=len(self._buffer),
                jitter_p50_ms=float(p50),
                jitter_p99_ms=float(p99),
                reanchors=self._reanchors,
                sink_errors=self._sink_errors,
            )

    def clear(self) -> None:
        """Forget buffered frames and the timeline (e.g. after a stream reset); keeps the rate."""
        with self._lock:
            self._buffer.clear()
            self._next_due = self._last_emit = None

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
            _SwitchInterval.release(self.gil_switch_interval)

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _SwitchInterval:
    """The process's GIL switch interval while pacers run: the smallest one asked for, the
    original value back when the last running pacer stops (module docstring)."""

    _lock = threading.Lock()
    _held: list[float] = []
    _original: float | None = None

    @classmethod
    def acquire(cls, seconds: float | None) -> None:
        if seconds is None:
            return
        with cls._lock:
            if not cls._held:
                cls._original = sys.getswitchinterval()
            cls._held.append(float(seconds))
            sys.setswitchinterval(min(min(cls._held), cls._original))

    @classmethod
    def release(cls, seconds: float | None) -> None:
        if seconds is None:
            return
        with cls._lock:
            if float(seconds) in cls._held:
                cls._held.remove(float(seconds))
            if cls._held:
                sys.setswitchinterval(min(min(cls._held), cls._original))
            elif cls._original is not None:
                sys.setswitchinterval(cls._original)
                cls._original = None


class ManualClock:
    """Virtual time for deterministic tests of threaded code that uses `now()` and `sleep()`.

    One worker thread sleeps through `sleep(dt)`; the test thread calls `advance(dt)`, which moves
    time to each pending wake-up in turn and returns only once the worker is asleep again, so every
    emission due within the advanced span has happened. `oversleep(n)` can add a known error to
    the n-th sleep to model a late OS timer. `close()` releases the worker for shutdown.
    """

    def __init__(self, start: float = 0.0, oversleep: Callable[[int], float] | None = None,
                 timeout: float = 5.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._wake: float | None = None
        self._sleeps = 0
        self._closed = False
        self._oversleep = oversleep
        self._timeout = timeout

    def now(self) -> float:
        with self._cond:
            return self._now

    def sleep(self, dt: float) -> None:
        with self._cond:
            if self._closed:
                return
            extra = self._oversleep(self._sleeps) if self._oversleep else 0.0
            self._sleeps += 1
            wake = self._now + max(dt, 0.0) + extra
            self._wake = wake
            self._cond.notify_all()
            while not self._closed and self._now < wake:
                self._cond.wait()
            self._wake = None

    def _wait_asleep(self, after: int) -> None:
        if not self._cond.wait_for(lambda: self._closed or (self._wake is not None and self._sleeps > after),
                                   timeout=self._timeout):
            raise TimeoutError("ManualClock: the worker thread did not go back to sleep")

    def advance(self, dt: float) -> None:
        with self._cond:
            target = self._now + dt
            self._wait_asleep(self._sleeps - 1)
            while not self._closed and self._wake is not None and self._wake <= target:
                self._now = max(self._now, self._wake)
                before = self._sleeps
                self._cond.notify_all()
                self._wait_asleep(before)
            self._now = max(self._now, target)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
