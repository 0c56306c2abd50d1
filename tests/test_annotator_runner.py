"""The off-thread annotator runner: jobs run on a worker, newest first per key, the caller never
waits; a slow annotator (gated by events, never by sleeps) leaves the caller going with the last
map and a notice; errors and resets are reported and discarded correctly."""
from __future__ import annotations

import threading

import pytest
import torch

from vacelive.engine.conditioning.runner import AnnotatorRunner, ChunkMaps, fit_count

TIMEOUT = 10.0  # only a bound for a broken test; nothing waits on time to happen


class Gate:
    """A fake annotator job that blocks until released; counts calls and what it saw."""

    def __init__(self):
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.seen: list[float] = []

    def job(self, value: float):
        def run():
            self.seen.append(value)
            self.entered.release()
            assert self.release.acquire(timeout=TIMEOUT)
            return torch.full((2, 3, 4, 4), value)
        return run


@pytest.fixture
def runner():
    r = AnnotatorRunner("cpu")
    yield r
    r.close()


def test_a_job_runs_on_the_worker_and_its_map_is_kept(runner):
    threads = []
    runner.submit("a", lambda: threads.append(threading.current_thread().name) or torch.ones(1, 3, 2, 2), seq=5)
    assert runner.wait_idle(TIMEOUT)
    done = runner.take("a")
    assert done.seq == 5 and torch.equal(done.frames, torch.ones(1, 3, 2, 2)) and done.cost_ms >= 0
    assert threads == ["annotators"]
    assert runner.take("b") is None


def test_a_waiting_job_is_replaced_by_newer_frames(runner):
    gate = Gate()
    runner.submit("a", gate.job(1.0), seq=1)
    assert gate.entered.acquire(timeout=TIMEOUT)  # job 1 runs
    runner.submit("a", gate.job(2.0), seq=2)  # waits ...
    runner.submit("a", gate.job(3.0), seq=3)  # ... and is replaced: only the newest frames matter
    gate.release.release()
    assert gate.entered.acquire(timeout=TIMEOUT)
    gate.release.release()
    assert runner.wait_idle(TIMEOUT)
    assert gate.seen == [1.0, 3.0] and runner.jobs_replaced == 1
    assert runner.take("a").seq == 3


def test_slow_annotator_never_stalls_the_caller_and_reuses_the_last_map(runner):
    """The annotator takes longer than several chunks: every chunk still gets a map at once (the
    newest finished one) with a notice and the lag; the map catches up when the job finishes."""
    gate = Gate()
    maps = ChunkMaps(runner)
    notes: list[str] = []
    assert maps("depth", gate.job(0.0), seq=0, n=3, notes=notes) is None  # first map not ready
    assert "starting" in notes[0]
    assert gate.entered.acquire(timeout=TIMEOUT)
    gate.release.release()  # the first job finishes
    assert runner.wait_idle(TIMEOUT)
    got = []
    for seq in range(1, 6):  # five chunks while the next job hangs: each returns at once
        notes = []
        maps.begin_chunk()
        m = maps("depth", gate.job(float(seq)), seq=seq, n=3, notes=notes)
        got.append((m[0, 0, 0, 0].item(), maps.lag["depth"], bool(notes)))
        if seq == 1:
            assert gate.entered.acquire(timeout=TIMEOUT)  # job 1 runs (and hangs); 2..5 replace each other
    assert got == [(0.0, 0, False), (0.0, 1, True), (0.0, 2, True), (0.0, 3, True), (0.0, 4, True)]
    assert maps.reused == 4 and "slower than a chunk" in " ".join(notes)
    assert maps.timings()["annotator_lag"] == 4.0
    gate.release.release()  # job 1 ends; the newest frames (chunk 5) run next
    assert gate.entered.acquire(timeout=TIMEOUT)
    gate.release.release()
    assert runner.wait_idle(TIMEOUT)
    assert gate.seen == [0.0, 1.0, 5.0]
    notes = []
    maps.begin_chunk()
    gate.release.release()  # lets the job this call submits finish whenever it runs
    m = maps("depth", gate.job(6.0), seq=6, n=3, notes=notes)
    assert m[0, 0, 0, 0].item() == 5.0 and maps.lag["depth"] == 0 and notes == []


def test_errors_are_reported_until_a_newer_map_exists(runner):
    maps = ChunkMaps(runner)

    def broken():
        raise RuntimeError("Depth annotator: weights not found")

    notes = []
    maps("depth", broken, seq=0, n=2, notes=notes)
    assert runner.wait_idle(TIMEOUT)
    notes = []
    assert maps("depth", lambda: torch.zeros(2, 3, 2, 2), seq=1, n=2, notes=notes) is None
    assert notes == ["Depth annotator: weights not found"]
    assert runner.wait_idle(TIMEOUT)
    notes = []
    assert maps("depth", lambda: torch.zeros(2, 3, 2, 2), seq=2, n=2, notes=notes) is not None and notes == []


def test_clear_discards_a_running_job_and_the_kept_maps(runner):
    gate = Gate()
    runner.submit("a", lambda: torch.zeros(1, 3, 1, 1), seq=0)
    assert runner.wait_idle(TIMEOUT)
    runner.submit("a", gate.job(1.0), seq=1)
    assert gate.entered.acquire(timeout=TIMEOUT)
    runner.clear()
    assert runner.take("a") is None
    gate.release.release()
    assert runner.wait_idle(TIMEOUT)
    assert runner.take("a") is None  # the job started before the reset is not published


def test_keys_queue_independently_in_submission_order(runner):
    order = []
    gate = Gate()
    runner.submit("slow", gate.job(0.0), seq=0)
    assert gate.entered.acquire(timeout=TIMEOUT)
    runner.submit("depth", lambda: order.append("depth") or torch.zeros(1, 3, 1, 1), seq=1)
    runner.submit("pose", lambda: order.append("pose") or torch.zeros(1, 3, 1, 1), seq=1)
    gate.release.release()
    assert runner.wait_idle(TIMEOUT)
    assert order == ["depth", "pose"] and runner.take("pose").seq == 1


def test_fit_count_keeps_the_newest_or_repeats_the_last():
    x = torch.arange(4.0).view(4, 1, 1, 1)
    assert fit_count(x, 2).flatten().tolist() == [2.0, 3.0]
    assert fit_count(x[:2], 4).flatten().tolist() == [0.0, 1.0, 1.0, 1.0]


@pytest.mark.gpu
def test_cuda_jobs_run_on_their_own_stream_and_published_maps_are_complete():
    dev = torch.device("cuda")
    r = AnnotatorRunner(dev)
    try:
        x = torch.rand(12, 3, 480, 832, device=dev)
        x.mul_(2).add_(1)  # queued on the caller's stream just before submit: the job must see it
        seen = []

        def job():
            seen.append(torch.cuda.current_stream(dev))
            return (x * 3).sqrt()

        r.submit("a", job, seq=0)
        assert r.wait_idle(TIMEOUT)
        done = r.take("a")
        assert seen[0] != torch.cuda.default_stream(dev)
        assert torch.equal(done.frames, (x * 3).sqrt()) and done.cost_ms > 0
    finally:
        r.close()
