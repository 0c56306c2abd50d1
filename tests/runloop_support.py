"""Helpers for the run-loop, serve, relay and demo tests (real shm, real UDP, real processes)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from vacelive.bridge.run.demo_props import OscSurface, ReadBack
from vacelive.bridge.run.generators import GeneratorWrapper
from vacelive.bridge.transports import ShmFrameSource
from vacelive.engine.request import ChunkRequest

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


class Recorder(GeneratorWrapper):
    """Wraps a generator: records every request it receives (and when), can raise on demand."""

    def __init__(self, inner: Any, fail_on: set[int] | None = None, fail_delay: float = 0.0) -> None:
        super().__init__(inner)
        self.fail_on = set(fail_on or ())  # 1-based step call numbers that raise
        self.fail_delay = fail_delay
        self.calls: list[tuple[float, ChunkRequest]] = []
        self.resets = 0
        self.lock = threading.Lock()

    def reset(self) -> None:
        self.resets += 1
        super().reset()

    def step(self, request: ChunkRequest):
        with self.lock:
            self.calls.append((time.monotonic(), request))
            n = len(self.calls)
        if n in self.fail_on:
            time.sleep(self.fail_delay)
            raise RuntimeError(f"injected failure in step {n}")
        return super().step(request)


class Peer(OscSurface):
    """An OSC control surface on real UDP (the demo's); it registers for feedback only when a test
    sends /vace/hello itself."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target, hello=False)

    def got(self, address: str) -> list[tuple[float, str, list]]:
        return [m for m in list(self.inbox) if m[1] == address]


class OutputReader(ReadBack):
    """Reads an shm output like TouchDesigner would (the demo's ReadBack, keeping every frame)."""

    def __init__(self, name: str) -> None:
        super().__init__(ShmFrameSource(name), max_frames=None)
        self.start()

    def close(self) -> None:
        self.stop()


def vacelive(*args: str, **kw) -> subprocess.Popen:
    """Start `python -m bridge.cli ARGS` (the `vacelive` entry point) as a process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "vacelive.bridge.cli", *args], cwd=kw.pop("cwd", REPO),
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
