"""Control-to-output latency (bridge/latency.py), the arrival stamps of FrameHistory, the run
loop's wiring and the live pacer_headroom. Clocks are injected or read back, never asserted."""
from __future__ import annotations

import numpy as np

from vacelive.bridge.latency import LatencyTracker
from vacelive.bridge.run.loop import RunLoop
from vacelive.bridge.store import ParamStore
from vacelive.bridge.transports.base import FrameHistory, FrameSource


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_tracker_measures_each_registered_frame_once_from_its_control_arrival():
    clock = Clock()
    tr = LatencyTracker(clock=clock)
    frames = [np.zeros((2, 2, 4), np.uint8) for _ in range(4)]
    assert tr.register(frames, [1.0, None, 1.2, 1.3]) == 3  # None: padding, not counted
    clock.t = 1.5
    tr.sent(frames[0])
    tr.sent(frames[0])  # the held frame re-sent on an underrun: not a second measurement
    tr.sent(frames[1])
    clock.t = 1.7
    tr.sent(frames[2])
    tr.sent(frames[3])
    assert [round(v, 6) for v in tr.values_ms()] == [500.0, 500.0, 400.0]
    p = tr.percentiles()
    assert p["frames"] == 3 and round(p["p50_ms"], 6) == 500.0 and round(p["p99_ms"], 6) == 500.0


def test_tracker_needs_one_control_frame_per_output_frame():
    tr = LatencyTracker()
    frames = [np.zeros((2, 2, 4), np.uint8) for _ in range(3)]
    assert tr.register(frames, [0.0, 0.0]) == 0
    assert tr.percentiles() == {"p50_ms": 0.0, "p99_ms": 0.0, "frames": 0}


def test_tracker_bounds_frames_that_never_reach_the_sink():
    tr = LatencyTracker(max_pending=4)
    frames = [np.zeros((1, 1, 4), np.uint8) for _ in range(10)]
    tr.register(frames, [0.0] * 10)
    tr.sent(frames[0])  # dropped long ago (oldest out)
    tr.sent(frames[9])
    assert tr.count == 1


class Source(FrameSource):
    name = "src"

    def __init__(self):
        self.n = 0

    @property
    def size(self):
        return (4, 2)

    @property
    def frame_counter(self):
        return self.n

    def read(self):
        self.n += 1
        return np.full((2, 4, 4), self.n % 256, np.uint8)


def test_frame_history_stamps_each_frame_on_arrival_and_pads_without_stamps():
    h = FrameHistory(Source(), depth=4, start=False)
    h.poll_once()
    h.poll_once()
    w = h.window(3)
    assert w.padded == 1 and w.arrived[0] is None
    assert w.arrived[1] is not None and w.arrived[1] <= w.arrived[2]
    for _ in range(6):  # past the depth: stamps of frames that left the history are dropped
        h.poll_once()
    w = h.window(4)
    assert all(t is not None for t in w.arrived) and len(h._arrived) <= 8


class Gen:
    next_chunk_frames = 3

    def __init__(self):
        self.i = 0

    def describe(self):
        return {}

    def reset(self):
        pass

    def step(self, request):
        from vacelive.engine.request import ChunkResult

        self.i += 1
        return ChunkResult(frames=np.zeros((3, 2, 4, 4), np.uint8), chunk_index=self.i, timings_ms={}, notices=[])


def test_run_loop_measures_control_to_sink_latency_and_applies_the_live_headroom():
    history = FrameHistory(Source(), depth=8, start=False)
    for _ in range(5):
        history.poll_once()
    store = ParamStore()
    sent = []
    loop = RunLoop(Gen(), store, sent.append, control=history, pacer_options={"start": False})
    store.set("pacer_headroom", 1.5)
    rec = loop.run_once()
    assert rec.error is None and loop.pacer.headroom == 1.5
    for _ in range(3):
        loop.pacer.tick()
        loop.pacer._next_due = None  # emit the next buffered frame at once (no sleeping)
    assert len(sent) == 3
    p = loop.latency.percentiles()
    assert p["frames"] == 3 and p["p50_ms"] >= 0.0
    status = loop.status()
    assert status["control_latency_p50_ms"] == p["p50_ms"] and "control_latency_p99_ms" in status
    loop.pacer.stop()


class LateGen(Gen):
    """Takes its control frames late, like engine.generator (frames arrive during the step)."""

    def __init__(self, history):
        super().__init__()
        self.history, self.provider, self.used = history, None, None

    def set_late_video(self, provider):
        self.provider = provider

    def step(self, request):
        for _ in range(2):  # frames that arrive while the engine encodes text / re-caches
            self.history.poll_once()
        self.used = self.provider(3)
        return super().step(request)


def test_run_loop_hands_the_engine_the_newest_control_frames_late():
    history = FrameHistory(Source(), depth=8, start=False)
    for _ in range(5):
        history.poll_once()
    gen = LateGen(history)
    loop = RunLoop(gen, ParamStore(), lambda f: None, control=history, pacer_options={"start": False})
    rec = loop.run_once()
    early = [int(f[0, 0, 0]) for f in rec.request.video]
    late = [int(f[0, 0, 0]) for f in gen.used]
    assert early == [3, 4, 5] and late == [5, 6, 7]
    assert loop._arrived == history.window(3).arrived  # latency is measured from the late frames
    loop.pacer.stop()
    RunLoop(gen, ParamStore(), lambda f: None, pacer_options={"start": False}).pacer.stop()
    assert gen.provider is None  # a loop without a control input switches it off


def test_stream_generator_encodes_the_late_frames():
    import torch

    from vacelive.engine.generator import StreamGenerator
    from vacelive.engine.request import ChunkRequest, Prompt

    rng = np.random.default_rng(0)
    early = rng.integers(0, 255, (9, 48, 64, 4), dtype=np.uint8)
    late = rng.integers(0, 255, (9, 48, 64, 4), dtype=np.uint8)

    def run(video, provider=None):
        gen = StreamGenerator.random("tiny", width=64, height=48, codec="tae", seed=1)
        gen.set_late_video(provider)
        return gen.step(ChunkRequest(prompts=[Prompt("x")], video=video, seed=2)).frames

    got = run(early, provider=lambda n: late[:n])
    assert torch.equal(got, run(late))
    assert not torch.equal(got, run(early))
