"""Helpers for the run-loop, serve, relay and demo tests (real shm, real UDP, real processes)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from bridge.transports import ShmFrameSource
from engine.request import ChunkRequest

REPO = Path(__file__).resolve().parents[1]


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def unique(tag: str) -> str:
    """A short shm name unique to this test process (macOS allows 31 characters)."""
    return f"t{os.getpid() % 100000}{tag}"


def shm_exists(name: str) -> bool:
    if sys.platform.startswith("linux"):
        return Path("/dev/shm", name).exists()
    from multiprocessing import shared_memory

    try:
        shared_memory.SharedMemory(name=name).close()
    except FileNotFoundError:
        return False
    return True


class Recorder:
    """Wraps a generator: records every request it receives (and when), can raise on demand."""

    def __init__(self, inner: Any, fail_on: set[int] | None = None, fail_delay: float = 0.0) -> None:
        self.inner = inner
        self.fail_on = set(fail_on or ())  # 1-based step call numbers that raise
        self.fail_delay = fail_delay
        self.calls: list[tuple[float, ChunkRequest]] = []
        self.resets = 0
        self.lock = threading.Lock()

    @property
    def width(self) -> int:
        return self.inner.width

    @property
    def height(self) -> int:
        return self.inner.height

    @property
    def next_chunk_frames(self) -> int:
        return self.inner.next_chunk_frames

    def describe(self) -> dict:
        return self.inner.describe()

    def reset(self) -> None:
        self.resets += 1
        self.inner.reset()

    def step(self, request: ChunkRequest):
        with self.lock:
            self.calls.append((time.monotonic(), request))
            n = len(self.calls)
        if n in self.fail_on:
            time.sleep(self.fail_delay)
            raise RuntimeError(f"injected failure in step {n}")
        return self.inner.step(request)


class Peer:
    """An OSC control surface on real UDP."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.inbox: list[tuple[float, str, list]] = []
        self._stop = threading.Event()
        self.sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

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
            for m in OscPacket(data).messages:
                self.inbox.append((time.monotonic(), m.message.address, list(m.message.params)))

    def got(self, address: str) -> list[tuple[float, str, list]]:
        return [m for m in list(self.inbox) if m[1] == address]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


class OutputReader:
    """Reads an shm output like TouchDesigner would: every new frame, its counter and time."""

    def __init__(self, name: str) -> None:
        self.source = ShmFrameSource(name)
        self.items: list[tuple[float, int, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                time.sleep(0.001)
                continue
            self.items.append((time.monotonic(), self.source.frame_counter, frame))

    def count(self) -> int:
        return len(self.items)

    def since(self, t: float) -> list[tuple[float, int, np.ndarray]]:
        return [it for it in list(self.items) if it[0] >= t]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.source.close()


def vacelive(*args: str, **kw) -> subprocess.Popen:
    """Start `python -m bridge.cli ARGS` (the `vacelive` entry point) as a process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", *args], cwd=kw.pop("cwd", REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)


class ProcessLog:
    """Collects a process's output lines on a thread (so pipes never fill up)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        def find():
            return next((line for line in list(self.lines) if needle in line), None)

        try:
            return wait_until(lambda: find() or self.proc.poll() is not None, timeout, f"{needle!r}") \
                and (find() or self._died(needle))
        except AssertionError:
            raise AssertionError(f"no {needle!r} within {timeout:.0f} s; output:\n{self.text()[-3000:]}")

    def _died(self, needle: str) -> str:
        raise AssertionError(f"process exited ({self.proc.returncode}) before {needle!r}; "
                             f"output:\n{self.text()[-3000:]}")
