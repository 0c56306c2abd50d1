"""The run loop: parameter snapshot → ChunkRequest → generator.step() → pacer → output texture.

One thread, one chunk at a time, forever:

1. wait while paused (the pacer keeps showing the last frame), and in fixed-fps mode while more
   than a chunk is already queued (generating further ahead only adds latency);
2. take ONE parameter snapshot (the chunk boundary: OSC changes, preset morph steps, actions);
3. assemble the request: `request_fields(snapshot)` (bridge/run/request_fields.py) + the newest `generator.next_chunk_frames`
   control frames (FrameHistory.window: never an old backlog) + the newest mask + references and
   extension anchors when they changed;
4. `generator.step()`; its frames (GPU tensors when local) are copied to pinned host memory in one
   go on this thread (bridge/transports/staging.py says why) and go to the Pacer, which emits them
   one by one at a steady rate to the sink (Spout's CUDA zero-copy path keeps the GPU tensors);
5. a chunk that raises is logged and reported (/vace/error) and nothing is pushed: the pacer holds
   the last frame, the output never stops, the next chunk is tried (with a short back-off while
   failures repeat). Notices of the result go to /vace/notice.

Observers (`add_observer`) see a ChunkRecord of every attempt: the demo's summary and the tests
read what each request carried and when it ran.
"""
from __future__ import annotations

import ctypes
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

from vacelive.bridge.latency import LatencyTracker
from vacelive.bridge.pacer import Pacer
from vacelive.bridge.stage import stage_status
from vacelive.bridge.run.inputs import ExtensionInput, RefsInput
from vacelive.bridge.run.v2v_input import V2VInput
from vacelive.bridge.run.media import write_png
from vacelive.bridge.run.request_fields import request_fields
from vacelive.bridge.store import ParamStore, Snapshot
from vacelive.bridge.transports.staging import ChunkStager, takes_cuda_frames
from vacelive.engine.request import ChunkRequest, ChunkResult, Generator

log = logging.getLogger("vacelive.bridge.run")


class Reporter(Protocol):
    """Where run-loop messages go: OscServer has both (/vace/notice, /vace/error)."""

    def notice(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...


class LogReporter:
    def notice(self, message: str) -> None:
        log.info("%s", message)

    def error(self, message: str) -> None:
        log.warning("%s", message)


@dataclass(frozen=True)
class ChunkRecord:
    """One attempt of the run loop (successful or not)."""

    seq: int  # attempts so far, from 1
    boundary: float  # time.monotonic() just before the parameter snapshot was taken
    snapshot: Snapshot
    request: ChunkRequest | None
    result: ChunkResult | None
    error: str | None
    started: float  # time.monotonic() right after the snapshot
    finished: float

    @property
    def latency_ms(self) -> float:
        return (self.finished - self.started) * 1e3


class _Tap:
    """The sink as the pacer sees it: remembers the frame on screen (for /vace/snapshot) and
    hands each sent frame to its listeners (the recorder), which must return at once."""

    def __init__(self, sink: Any) -> None:
        self._send = sink.send if hasattr(sink, "send") else sink
        self.last: Any = None
        self.sent = 0
        self.listeners: list[Callable[[Any], None]] = []

    def send(self, frame: Any) -> None:
        self._send(frame)
        self.last = frame
        self.sent += 1
        for fn in self.listeners:
            try:
                fn(frame)
            except Exception:  # a listener never stops the output
                log.exception("output listener failed")


_DIGITS = re.compile(r"\d+(\.\d+)?")


class _ErrorGate:
    """Repeated identical errors (an engine that stays down) are reported once, then at most every
    `every` seconds with a count, so OSC surfaces and logs are not flooded."""

    def __init__(self, report: Callable[[str], None], every: float = 2.0) -> None:
        self._report, self.every = report, every
        self._last: str | None = None
        self._since = 0.0
        self._repeats = 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        key = _DIGITS.sub("#", message)  # "unreachable for 1.5 s" and "... 2.0 s" are one error
        if key != self._last:
            self._last, self._since, self._repeats = key, now, 0
            self._report(message)
        elif now - self._since >= self.every:
            self._report(f"{message} (repeated {self._repeats + 1} times)")
            self._since, self._repeats = now, 0
        else:
            self._repeats += 1

    def clear(self) -> None:
        self._last = None


def _release_memory() -> None:
    """Hand memory a stopped sender's frames held back to the system: the CUDA caching
    allocator's unused blocks, and glibc's free heap pages (once glibc has raised its mmap
    threshold, 16 MB frames come from the heap and free() alone keeps those pages). torch is
    never imported here (a relay has none)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # a C library other than glibc
            pass


def _check_frames(result: Any) -> None:
    frames = getattr(result, "frames", None)
    shape = tuple(getattr(frames, "shape", ()))
    if len(shape) != 4 or shape[-1] != 4 or "uint8" not in str(getattr(frames, "dtype", "")):
        raise TypeError(f"generator returned frames of shape {shape} "
                        f"{getattr(frames, 'dtype', type(frames).__name__)}; expected uint8 [F,H,W,4]")


def graph_status(graphs: Any) -> dict[str, int]:
    """/vace/status graph_captures / graph_fallbacks from the engine's describe()["cuda_graphs"]
    (a dict of counters while CUDA graphs run, else a string saying why not)."""
    counts = graphs if isinstance(graphs, dict) else {}
    return {"graph_captures": int(counts.get("captures", 0) or 0),
            "graph_fallbacks": int(counts.get("fallbacks", 0) or 0)}


class RunLoop:
    def __init__(
        self,
        generator: Generator,
        store: ParamStore,
        sink: Any,
        *,
        control: Any = None,  # FrameHistory of the control/source video
        mask: Any = None,  # FrameHistory of the mask texture
        ref: Any = None,  # FrameHistory of the live reference texture
        input_video: Any = None,  # FrameHistory of the V2V input texture (None: control is the input)
        reporter: Reporter | None = None,
        snapshot_dir: str | Path = "vacelive-snapshots",
        pacer: Pacer | None = None,
        pacer_options: dict[str, Any] | None = None,
        idle_sleep: float = 0.01,
        max_backoff: float = 1.0,
    ) -> None:
        self.generator = generator
        self.store = store
        self.control, self.mask = control, mask
        self.reporter = reporter or LogReporter()
        self.snapshot_dir = Path(snapshot_dir)
        self.idle_sleep = idle_sleep
        self.max_backoff = max_backoff
        self.tap = _Tap(sink)
        fps = store.get("output_fps")
        self.pacer = pacer or Pacer(self.tap, target_fps=fps or None, **(pacer_options or {}))
        # each chunk to pinned host memory on this thread, kept until the pacer cannot hold a frame
        # of it (+1: the held frame): the pacer thread then makes no CUDA call
        self._stage = None if takes_cuda_frames(sink) else \
            ChunkStager(keep_frames=int(getattr(self.pacer, "capacity", 36)) + 1)
        # control frame read -> output frame sent, per frame (bridge/latency.py)
        self.latency = LatencyTracker()
        self.tap.listeners.append(self.latency.sent)
        self._arrived: tuple = ()  # arrival stamps of the control window of the chunk being built
        late = getattr(generator, "set_late_video", None)
        if late is not None:  # a local engine re-reads the newest frames right before its VACE encode
            late(self._late_video if control is not None else None)
        self.refs = RefsInput(ref)
        self.v2v_input = V2VInput(input_video)
        self.extension = ExtensionInput()
        store.add_listener(self.refs.writes)
        store.add_listener(self.extension.writes)
        self._error = _ErrorGate(self.reporter.error)
        self._observers: list[Callable[[ChunkRecord], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self._failures = 0  # consecutive
        self._last_notices: frozenset[str] = frozenset()
        self._output_fps = fps
        self._force_refs = False
        self._control_releases = 0
        self.chunks = 0  # successful chunks
        self.errors = 0  # failed chunks
        self.last_chunk_index = -1
        self.last_latency_ms = 0.0
        self.last_timings: dict[str, float] = {}  # the last chunk's ChunkResult.timings_ms
        self.paused = False
        self.skipped = 0  # chunks the engine skipped (similarity skip: the last frame again)
        self.last_noise_scale: float | None = None  # V2V noise scale of the last chunk (None: text)
        self._throttle = False  # the last chunk was skipped: pace the next one on the output
        self.stage: Any = None  # bridge.stage.Stage (tempo, quantised changes, recording)
        self.describe: dict[str, Any] = {}
        try:
            self.describe = dict(generator.describe())
        except Exception:  # a remote engine may not have answered yet
            pass

    # -- lifecycle ----------------------------------------------------------------------------
    def add_observer(self, fn: Callable[[ChunkRecord], None]) -> None:
        self._observers.append(fn)

    def start(self) -> "RunLoop":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="run-loop", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0, drain: float = 0.0) -> None:
        """Stop after the chunk in progress (bounded wait), then stop the pacer; with `drain` > 0
        the frames still buffered are played out first (for at most `drain` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("run loop still inside generator.step() after %.0f s; leaving it", timeout)
            self._thread = None
        deadline = time.monotonic() + drain
        while drain > 0 and self.pacer.stats.buffered and time.monotonic() < deadline:
            time.sleep(0.005)
        self.pacer.stop()
        self.store.remove_listener(self.refs.writes)
        self.store.remove_listener(self.extension.writes)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- status (/vace/status/*, called from the OSC feedback thread) -------------------------------
    def status(self) -> dict[str, Any]:
        ps = self.pacer.stats
        lat = self.latency.percentiles()
        return {
            # no frames are made while paused or while chunks fail (an engine that is down)
            "fps": 0.0 if self.paused or self._failures else float(ps.fps_generation or 0.0),
            "fps_out": float(ps.fps_out),
            "latency_ms": float(self.last_latency_ms),
            "chunk": int(self.last_chunk_index),
            "dropped": int(ps.dropped + ps.repeated),
            "gpu_mem_mb": float(self._gpu_mem_mb()),
            "errors": int(self.errors),
            "paused": bool(self.paused),
            "jitter_p99_ms": float(ps.jitter_p99_ms),
            "annotator_ms": float(self.last_timings.get("annotator", 0.0)),
            "annotator_lag": int(self.last_timings.get("annotator_lag", 0)),
            "noise_scale_used": -1.0 if self.last_noise_scale is None else float(self.last_noise_scale),
            "skipped": int(self.skipped),
            # compiles during chunks (engine counters; a remote engine reports it in describe)
            "recompiles": int(self.describe.get("recompiles", 0) or 0),
            **graph_status(self.describe.get("cuda_graphs")),
            "control_latency_p50_ms": float(lat["p50_ms"]),
            "control_latency_p99_ms": float(lat["p99_ms"]),
            **stage_status(self.stage),
        }

    def _gpu_mem_mb(self) -> float:
        remote = self.describe.get("gpu_mem_mb")
        if isinstance(remote, (int, float)):
            return float(remote)
        torch = sys.modules.get("torch")  # never imported here: no GPU memory of ours (a relay)
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.memory_allocated() / 2**20
        return 0.0

    # -- the loop -----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # a bug in assembly must not end the show either
                log.exception("run loop iteration failed")
                self._error(f"run loop: {type(exc).__name__}: {exc}")
                self._stop.wait(self.max_backoff)

    def _wait_ready(self) -> bool:
        """Pause and fixed-fps throttle. False when stopping."""
        while not self._stop.is_set():
            self._apply_output_fps(self.store.get("output_fps"))
            self._apply_headroom()
            if self.store.get("pause"):
                if not self.paused:
                    log.info("paused: holding the last frame")
                self.paused = True
                self._stop.wait(self.idle_sleep)
                continue
            if self.paused:
                log.info("resumed")
            self.paused = False
            # Fixed fps, or after a similarity skip (which returns at once): generating further
            # ahead than one chunk of buffered frames only adds latency.
            if (self.pacer.target_fps or self._throttle) and self.pacer.stats.buffered > self._frames_needed():
                self._stop.wait(0.002)
                continue
            return True
        return False

    def _late_video(self, n: int) -> Any:
        """The newest n control frames now (called by a local engine inside step(), right
        before its VACE encode); their arrival stamps replace the request's."""
        window = self.control.window(n, still_as_one=True) if self.control is not None else None
        if window is None:
            return None
        self._arrived = tuple(getattr(window, "arrived", ()) or ())
        return window.frames

    def _frames_needed(self) -> int:
        try:
            return max(1, int(self.generator.next_chunk_frames))
        except Exception:
            return 12

    def _apply_headroom(self) -> None:
        """The live pacer_headroom: frames left in the output buffer when a chunk arrives in
        follow mode (fewer = less latency, more = smoother)."""
        if "pacer_headroom" not in self.store.schema:
            return
        value = float(self.store.get("pacer_headroom"))
        if value != self.pacer.headroom:
            self.pacer.headroom = value
            log.info("pacer headroom: %g frames", value)

    def _apply_output_fps(self, fps: float) -> None:
        if fps != self._output_fps:
            self._output_fps = fps
            self.pacer.set_target_fps(fps or None)
            log.info("output fps: %s", f"{fps:g} (fixed)" if fps else "follows generation")

    def run_once(self) -> ChunkRecord | None:
        """One chunk boundary (the thread calls this in a loop). None when stopping."""
        if not self._wait_ready():
            return None
        if self.stage is not None:  # quantised changes due for this chunk go in its snapshot
            try:
                self.stage.at_boundary(self)
            except Exception as exc:
                log.exception("stage boundary failed")
                self._error(f"tempo/cues: {type(exc).__name__}: {exc}")
        ref_writes, ext_writes = self.refs.take_writes(), self.extension.take_writes()
        boundary = time.monotonic()
        snap = self.store.snapshot()
        started = time.monotonic()
        self._seq += 1
        request = result = None
        error = None
        try:
            request = self.build_request(snap, ref_writes, ext_writes)
            result = self.generator.step(request)
            _check_frames(result)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            result = None
        finished = time.monotonic()
        record = ChunkRecord(self._seq, boundary, snap, request, result, error, started, finished)
        if error is None:
            self._on_result(record)
        else:
            self._on_failure(record)
        if snap.action("snapshot") is not None:
            self._save_snapshot()
        for fn in list(self._observers):
            try:
                fn(record)
            except Exception:
                log.exception("run-loop observer failed")
        if error is not None:
            backoff = min(self.max_backoff, 0.05 * 2 ** min(self._failures - 1, 5))
            self._stop.wait(backoff)
        return record

    def build_request(self, snap: Snapshot, ref_writes: int | None = None,
                      ext_writes: int | None = None) -> ChunkRequest:
        fields = request_fields(snap)
        if fields["reset"]:
            # The engine's reset clears its sticky references; the refs parameter still names
            # them, so they go along with the reset chunk.
            self._force_refs = True
            try:
                # Reset first, so the control window below has the post-reset size (the first
                # chunk takes fewer frames); only if that fails does the request carry it.
                self.generator.reset()
                fields["reset"] = False
                log.info("stream reset")
            except Exception as exc:
                self._error(f"reset failed ({type(exc).__name__}: {exc}); sent with the chunk")
        known = self.describe.get("loras")
        if isinstance(known, dict):
            # The schema always has /vace/lora/pipeline; a pipeline without that LoRA (e.g.
            # self-forcing) must not hear about it every chunk. Said once if the performer moves it.
            for name in [n for n in fields["lora_scales"] if n not in known]:
                del fields["lora_scales"][name]
                if f"lora/{name}" in snap.changed:
                    self.reporter.notice(f"/vace/lora/{name}: this pipeline has no LoRA '{name}'; "
                                         "the scale is not used")
        n = self._frames_needed()
        self._arrived = ()
        if snap["video_enabled"] and self.control is not None:
            window = self.control.window(n, still_as_one=True)
            if window is not None:
                fields["video"] = window.frames
                self._arrived = tuple(getattr(window, "arrived", ()) or ())
            released = getattr(self.control, "releases", 0)
            if released != self._control_releases:  # the sender stopped: a still from now on
                self._control_releases = released
                _release_memory()
        fields.update(self.v2v_input.fields(snap.values, n, fields.get("video"), self.control))
        if snap["mask_enabled"] and self.mask is not None:
            latest = self.mask.latest()
            if latest is not None:
                fields["mask"] = latest[0]
        ref_writes = self.refs.take_writes() if ref_writes is None else ref_writes
        fields["refs"] = self.refs.update(snap["refs"], ref_writes, self._force_refs,
                                          self._error, self.reporter.notice)
        ext_writes = self.extension.take_writes() if ext_writes is None else ext_writes
        fields["extension"] = self.extension.update(snap.values, ext_writes, self._error)
        return ChunkRequest(**fields)

    def _on_result(self, record: ChunkRecord) -> None:
        result = record.result
        if record.request is not None and record.request.refs is not None:
            self._force_refs = False
        self._failures = 0
        self._error.clear()
        self.chunks += 1
        self.last_chunk_index = int(result.chunk_index)
        self.last_latency_ms = record.latency_ms
        self._throttle = bool(getattr(result, "skipped", False))
        self.skipped += self._throttle
        if not self._throttle:
            self.last_noise_scale = getattr(result, "noise_scale", None)
        self.last_timings = dict(getattr(result, "timings_ms", None) or {})
        if len(result.frames):
            chunk = self._stage(result.frames) if self._stage is not None else result.frames
            frames = [chunk[i] for i in range(len(chunk))]
            if not self._throttle:
                self.latency.register(frames, self._arrived)
            self.pacer.push(frames)
        notices = frozenset(result.notices)
        for n in result.notices:
            if n not in self._last_notices:  # the same fix-up every chunk is said once
                self.reporter.notice(n)
        self._last_notices = notices
        try:
            self.describe = dict(self.generator.describe())
        except Exception:
            pass
        self._sync_pipeline()
        log.debug("chunk %d: %d frames in %.0f ms", result.chunk_index, len(result.frames),
                  record.latency_ms)

    def _sync_pipeline(self) -> None:
        """Keep the store's load-time `pipeline` equal to what the engine reports (a relay learns
        it from the remote engine), so pipeline-only parameters are accepted or refused right."""
        name = self.describe.get("pipeline")
        schema = self.store.schema
        if not isinstance(name, str) or "pipeline" not in schema or name not in schema["pipeline"].choices:
            return
        if self.store.get("pipeline") != name:
            self.store.set_load_time("pipeline", name)

    def _on_failure(self, record: ChunkRecord) -> None:
        self._failures += 1
        self.errors += 1
        if record.request is not None and record.request.refs is not None:
            self._force_refs = True  # the engine may not have taken them: send again
        if self._failures == 1:
            log.error("chunk failed (holding the last frame): %s", record.error)
        self._error(f"chunk failed, holding the last frame: {record.error}")

    # -- snapshot action ----------------------------------------------------------------------------
    def _save_snapshot(self) -> None:
        frame = self.tap.last
        if frame is None:
            self._error("snapshot: no output frame yet")
            return
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
        path = self.snapshot_dir / f"vacelive-{stamp}-chunk{max(self.last_chunk_index, 0):06d}.png"

        def write() -> None:  # PNG encoding stays off the chunk path
            try:
                write_png(frame, path)
            except Exception as exc:
                self._error(f"snapshot: cannot write {path}: {exc}")
                return
            log.info("snapshot saved: %s", path)
            self.reporter.notice(f"snapshot saved: {path.resolve()}")

        threading.Thread(target=write, name="snapshot", daemon=True).start()
