"""The one transport interface: RGBA frame sources and sinks, plus the input-side frame history.

Conventions: frames are uint8 RGBA, [H, W, 4], top-left origin. Every adapter converts
its platform's layout (BGRA, bottom-up rows) at the boundary, so nothing above this module ever
sees a platform detail.

- `FrameSource.read()` returns the newest frame the source has *if it is new* since the previous
  `read()`, else `None` ("is new" semantics: an unchanged texture is never re-read or re-copied).
  The returned array belongs to the caller (adapters never hand out a buffer they will reuse).
- `FrameSink.send(frame)` publishes one frame: a numpy uint8 [H,W,4] array, or a torch uint8
  [H,W,4] tensor on the CPU or on CUDA (sinks with a GPU path use it without a CPU copy).
- `FrameHistory` runs a reader thread that polls one source and keeps the newest N frames with
  their counters, so the run loop takes "the newest 12 consecutive frames" and never a backlog.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

RGBA8 = "RGBA8"
BGRA_TO_RGBA = [2, 1, 0, 3]  # channel order that turns BGRA pixels (or RGBA ones) around


class TransportUnavailable(RuntimeError):
    """A platform library or capability is missing; the message names what to install."""


def require_module(import_name: str, install_hint: str, platform_note: str = "") -> Any:
    """Import an optional platform module or raise TransportUnavailable with the install command."""
    import importlib

    try:
        return importlib.import_module(import_name)
    except ImportError as exc:
        extra = f" ({platform_note})" if platform_note else ""
        raise TransportUnavailable(
            f"`{import_name}` is not importable{extra}: {exc}. Install it with: {install_hint}"
        ) from exc


def platform_module(injected: Any, platform: str, import_name: str, install_hint: str,
                    platform_note: str, elsewhere: str) -> Any:
    """A platform library (SpoutGL, syphon): `injected` (a stand-in with the same API) if given,
    else the import; on another OS a TransportUnavailable whose message (`elsewhere`) says what to
    use there."""
    if injected is not None:
        return injected
    if sys.platform != platform:
        raise TransportUnavailable(elsewhere)
    return require_module(import_name, install_hint, platform_note)


def as_rgba_numpy(frame: Any) -> np.ndarray:
    """Any supported frame (numpy or torch, CPU or CUDA, [H,W,4] uint8) as a C-contiguous numpy
    array. CUDA tensors are copied to the host here; sinks with a GPU path never call this for them."""
    if not isinstance(frame, np.ndarray):
        frame = frame.detach()
        if frame.device.type != "cpu":
            frame = frame.cpu()
        frame = frame.numpy()
    check_rgba(frame)
    return np.ascontiguousarray(frame)


def check_rgba(frame: Any) -> None:
    shape = tuple(frame.shape)
    if len(shape) != 3 or shape[2] != 4:
        raise ValueError(f"expected an RGBA frame [H, W, 4], got shape {shape}")
    dtype = str(frame.dtype)
    if "uint8" not in dtype:
        raise ValueError(f"expected uint8 pixels, got {dtype}")


class FrameSource(ABC):
    """An input of RGBA frames (a Spout receiver, a Syphon client, a shared-memory ring, ...)."""

    name: str = ""

    @property
    @abstractmethod
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the current sender, or None while nothing is connected."""

    @property
    def format(self) -> str:
        return RGBA8

    @property
    @abstractmethod
    def frame_counter(self) -> int:
        """Counter of the frame last returned by read(): the sender's own frame number where the
        platform has one, else the number of new frames this source has seen. 0 before any frame."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The newest frame if it is new since the last read(), else None. Never blocks for long."""

    def close(self) -> None:  # noqa: B027 - optional for sources that hold nothing
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameSink(ABC):
    """An output of RGBA frames."""

    name: str = ""

    @abstractmethod
    def send(self, frame: Any) -> None:
        """Publish one frame: numpy uint8 [H,W,4] or torch uint8 [H,W,4] (CPU or CUDA)."""

    def close(self) -> None:  # noqa: B027
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class FrameWindow:
    """Frames taken from a FrameHistory: `frames` [N,H,W,4] oldest first, their source counters,
    and how many of the N slots are padding (repeats of the oldest frame) because the history held
    fewer than N frames."""

    frames: np.ndarray
    counters: list[int]
    padded: int
    # time.monotonic() at which the history read each frame from its source (None for padding);
    # the run loop measures control-to-output latency from it (bridge/latency.py)
    arrived: tuple[float | None, ...] = ()

    @property
    def newest_counter(self) -> int:
        return self.counters[-1]


class FrameHistory:
    """Polls one FrameSource on its own thread and keeps the newest `depth` frames.

    * `window(n)`: the newest n frames in arrival order (a contiguous run of what the source
      delivered, never a sample of an old backlog), padded by repeating the oldest one when fewer
      than n have arrived; None before the first frame.
    * `latest()`: the single newest frame and its counter (use depth=1 for mask/reference slots).
    * When the source changes size the history restarts with the new size, so a window is always
      stackable.
    * A failing source is logged (once per distinct message) and polled again; the history keeps
      what it had, so the show goes on.
    * When the sender stops (the source reports no size, or nothing new arrived for
      `stale_after` seconds) only the newest frame is kept: the input becomes a still and the
      older frames are released (24 frames of 2560x1600 RGBA are 390 MB). `releases` counts it.
    """

    def __init__(
        self,
        source: FrameSource,
        depth: int = 24,
        poll_interval: float = 0.002,
        sleep: Callable[[float], None] = time.sleep,
        start: bool = True,
        stale_after: float = 1.0,
    ) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.source = source
        self.depth = depth
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._lock = threading.Lock()
        self._frames: deque[tuple[int, np.ndarray]] = deque(maxlen=depth)
        self._arrived: dict[int, float] = {}  # id(frame array) -> time.monotonic() it was read
        self._received = 0
        self._gaps = 0  # source counters skipped by the poller (frames it never saw)
        self._last_error: str | None = None
        self.stale_after = stale_after
        self._last_new = time.monotonic()
        self.releases = 0  # times the history shrank to its newest frame (sender gone)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- reader side ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"history:{self.source.name}", daemon=True
            )
            self._thread.start()

    def poll_once(self) -> bool:
        """Read the source once; True if a new frame was stored. (The thread calls this.)"""
        try:
            frame = self.source.read()
        except Exception as exc:  # keep polling: a sender may come back
            msg = f"{type(exc).__name__}: {exc}"
            if msg != self._last_error:
                log.warning("source %r failed: %s", self.source.name, msg)
                self._last_error = msg
            return False
        if frame is None:
            if len(self._frames) > 1 and (self.source.size is None
                                          or time.monotonic() - self._last_new > self.stale_after):
                self._keep_newest_only()
            return False
        self._last_error = None
        self._last_new = arrived = time.monotonic()
        counter = int(self.source.frame_counter)
        with self._lock:
            if self._frames:
                last_counter, last = self._frames[-1]
                if last.shape != frame.shape:
                    self._frames.clear()  # new size: a window must stack
                elif counter > last_counter + 1:
                    self._gaps += counter - last_counter - 1
            if len(self._frames) == self._frames.maxlen:
                self._arrived.pop(id(self._frames[0][1]), None)
            self._frames.append((counter, frame))
            self._arrived[id(frame)] = arrived
            if len(self._arrived) > 2 * self.depth:  # frames dropped by a size change or a release
                live = {id(f) for _, f in self._frames}
                self._arrived = {k: v for k, v in self._arrived.items() if k in live}
            self._received += 1
        return True

    def _keep_newest_only(self) -> None:
        with self._lock:
            newest = self._frames[-1]
            self._frames.clear()
            self._frames.append(newest)
            self.releases += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.poll_once():
                self._sleep(self.poll_interval)

    # -- consumer side -------------------------------------------------------------------------
    def window(self, n: int, still_as_one: bool = False) -> FrameWindow | None:
        """With `still_as_one`, a history of one frame gives that frame once ([1, H, W, 4],
        padded = n - 1): the engine holds a one-frame video as a still, the same picture without
        n full-size copies."""
        with self._lock:
            items = list(self._frames)[-n:]
            arrived = [self._arrived.get(id(f)) for _, f in items]
        if not items:
            return None
        if still_as_one and len(items) == 1:
            return FrameWindow(frames=items[0][1][None], counters=[items[0][0]], padded=n - 1,
                               arrived=(arrived[0],))
        pad = n - len(items)
        items = [items[0]] * pad + items
        return FrameWindow(
            frames=np.stack([f for _, f in items]), counters=[c for c, _ in items], padded=pad,
            arrived=tuple([None] * pad + arrived),
        )

    def latest(self) -> tuple[np.ndarray, int] | None:
        with self._lock:
            if not self._frames:
                return None
            counter, frame = self._frames[-1]
        return frame, counter

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": self._received,
                "buffered": len(self._frames),
                "gaps": self._gaps,
                "last_error": self._last_error,
            }

    def close(self, close_source: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if close_source:
            self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
