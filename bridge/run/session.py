"""A live session: transports + parameter store + OSC server + run loop, started and stopped as
one. `vacelive serve`, `vacelive relay` and `vacelive demo` are each a Session around a different
generator (local StreamGenerator, RemoteGenerator, tiny random model).

Start order: output sink, input histories, store, OSC (its status provider reads the loop), loop.
Stop order is the reverse, each step bounded in time, so SIGINT/SIGTERM always ends with the OSC
port closed and every shared-memory segment this process created unlinked.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from vacelive.bridge.config import ConfigError, parse_spec
from vacelive.bridge.osc import OscConfig, OscServer
from vacelive.bridge.presets import PresetLibrary
from vacelive.bridge.record import Recorder
from vacelive.bridge.run.loop import LogReporter, RunLoop
from vacelive.bridge.stage import Stage
from vacelive.bridge.schema import DEFAULT_SCHEMA
from vacelive.bridge.param_types import ParamError, Schema
from vacelive.bridge.store import ParamStore
from vacelive.bridge.transports import FrameHistory, TransportUnavailable, open_sink, open_source
from vacelive.engine.request import Generator

log = logging.getLogger("vacelive.bridge.run")

CONTROL_DEPTH = 24  # ≥ 13 frames: a first chunk after a reset plus slack


@dataclass
class SessionOptions:
    """What a Session needs from the resolved config (bridge.config.resolve())."""

    control: str | None = None
    input: str | None = None  # V2V input texture (None: the control texture is the input)
    mask: str | None = None
    ref: str | None = None
    output: str = "shm:vacelive-out"
    osc: OscConfig | None = field(default_factory=OscConfig)  # None: no OSC server
    presets_dir: str | None = None
    fps: float = 0.0
    snapshots: str = "vacelive-snapshots"
    recordings: str = "vacelive-recordings"  # /vace/record/start files
    params: dict[str, Any] = field(default_factory=dict)  # initial live values
    params_source: str = "[params]"  # where they come from, for error messages
    load_time: dict[str, Any] = field(default_factory=dict)  # shown by /vace/get, /describe

    @classmethod
    def from_config(cls, cfg: argparse.Namespace) -> "SessionOptions":
        return cls(
            control=parse_spec(cfg.control), input=parse_spec(getattr(cfg, "input", None)),
            mask=parse_spec(cfg.mask), ref=parse_spec(cfg.ref),
            output=parse_spec(cfg.output) or "", osc=OscConfig.from_args(cfg),
            presets_dir=cfg.presets_dir, fps=float(cfg.fps or 0.0), snapshots=cfg.snapshots,
            recordings=getattr(cfg, "recordings", None) or "vacelive-recordings",
            params=dict(cfg.params or {}, **({"link": True} if getattr(cfg, "link", False) else {})),
            params_source=f"{cfg.config}: [params]" if cfg.config else "[params]",
            load_time={"osc_host": cfg.osc_host, "osc_port": cfg.osc_port,
                       "oscquery_port": cfg.oscquery_port, "presets_dir": cfg.presets_dir or ""},
        )


def _load_time_values(schema: Schema, values: dict[str, Any]) -> dict[str, Any]:
    """The values the engine really runs with, as the schema types them; a value outside the
    schema's range is reported as it is (never clamped), one of the wrong type is left out."""
    out = {}
    for name, value in values.items():
        p = schema.get(name)
        if p is None or p.live or value is None:
            continue
        try:
            out[name] = p.coerce(value, clamp=None)
        except ParamError:
            pass
    return out


def _pipeline_of(generator: Generator) -> str | None:
    """The recipe name the generator reports in describe(), or None."""
    try:
        name = generator.describe().get("pipeline")
    except Exception:  # a remote engine not connected yet, a stand-in without describe()
        return None
    return name if isinstance(name, str) else None


def _v2v_noise_scale(generator: Generator) -> float | None:
    """The recipe's default V2V noise scale from describe() (StreamDiffusionV2: 0.8), or None."""
    try:
        value = generator.describe().get("v2v_noise_scale")
    except Exception:
        return None
    return float(value) if isinstance(value, (int, float)) and 0.0 <= value <= 1.0 else None


class Session:
    def __init__(self, generator: Generator, options: SessionOptions,
                 schema: Schema = DEFAULT_SCHEMA, *, pacer_options: dict[str, Any] | None = None,
                 history_poll: float = 0.002) -> None:
        self.generator = generator
        self.options = options
        self.schema = schema
        self.pacer_options = pacer_options
        self.history_poll = history_poll
        self.sink = None
        self.histories: dict[str, FrameHistory] = {}
        self.store: ParamStore | None = None
        self.osc: OscServer | None = None
        self.loop: RunLoop | None = None
        self.stage: Stage | None = None
        self._closed = False

    # -- start ------------------------------------------------------------------------------------
    def start(self) -> "Session":
        """Open everything; ConfigError (with the reason) if a transport, the OSC port or an
        initial parameter cannot be used. Whatever was opened is closed again on failure."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        opts = self.options
        if not opts.output:
            raise ConfigError("an output is needed (--output shm:NAME | spout:NAME | syphon:NAME)")
        self.sink = self._open(open_sink, opts.output, "--output")
        for role, spec in (("control", opts.control), ("input", opts.input), ("mask", opts.mask),
                           ("ref", opts.ref)):
            if spec:
                source = self._open(open_source, spec, f"--{role}")
                depth = CONTROL_DEPTH if role in ("control", "input") else 1
                self.histories[role] = FrameHistory(source, depth=depth,
                                                    poll_interval=self.history_poll)
        initial = dict(opts.params)
        if opts.fps:
            initial["output_fps"] = opts.fps
        load_time = dict(opts.load_time)
        load_time.update(width=self.generator.width, height=self.generator.height)
        pipeline = _pipeline_of(self.generator)
        if pipeline is not None:  # the engine's own recipe name (also behind a relay)
            load_time["pipeline"] = pipeline
        noise = _v2v_noise_scale(self.generator)
        if noise is not None and "noise_scale" not in initial:  # the pipeline's own V2V default
            initial["noise_scale"] = noise
        try:
            self.store = ParamStore(self.schema, _load_time_values(self.schema, load_time), initial)
        except ParamError as exc:
            raise ConfigError(f"{opts.params_source} {exc}") from None
        presets = PresetLibrary(self.schema, user_dir=opts.presets_dir)
        if opts.osc is not None:
            self.osc = OscServer(self.store, presets, opts.osc)
            try:
                self.osc.start()
            except OSError as exc:
                self.osc = None
                raise ConfigError(f"{exc} (another vacelive or OSC app on that port? pick one "
                                  "with --osc-port)") from None
        self.loop = RunLoop(
            self.generator, self.store, self.sink,
            control=self.histories.get("control"), mask=self.histories.get("mask"),
            ref=self.histories.get("ref"), input_video=self.histories.get("input"), reporter=self.osc or LogReporter(),
            snapshot_dir=opts.snapshots, pacer_options=self.pacer_options,
        )
        self.stage = Stage(self.store, Recorder(opts.recordings), reporter=self.osc or LogReporter())
        self.stage.attach(self.loop)
        if self.osc is not None:
            self.osc.stage = self.stage
            self.stage.server = self.osc
            self.osc.status_provider = self.loop.status
        self.loop.start()

    @staticmethod
    def _open(opener, spec: str, flag: str):
        try:
            return opener(spec)
        except (TransportUnavailable, ValueError, OSError) as exc:
            raise ConfigError(f"{flag} {spec}: {exc}" + ("" if flag == "--output" else
                              f" (use {flag} none to run without it)")) from None

    def describe_io(self) -> str:
        parts = [f"output {self.options.output}"]
        for role in ("control", "input", "mask", "ref"):
            spec = getattr(self.options, role)
            parts.append(f"{role} {spec or 'off'}")
        if self.osc is not None:
            host, port = self.osc.address
            q = f", OSCQuery http://{host}:{self.osc.oscquery.address[1]}/" if self.osc.oscquery else ""
            parts.append(f"OSC {host}:{port}{q}")
        return ", ".join(parts)

    # -- run / stop ---------------------------------------------------------------------------------
    def run_until_signal(self, stop: threading.Event | None = None) -> int:
        """Block until SIGINT/SIGTERM (or `stop` is set), then close. Returns the exit code (0)."""
        stop = stop or threading.Event()
        previous = {}

        def handler(signum, frame):  # noqa: ARG001
            if stop.is_set():
                log.warning("second %s: still shutting down", signal.Signals(signum).name)
            log.info("%s received: shutting down", signal.Signals(signum).name)
            stop.set()

        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        try:
            while not stop.wait(0.2):
                if self.loop is not None and not self.loop.running:
                    log.error("run loop ended unexpectedly")
                    break
        finally:
            self.close()
            for sig, h in previous.items():
                signal.signal(sig, h)
        return 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        steps = [
            ("run loop", lambda: self.loop and self.loop.stop()),
            ("tempo and recording", lambda: self.stage and self.stage.close()),
            ("OSC", lambda: self.osc and self.osc.stop()),
            ("inputs", self._close_inputs),
            ("output", lambda: self.sink and self.sink.close()),
            ("generator", self._close_generator),
        ]
        for name, fn in steps:
            try:
                fn()
            except Exception:  # close the rest regardless
                log.exception("closing %s failed", name)
        log.info("session closed")

    def _close_inputs(self) -> None:
        for history in self.histories.values():
            history.close(close_source=True)

    def _close_generator(self) -> None:
        close = getattr(self.generator, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> "Session":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
