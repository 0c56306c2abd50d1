"""Annotators off the generation thread: a worker that runs annotation jobs one chunk ahead.

    runner = AnnotatorRunner(device)            # one daemon thread; on CUDA its own stream
    maps = ChunkMaps(runner)
    frames = maps("depth", lambda: depth(raw), seq=chunk, notes=notices)   # never waits

`AnnotatorRunner` is generic: a job is any `() -> tensor` under a key (an annotator name, or
"depth+pose" for a composite). Per key, a job submitted while an older one still waits replaces
it (only the newest frames matter live); jobs of one key run in submission order, so a stateful
annotator (optical flow pairs each window with the last frame it saw) stays consistent on the
worker thread. The finished map of each key is kept until a newer one replaces it.

`ChunkMaps` is the per-chunk policy: submit this chunk's frames, hand back the newest finished
map. In steady state that is the previous chunk's frames: the annotator works on chunk k's
frames while chunk k generates, and chunk k + 1 uses them (one chunk of added control latency,
no added generation time). An annotator slower than a chunk never stalls the stream: its newest
map is reused (and the newest frames replace whatever was still waiting) with a notice, and
`cost_ms` / `lag` tell how far behind it is (`/vace/status/annotator_ms`, `annotator_lag`).
Until the first map of a key exists (the model is still loading), the chunk runs without the
video, with a notice.

CUDA: the worker runs its jobs on its own stream and synchronises that stream before publishing
a map, so `cost_ms` is the real cost and a published map is complete; `take()` marks the map's
memory as used on the caller's stream (record_stream) so the allocator does not hand it back to
the worker while the generation still reads it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger(__name__)

Job = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Finished:
    """The newest finished map of one key."""

    key: str
    seq: int  # the submission's sequence number (the conditioner's chunk counter)
    frames: torch.Tensor  # [F, 3, h, w] in 0..1 on the runner's device
    cost_ms: float  # wall time of the job on the worker, device work included


@dataclass
class _Pending:
    key: str
    seq: int
    fn: Job
    epoch: int
    ready: object = None  # CUDA: event recorded on the submitting stream after its inputs were written


class AnnotatorRunner:
    """One worker thread running annotation jobs, newest first per key (module doc)."""

    def __init__(self, device: torch.device | str = "cpu", *, name: str = "annotators",
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.device = torch.device(device)
        self.name = name
        self._clock = clock
        self._cv = threading.Condition()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._running: str | None = None
        self._running_job: tuple[int, float] | None = None  # (seq, start) of the job running now
        self._done: dict[str, Finished] = {}
        self._errors: dict[str, tuple[int, str]] = {}  # key -> (seq, message) of the newest failure
        self._epoch = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stream = None
        self.jobs_done = 0
        self.jobs_replaced = 0  # submitted frames that never ran because newer ones came first

    # -- caller side ------------------------------------------------------------------------------
    def submit(self, key: str, fn: Job, seq: int) -> None:
        """Queue `fn` for `key`; replaces that key's job that has not started yet. Never blocks."""
        with self._cv:
            if self._closed:
                raise RuntimeError(f"{self.name} runner is closed")
            if key in self._pending:
                self.jobs_replaced += 1
                del self._pending[key]
            self._pending[key] = _Pending(key, seq, fn, self._epoch, self._record())
            self._cv.notify()
        self._ensure_thread()

    def _record(self):
        if self.device.type != "cuda":
            return None
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    def take(self, key: str) -> Finished | None:
        """The newest finished map of `key` (None: none yet). On CUDA its memory is marked as
        used on the caller's current stream."""
        with self._cv:
            done = self._done.get(key)
        if done is not None and done.frames.is_cuda:
            done.frames.record_stream(torch.cuda.current_stream(done.frames.device))
        return done

    def error(self, key: str) -> tuple[int, str] | None:
        """(seq, message) of the newest failed job of `key`, if it is newer than its newest map."""
        with self._cv:
            err = self._errors.get(key)
            done = self._done.get(key)
        if err is None or (done is not None and done.seq > err[0]):
            return None
        return err

    def running(self, key: str) -> tuple[int, float] | None:
        """(seq, ms so far) of the job of `key` running now, if one is."""
        with self._cv:
            if self._running != key or self._running_job is None:
                return None
            seq, start = self._running_job
        return seq, (self._clock() - start) * 1e3

    def busy(self, key: str | None = None) -> bool:
        """A job (of `key`, or any) is running or waiting."""
        with self._cv:
            if key is None:
                return self._running is not None or bool(self._pending)
            return self._running == key or key in self._pending

    def clear(self) -> None:
        """Forget waiting jobs and finished maps; a job running now is discarded when it ends."""
        with self._cv:
            self._epoch += 1
            self._pending.clear()
            self._done.clear()
            self._errors.clear()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits (tests and benchmarks; the stream never calls it)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._running is None and not self._pending, timeout)

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._closed = True
            self._pending.clear()
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- worker -----------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._cv:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                    self._thread.start()

    def _work(self) -> None:
        if self.device.type == "cuda":
            self._stream = torch.cuda.Stream(self.device)
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closed or bool(self._pending))
                if self._closed:
                    return
                _, job = self._pending.popitem(last=False)
                self._running = job.key
                t0 = self._clock()
                self._running_job = (job.seq, t0)
            frames, failure = None, None
            try:
                frames = self._run(job.fn, job.ready)
            except Exception as exc:  # noqa: BLE001 - reported to the performer, the worker goes on
                failure = str(exc) or type(exc).__name__
                if not isinstance(exc, RuntimeError):
                    log.exception("annotator %s failed", job.key)
            cost = (self._clock() - t0) * 1e3
            with self._cv:
                self._running, self._running_job = None, None
                if job.epoch == self._epoch:
                    if failure is None:
                        self._done[job.key] = Finished(job.key, job.seq, frames, cost)
                        self._errors.pop(job.key, None)
                    else:
                        self._errors[job.key] = (job.seq, failure)
                    self.jobs_done += 1
                self._cv.notify_all()

    def _run(self, fn: Job, ready) -> torch.Tensor:
        with torch.no_grad():
            if self._stream is None:
                return fn()
            # the job reads frames the generation thread wrote on its stream: wait for them first
            if ready is not None:
                self._stream.wait_event(ready)
            with torch.cuda.stream(self._stream):
                out = fn()
            self._stream.synchronize()
            return out


def fit_count(frames: torch.Tensor, n: int) -> torch.Tensor:
    """A map made for another chunk length -> n frames: its newest n, or its last frame repeated."""
    f = frames.shape[0]
    if f >= n:
        return frames[f - n:]
    return torch.cat([frames, frames[-1:].expand(n - f, *frames.shape[1:])])


class ChunkMaps:
    """Per-chunk use of a runner: submit, then the newest finished map (module doc). Never waits."""

    def __init__(self, runner: AnnotatorRunner) -> None:
        self.runner = runner
        self.cost_ms: dict[str, float] = {}  # newest map's cost per key
        self.lag: dict[str, int] = {}  # chunks the map used is older than the previous chunk
        self.reused = 0  # chunks that reused a map older than one chunk

    def __call__(self, key: str, fn: Job, seq: int, n: int, notes: list[str]) -> torch.Tensor | None:
        """This chunk's map of `key` ([n, 3, h, w]) or None (none ready: the chunk goes without)."""
        self.runner.submit(key, fn, seq)
        err = self.runner.error(key)
        if err is not None:
            notes.append(err[1])
            return None
        done = self.runner.take(key)
        running = self.runner.running(key)  # a job still going counts as slow as it is so far
        if done is None:
            if running is not None:
                self.cost_ms[key], self.lag[key] = running[1], max(0, seq - 1 - running[0])
            notes.append(f"Annotator {key} is starting (first map not ready yet); the video joins "
                         "the stream when it is.")
            return None
        self.cost_ms[key] = max(done.cost_ms, running[1] if running is not None and running[0] < seq else 0.0)
        self.lag[key] = lag = max(0, seq - 1 - done.seq)
        if lag > 0:
            self.reused += 1
            notes.append(f"Annotator {key} is slower than a chunk: its newest map is reused until "
                         "the next one is ready (cost in /vace/status/annotator_ms).")
        return fit_count(done.frames, n)

    def timings(self) -> dict[str, float]:
        """For ChunkResult.timings_ms: the summed cost of this chunk's maps and the worst lag."""
        if not self.cost_ms:
            return {}
        return {"annotator": float(sum(self.cost_ms.values())), "annotator_lag": float(max(self.lag.values()))}

    def begin_chunk(self) -> None:
        self.cost_ms.clear()
        self.lag.clear()

    def clear(self) -> None:
        self.runner.clear()
        self.begin_chunk()
