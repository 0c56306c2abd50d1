"""The stage layer of a session: tempo (internal clock, tap tempo, Ableton Link), quantised
changes, and recording, wired to the OSC server, the parameter store and the run loop.

* OSC: the server hands every packet to `intercept()` before it is applied: while the `quantize`
  parameter is not "none", prompt/prompts/refs/transition writes and preset recalls in it are
  armed for the next grid line instead of applied. `/vace/cue GRID [LENGTH] ADDRESS ARGS...` arms
  one message for one grid (e.g. `/vace/cue bar /vace/prompt "neon city"`,
  `/vace/cue 4bars 8beats /vace/preset/load dusk`). `/vace/tap`, `/vace/record/start`,
  `/vace/record/stop`, `/vace/record/status` are handled here.
* run loop: `at_boundary()` runs right before each parameter snapshot: it applies the armed
  changes due for this chunk (bridge/quantize.py says which), keeps the `tempo` parameter equal
  to the clock's (a Link peer may change it) and turns `transition_beats` into
  `transition_chunks` at the current tempo and output rate.
* the pacer's tap hands every output frame to the recorder (bridge/record.py).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from vacelive.bridge.param_types import PREFIX, ParamError
from vacelive.bridge.quantize import (
    Quantizer, Timing, beats_to_chunks, parse_length, parse_quantum,
)
from vacelive.bridge.record import Recorder, RecordError
from vacelive.bridge.store import PRESET_LOAD, Action, ParamStore
from vacelive.bridge.tempo import BeatClock, InternalClock, LinkClock

if TYPE_CHECKING:
    from vacelive.bridge.osc.server import OscServer, Packet
    from vacelive.bridge.run.loop import RunLoop

log = logging.getLogger(__name__)

# changes that wait for the beat while `quantize` is set (the rest apply at once)
QUANTISED = ("prompt", "prompts", "refs", "transition_chunks")
STAGE_CONTROLS = ("cue", "tap", "record/start", "record/stop", "record/status")


def stage_status(stage: "Stage | None") -> dict[str, Any]:
    """The tempo and recording fields of /vace/status (zeros without a stage)."""
    if stage is None:
        return {"tempo": 0.0, "beat": 0.0, "phase": 0.0, "link_peers": 0, "armed": 0,
                "recording": 0, "record_frames": 0, "record_dropped": 0}
    return stage.status()


class Stage:
    def __init__(self, store: ParamStore, recorder: Recorder | None = None, *,
                 reporter: Any = None, now: Callable[[], float] = time.monotonic,
                 link_module: Any = None) -> None:
        self.store = store
        self.recorder = recorder
        self.reporter = reporter
        self.now = now
        self._link_module = link_module
        self.clock: BeatClock = InternalClock(self._param("tempo", 120.0), now=now)
        self.quantizer = Quantizer(self.clock)
        self._tapper = InternalClock(120.0, now=now)  # tap intervals while Link owns the tempo
        self.loop: RunLoop | None = None
        self.server: OscServer | None = None  # replies go through its feedback
        self.last_preset = ""
        self._reported_drops = 0
        self._lock = threading.Lock()
        store.add_listener(self._on_change)
        if self._param("link", False):
            self._set_link(True)

    def _param(self, name: str, default: Any) -> Any:
        return self.store.get(name) if name in self.store.schema else default

    # -- wiring -------------------------------------------------------------------------------------
    def attach(self, loop: "RunLoop") -> None:
        self.loop = loop
        loop.stage = self
        if self.recorder is not None:
            loop.tap.listeners.append(self.recorder.offer)

    def close(self) -> None:
        self.store.remove_listener(self._on_change)
        if self.recorder is not None:
            self.recorder.close()
        self.clock.close()

    def _notice(self, text: str) -> None:
        if self.reporter is not None:
            self.reporter.notice(text)
        else:
            log.info("%s", text)

    def _error(self, text: str) -> None:
        if self.reporter is not None:
            self.reporter.error(text)
        else:
            log.warning("%s", text)

    # -- tempo ----------------------------------------------------------------------------------------
    def _set_link(self, on: bool) -> None:
        old = self.clock
        if on and not isinstance(old, LinkClock):
            try:
                new: BeatClock = LinkClock(old.tempo, old.quantum, module=self._link_module)
            except Exception as exc:
                self._error(f"{PREFIX}/link: cannot join Ableton Link: {exc}")
                self.store.apply({"link": False}, origin="stage")
                return
            self._notice("joined the Ableton Link session (Link talks UDP multicast "
                         "224.76.78.75:20808 on every network interface)")
        elif not on and isinstance(old, LinkClock):
            at = self.now()
            new = InternalClock(old.tempo, old.quantum, now=self.now)
            new.continue_from(old.beat_at(at), at)  # the beat goes on where Link left it
            self._notice("left the Ableton Link session: internal clock")
        else:
            return
        self.clock = self.quantizer.clock = new
        old.close()

    def _on_change(self, changes: Any, origin: Any) -> None:
        if origin == "stage":
            return
        if "link" in changes:
            self._set_link(bool(changes["link"]))
        if "tempo" in changes and abs(changes["tempo"] - self.clock.tempo) > 1e-6:
            self.clock.set_tempo(float(changes["tempo"]))

    def tap(self, at: float | None = None) -> float | None:
        at = self.now() if at is None else at
        if isinstance(self.clock, InternalClock):
            bpm = self.clock.tap(at)
        else:
            bpm = self._tapper.tap(at)
            if bpm is not None:
                self.clock.set_tempo(bpm, at)
        if bpm is not None:
            self.store.apply({"tempo": round(bpm, 2)}, origin="stage")
        return bpm

    # -- OSC ----------------------------------------------------------------------------------------
    def intercept(self, packet: "Packet") -> None:
        """Called with every packet before it is applied: arms its quantised part."""
        for a in packet.actions:
            if a.kind == PRESET_LOAD:
                self.last_preset = str(a.args[0])
        grid = self._grid()
        if grid <= 0:
            return
        changes = {k: packet.changes.pop(k) for k in list(packet.changes) if k in QUANTISED}
        actions = [a for a in packet.actions if a.kind == PRESET_LOAD]
        packet.actions[:] = [a for a in packet.actions if a.kind != PRESET_LOAD]
        if changes or actions:
            self._arm(grid, changes, actions, packet)

    def _grid(self) -> float:
        q = self._param("quantize", "none")
        return parse_quantum(q, self.clock.quantum) if q else 0.0

    def _arm(self, grid: float, changes: dict, actions: list[Action], packet: "Packet") -> None:
        sender = packet.sender
        label = ", ".join(list(changes) + [f"preset {a.args[0]}" for a in actions])
        store = self.store

        def apply() -> None:
            store.apply(changes, actions, origin=sender)

        target = self.quantizer.arm(grid, label, apply, at=self.now())
        packet.after.append(lambda: self._reply(packet, f"{PREFIX}/cue/armed",
                                                [label, float(target)]))

    def _reply(self, packet: "Packet", address: str, args: list[Any]) -> None:
        if self.server is not None and self.server.feedback is not None:
            self.server.feedback.reply(packet.sender, address, args)

    def control(self, server: "OscServer", address: str, args: list[Any], packet: "Packet") -> None:
        self.server = server
        name = address[len(PREFIX) + 1:]
        if name == "cue":
            self._cue(server, args, packet)
        elif name == "tap":
            self.tap()
        elif name == "record/start":
            self._record_start(args, packet)
        elif name == "record/stop":
            self._record_stop(packet)
        elif name == "record/status":
            packet.after.append(lambda: self._reply(packet, f"{PREFIX}/record/status",
                                                    self._record_status_args()))
        else:  # pragma: no cover - the routing table only sends the names above
            raise ParamError(f"{address}: not a stage control")

    def _cue(self, server: "OscServer", args: list[Any], packet: "Packet") -> None:
        address = f"{PREFIX}/cue"
        inner_at = next((i for i, a in enumerate(args) if isinstance(a, str) and a.startswith("/")),
                        None)
        if inner_at is None or inner_at == 0 or inner_at > 2:
            raise ParamError(f"{address}: expects GRID [LENGTH] ADDRESS ARGS..., e.g. "
                             f"{address} bar {PREFIX}/prompt \"neon city\"")
        try:
            grid = parse_quantum(args[0], self.clock.quantum)
            length = parse_length(args[1], self.clock.quantum) if inner_at == 2 else None
        except ValueError as exc:
            raise ParamError(f"{address}: {exc}") from None
        from vacelive.bridge.osc.server import Packet

        inner = Packet(packet.sender)
        server._route(args[inner_at], args[inner_at + 1:], inner)
        if length is not None:
            chunks = self.length_to_chunks(length)
            if inner.changes.keys() & {"prompt", "prompts"}:
                inner.changes["transition_chunks"] = chunks
            inner.actions[:] = [Action(a.kind, (a.args[0], max(1, chunks)), a.origin, a.payload)
                                if a.kind == PRESET_LOAD else a for a in inner.actions]
        for a in inner.actions:
            if a.kind == PRESET_LOAD:
                self.last_preset = str(a.args[0])
        packet.after.extend(inner.after)
        if grid <= 0:  # "now": applied right after this packet, past any `quantize` grid
            store, sender = self.store, packet.sender
            packet.after.insert(0, lambda: store.apply(inner.changes, inner.actions, origin=sender))
            return
        self._arm(grid, dict(inner.changes), list(inner.actions), packet)

    def length_to_chunks(self, length: tuple[float, str]) -> int:
        amount, unit = length
        if unit == "chunks":
            return int(amount + 0.5)
        fps, frames = self._output_rate()
        return beats_to_chunks(amount, self.clock.tempo, fps, frames)

    def _output_rate(self) -> tuple[float, int]:
        loop = self.loop
        if loop is None:
            return 24.0, 12
        fps = float(loop.pacer.stats.fps_out or 24.0)
        return fps, int(loop._frames_needed())

    # -- recording ----------------------------------------------------------------------------------
    def _need_recorder(self) -> Recorder:
        if self.recorder is None or self.loop is None:
            raise ParamError(f"{PREFIX}/record: recording is not enabled in this session")
        return self.recorder

    def _record_start(self, args: list[Any], packet: "Packet") -> None:
        rec = self._need_recorder()
        loop = self.loop
        name = str(args[0]) if args and str(args[0]) else ""
        side = bool(float(args[1])) if len(args) > 1 else False
        path = name if name.endswith(".mp4") or "/" in name or "\\" in name else None
        control = loop.control
        provider = None
        if side:  # the newest control frame beside each output frame (black without one)
            provider = (lambda: (control.latest() or (None,))[0]) if control is not None \
                else (lambda: None)
        try:
            target = rec.start(float(loop.pacer.stats.fps_out), preset=name or self.last_preset,
                               side=provider, path=path)
        except RecordError as exc:
            raise ParamError(f"{PREFIX}/record/start: {exc}") from None
        self._reported_drops = 0
        codec = rec.current.codec if rec.current else ""
        packet.after.append(lambda: self._reply(packet, f"{PREFIX}/record/started",
                                                [str(target), codec]))

    def _record_stop(self, packet: "Packet") -> None:
        rec = self._need_recorder()
        status = rec.stop(wait=0)
        if status is None:
            raise ParamError(f"{PREFIX}/record/stop: not recording")
        last = rec.last

        def closed() -> None:  # the file is closed on the writer thread; say so when it is
            if last is not None:
                last.join(60)
                s = last.status()
                self._reply(packet, f"{PREFIX}/record/stopped", [s.path, s.frames, s.dropped])
                self._notice(f"recording saved: {s.path} ({s.frames} frames, {s.dropped} dropped)"
                             + (f"; error: {s.error}" if s.error else ""))

        threading.Thread(target=closed, name="record-close", daemon=True).start()

    def _record_status_args(self) -> list[Any]:
        s = self.recorder.status() if self.recorder is not None else None
        if s is None:
            return [0, "", 0, 0, 0.0, ""]
        return [int(s.active), s.path, s.frames, s.dropped, float(s.seconds), s.codec]

    # -- the run loop ---------------------------------------------------------------------------------
    def at_boundary(self, loop: "RunLoop") -> None:
        """Right before the parameter snapshot of a chunk."""
        stats = loop.pacer.stats
        fps = float(stats.fps_out or 24.0)
        frames = int(loop._frames_needed())
        timing = Timing(now=self.now(), latency=loop.last_latency_ms / 1e3,
                        buffered=int(stats.buffered), fps=fps, chunk_frames=frames,
                        offset=float(self._param("beat_offset_ms", 0.0)) / 1e3)
        for armed in self.quantizer.due(timing):
            try:
                armed.apply()
            except Exception as exc:  # e.g. a preset value the schema now refuses
                self._error(f"cue '{armed.label}' could not be applied: {exc}")
        updates: dict[str, Any] = {}
        if "tempo" in self.store.schema:
            p = self.store.schema["tempo"]
            tempo = round(min(max(self.clock.tempo, p.min), p.max), 2)  # Link allows 20..999
            if abs(self.store.get("tempo") - tempo) > 0.005:
                updates["tempo"] = tempo  # a Link peer (or a tap) moved it
        beats = float(self._param("transition_beats", 0.0))
        if beats > 0 and "transition_chunks" in self.store.schema:
            chunks = beats_to_chunks(beats, self.clock.tempo, fps, frames)
            if chunks != self.store.get("transition_chunks"):
                updates["transition_chunks"] = chunks
        if updates:
            self.store.apply(updates, origin="stage")
        rec = self.recorder.current if self.recorder is not None else None
        if rec is not None and rec.dropped > self._reported_drops:
            self._error(f"recording: {rec.dropped} frames dropped so far (the encoder cannot keep "
                        "up; the output is not affected)")
            self._reported_drops = rec.dropped

    def status(self) -> dict[str, Any]:
        t = self.now()
        s = self.recorder.status() if self.recorder is not None else None
        active = bool(s and s.active)
        return {
            "tempo": float(self.clock.tempo),
            "beat": float(self.clock.beat_at(t)),
            "phase": float(self.clock.phase_at(t)),
            "link_peers": int(self.clock.peers),
            "armed": len(self.quantizer.pending),
            "recording": int(active),
            "record_frames": int(s.frames) if active else 0,
            "record_dropped": int(s.dropped) if active else 0,
        }
