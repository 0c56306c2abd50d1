"""The demo's stage props: what stands in for TouchDesigner and a control surface.

* SyntheticControl: a moving test pattern written into a shared-memory ring (a TOP into Spout);
* ReadBack: reads an output ring like a receiver would;
* OscSurface: real OSC over UDP with the server's replies collected (registers with /vace/hello);
* CueSender: plays OSC cues at chunk indices (a run-loop observer), so each cue lands in exactly
  the chunk after the one it follows, however loaded the machine is.
"""
from __future__ import annotations

import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from vacelive.bridge.run.loop import ChunkRecord
from vacelive.bridge.transports import FrameSource, ShmFrameSink


@dataclass
class Cue:
    after_chunk: int  # sent once this many chunks are done, before the next chunk's snapshot
    address: str
    args: list[Any]
    what: str
    params: tuple[str, ...] = ()  # parameters whose change marks the effect (empty: preset/snapshot)
    sent_at: float | None = None
    sent_seq: int | None = None  # the run-loop attempt it was sent after


class SyntheticControl:
    """A moving test pattern written into a shared-memory ring at `fps` (like a TOP into Spout):
    a bright disc orbiting over a slowly turning gradient, with a sweeping bar."""

    def __init__(self, sink: ShmFrameSink, size: tuple[int, int], fps: float = 30.0) -> None:
        self.sink, self.fps = sink, fps
        w, h = size
        self._yy, self._xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self._w, self._h = w, h
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-control", daemon=True)
        self.frames = 0

    def render(self, t: float) -> np.ndarray:
        w, h, xx, yy = self._w, self._h, self._xx, self._yy
        out = np.empty((h, w, 4), np.uint8)
        angle = 0.6 * t
        grad = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) * 0.5 + 0.5
        cx, cy = w * (0.5 + 0.3 * math.cos(1.7 * t)), h * (0.5 + 0.3 * math.sin(1.7 * t))
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < (0.18 * h) ** 2
        bar = np.abs(xx - (w * ((0.25 * t) % 1.0))) < w * 0.03
        out[..., 0] = (40 + 120 * grad).astype(np.uint8)
        out[..., 1] = (20 + 60 * (1 - grad)).astype(np.uint8)
        out[..., 2] = (90 + 100 * grad).astype(np.uint8)
        out[disc, :3] = (250, 230, 120)
        out[bar, :3] = 255
        out[..., 3] = 255
        return out

    def _run(self) -> None:
        t0 = time.monotonic()
        period = 1.0 / self.fps
        next_due = t0
        while not self._stop.is_set():
            self.sink.send(self.render(time.monotonic() - t0))
            self.frames += 1
            next_due += period
            self._stop.wait(max(0.0, next_due - time.monotonic()))

    def start(self) -> "SyntheticControl":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.sink.close()


class ReadBack:
    """Reads an output like a receiver (TouchDesigner) would, on its own thread: every new frame
    as `items` (arrival time, source counter, frame), the first `max_frames` of them (None: all)."""

    def __init__(self, source: FrameSource, max_frames: int | None = 2000) -> None:
        self.source, self.max_frames = source, max_frames
        self.items: list[tuple[float, int, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readback", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                time.sleep(0.001)
                continue
            if self.max_frames is None or len(self.items) < self.max_frames:
                self.items.append((time.monotonic(), self.source.frame_counter, frame))

    @property
    def frames(self) -> list[np.ndarray]:
        return [frame for _, _, frame in list(self.items)]

    @property
    def times(self) -> list[float]:
        return [t for t, _, _ in list(self.items)]

    def count(self) -> int:
        return len(self.items)

    def since(self, t: float) -> list[tuple[float, int, np.ndarray]]:
        """The items that arrived at or after monotonic time t."""
        return [item for item in list(self.items) if item[0] >= t]

    def start(self) -> "ReadBack":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.source.close()


class OscSurface:
    """A control surface over real UDP: sends OSC messages, collects what the server sends back
    in `inbox` (arrival time, address, arguments). With `hello` it registers for echoes and
    status at once (/vace/hello with its port)."""

    def __init__(self, target: tuple[str, int], hello: bool = True) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.inbox: list[tuple[float, str, list[Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osc-surface", daemon=True)
        self._thread.start()
        if hello:
            self.send("/vace/hello", self.port)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, address: str, *args: Any) -> float:
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        dgram = b.build().dgram
        t = time.monotonic()  # before sending: a reply can arrive before sendto() returns
        self.sock.sendto(dgram, self.target)
        return t

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (socket.timeout, OSError):
                continue
            try:
                for m in OscPacket(data).messages:
                    self.inbox.append((time.monotonic(), m.message.address, list(m.message.params)))
            except Exception:  # a reply we cannot parse is not the demo's business
                continue

    def sync(self, timeout: float = 10.0) -> None:
        """Return once the server has handled everything sent before: it handles datagrams in
        order, so the reply to a query sent now comes after them."""
        before = len(self.received("/vace/describe"))
        self.send("/vace/describe", "seed")
        deadline = time.monotonic() + timeout
        while len(self.received("/vace/describe")) <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the OSC server did not answer within {timeout:.0f} s")
            time.sleep(0.001)

    def received(self, prefix: str) -> list[tuple[float, str, list[Any]]]:
        return [item for item in list(self.inbox) if item[1].startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.sock.close()


class CueSender:
    """A run-loop observer that sends each cue once `after_chunk` chunks are done, on the run-loop
    thread before the next parameter snapshot, and waits until the server has handled it: the
    cue is used by exactly the next chunk (a cue sent by wall clock could share a chunk with the
    next one on a loaded machine)."""

    def __init__(self, surface: OscSurface, cues: list[Cue], echo: Callable[[str], None] = print,
                 timeout: float = 10.0) -> None:
        self.surface, self.cues, self.echo, self.timeout = surface, cues, echo, timeout
        self.done = 0
        self._next = 0
        self.finished = threading.Event()
        if not cues:
            self.finished.set()

    def __call__(self, record: ChunkRecord) -> None:
        if record.error is not None:
            return
        self.done += 1
        while self._next < len(self.cues) and self.cues[self._next].after_chunk <= self.done:
            cue = self.cues[self._next]
            cue.sent_seq = record.seq
            cue.sent_at = self.surface.send(cue.address, *cue.args)
            self.surface.sync(self.timeout)
            self.echo(f"  OSC -> {cue.address} {' '.join(repr(a) for a in cue.args)}   ({cue.what})")
            self._next += 1
        if self._next == len(self.cues):
            self.finished.set()
