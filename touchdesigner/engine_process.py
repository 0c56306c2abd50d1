"""Start, watch and stop a local `vacelive serve` (or `vacelive relay`) process (stdlib only).

The heavy engine never runs inside TouchDesigner's Python: the component launches it as a
separate process (the sidecar pattern: native GPU code inside TD's
embedded Python risks the TD process), reads its output on a thread into
a bounded buffer, and the component's frame callback moves new lines into a Text DAT. A crash
of the engine is a log line and a status, never a TouchDesigner crash.
"""
# (no `from __future__ import annotations`: dataclasses in a TouchDesigner DAT module must
# not need sys.modules to resolve string annotations)

import collections
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass
class EngineSettings:
    """What the Engine and Textures pages say (see td_params.component_specs)."""

    mode: str = "local"  # local | relay | external
    executable: str = "vacelive"
    remote_engine: str = "tcp://gpu-box:5555"
    keys: str = ""  # relay: CURVE key folder
    link_codec: str = "raw"  # relay: raw | jpeg
    pipeline: str = "longlive"
    models: str = ""
    width: int = 832
    height: int = 480
    codec: str = "wan"
    device: str = "cuda"
    dtype: str = "auto"  # auto: the engine picks (bf16 on a GPU, fp32 on the CPU)
    random_weights: str = "off"  # off | tiny | full
    fps: float = 0.0
    osc_host: str = "127.0.0.1"
    osc_port: int = 7700
    feedback_port: int = 7710
    oscquery_port: int = 7701
    presets_dir: str = ""
    config: str = ""
    extra_args: str = ""
    textures: dict[str, str] = field(default_factory=dict)  # flag -> SPEC (textures.py)


def _base_command(executable: str, sub: str) -> list[str]:
    """`vacelive <sub>`, or `<python> -m bridge.cli <sub>` when the executable is a Python."""
    name = os.path.basename(executable).lower()
    if name.startswith("python") or name.startswith("py.exe"):
        return [executable, "-m", "vacelive.bridge.cli", sub]
    return [executable, sub]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def engine_command(s: EngineSettings) -> list[str]:
    """The command line for the Engine page's settings (flags fixed in notes/TEAM.md)."""
    if s.mode == "external":
        raise ValueError("mode 'external' starts no process; connect to a running engine")
    if s.mode not in ("local", "relay"):
        raise ValueError(f"unknown engine mode {s.mode!r} (local, relay or external)")
    cmd = _base_command(s.executable, "serve" if s.mode == "local" else "relay")
    if s.config:
        cmd += ["--config", s.config]
    if s.mode == "relay":
        cmd += ["--engine", s.remote_engine, "--link-codec", s.link_codec]
        if s.keys:
            cmd += ["--keys", s.keys]
    else:
        cmd += ["--pipeline", s.pipeline]
        if s.models:
            cmd += ["--models", s.models]
        cmd += ["--width", str(int(s.width)), "--height", str(int(s.height)),
                "--codec", s.codec, "--device", s.device]
        if s.dtype != "auto":
            cmd += ["--dtype", s.dtype]
        if s.random_weights in ("tiny", "full"):
            cmd += ["--random-weights", s.random_weights]
    for flag in ("--control", "--mask", "--ref", "--input", "--output"):
        if s.textures.get(flag):
            cmd += [flag, s.textures[flag]]
    cmd += ["--osc-host", s.osc_host, "--osc-port", str(int(s.osc_port)),
            "--osc-feedback", f"127.0.0.1:{int(s.feedback_port)}",
            "--oscquery-port", str(int(s.oscquery_port))]
    if s.presets_dir:
        cmd += ["--presets-dir", s.presets_dir]
    cmd += ["--fps", _num(s.fps)]
    if s.extra_args.strip():
        cmd += shlex.split(s.extra_args, posix=sys.platform != "win32")
    return cmd


class EngineProcess:
    """One child process with its output captured line by line."""

    def __init__(self, max_lines: int = 2000, popen: Callable = subprocess.Popen):
        self.lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._new: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._popen = popen
        self.proc: subprocess.Popen | None = None
        self.command: list[str] = []
        self._reader: threading.Thread | None = None
        self.started_at: float | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, command: Sequence[str], cwd: str | None = None) -> None:
        if self.running:
            raise RuntimeError("the engine is already running; stop it first")
        self.command = list(command)
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # log lines arrive as they are written
        kwargs = {}
        if sys.platform == "win32":  # no console window popping up over the show
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self._note(f"$ {' '.join(shlex.quote(c) for c in self.command)}")
        try:
            self.proc = self._popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=cwd, env=env, text=True, encoding="utf-8",
                errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            self.proc = None
            self._note(f"cannot start the engine: {exc}")
            raise
        self.started_at = time.monotonic()
        self._reader = threading.Thread(target=self._read, args=(self.proc,),
                                        name="vacelive-log", daemon=True)
        self._reader.start()

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate (then kill after `timeout`); returns the exit code, None if none ran."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._note("stopping the engine")
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._note(f"the engine did not stop within {timeout:g} s: killing it")
                proc.kill()
                proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        code = proc.returncode
        self._note(f"engine exited with code {code}")
        self.proc = None
        return code

    # -- state -----------------------------------------------------------------------------
    # (stop() may run on a thread: read self.proc once)
    @property
    def running(self) -> bool:
        proc = self.proc
        return proc is not None and proc.poll() is None

    def status(self) -> str:
        proc = self.proc
        if proc is None:
            return "stopped"
        code = proc.poll()
        if code is None:
            return f"running (pid {proc.pid})"
        return f"exited ({code})"

    def take_new_lines(self) -> list[str]:
        """Lines that arrived since the last call (for the log Text DAT)."""
        out = []
        while self._new:
            out.append(self._new.popleft())
        return out

    # -- internals -------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        self.lines.append(text)
        self._new.append(text)

    def _read(self, proc: subprocess.Popen) -> None:
        try:
            for line in proc.stdout:
                self._note(line.rstrip("\r\n"))
        except (OSError, ValueError):  # pipe closed under us at stop
            pass
