"""The V2V input in the run loop: the input texture beside the control texture (newest frames
win), the control texture as the input when no input texture delivers, the similarity skip's
pacing, the V2V parameters reaching the request and the wire, and the status fields."""
from __future__ import annotations

import numpy as np
import torch

from vacelive.bridge.link import wire
from pattern_engine import PatternGenerator
from vacelive.bridge.run.loop import RunLoop
from vacelive.bridge.store import ParamStore
from vacelive.bridge.transports import FrameHistory
from vacelive.engine.request import ChunkRequest, ChunkResult
from runloop_support import Recorder
from test_runloop import CountingSource, Notes, feed


def counters(frames) -> list[int]:
    return list(frames[:, 0, 0, 0].astype(int) + 256 * frames[:, 0, 0, 1].astype(int))


def make(store=None, **kw):
    gen = Recorder(PatternGenerator(96, 64))
    store = store or ParamStore(initial={"input_mode": "video"})
    loop = RunLoop(gen, store, lambda f: None, reporter=Notes(), pacer_options={"start": False}, **kw)
    return loop, gen, store


def test_input_texture_gives_the_newest_frames_beside_the_control_texture():
    control = FrameHistory(CountingSource(), depth=24, start=False)
    camera = FrameHistory(CountingSource(w=48, h=32), depth=24, start=False)
    loop, gen, store = make(control=control, input_video=camera)
    feed(control, 10)
    feed(camera, 50)  # a backlog: only the newest frames may be used
    req = loop.run_once().request
    assert counters(req.input_video) == list(range(42, 51)) and req.input_video.shape[1:] == (32, 48, 4)
    assert counters(req.video) == list(range(2, 11))  # the control stays VACE's video
    assert req.input_mode == "video" and req.noise_scale == 0.7
    feed(camera, 3)
    assert counters(loop.run_once().request.input_video) == list(range(42, 54))
    store.set("input_mode", "text")
    assert loop.run_once().request.input_video is None
    loop.stop()


def test_without_input_frames_the_control_texture_is_the_input():
    control = FrameHistory(CountingSource(), depth=24, start=False)
    silent = FrameHistory(CountingSource(), depth=24, start=False)  # configured, nothing arrived
    loop, gen, store = make(control=control, input_video=silent)
    feed(control, 20)
    req = loop.run_once().request
    assert req.input_video is None and counters(req.video) == list(range(12, 21))  # sent once, as video
    store.set("video_enabled", False)  # no VACE control: the control window goes as the input
    req = loop.run_once().request
    assert req.video is None and counters(req.input_video) == list(range(9, 21))
    loop.stop()


def test_v2v_parameters_reach_the_request_and_survive_the_wire():
    loop, gen, store = make()
    store.apply({"noise_scale": 0.35, "noise_controller": True, "similarity_skip": True,
                 "similarity_threshold": 0.95, "similarity_max_skip": 4})
    req = loop.run_once().request
    assert (req.noise_scale, req.noise_controller, req.similarity_skip, req.similarity_threshold,
            req.similarity_max_skip) == (0.35, True, True, 0.95, 4)
    frames = np.zeros((12, 16, 16, 4), np.uint8)
    packed, blobs = wire.encode_request(ChunkRequest(input_mode="video", input_video=frames, noise_scale=0.2))
    back = wire.unpack_value(packed, blobs)
    assert back.input_mode == "video" and back.noise_scale == 0.2 and np.array_equal(back.input_video, frames)
    result = ChunkResult(frames=torch.zeros(4, 8, 8, 4, dtype=torch.uint8), chunk_index=3, skipped=True, noise_scale=0.5)
    header, blobs = wire.encode_result(result)
    back = wire.decode_result(header, blobs)
    assert back.skipped and back.noise_scale == 0.5
    loop.stop()


class Skipping(PatternGenerator):
    """Skips every chunk after the first, as the engine's similarity skip does on a still input."""

    def step(self, request):
        result = super().step(request)
        if self.chunk_index > 1:
            result.skipped, result.noise_scale = True, None
        else:
            result.noise_scale = 0.6
        return result


def test_skipped_chunks_are_paced_by_the_output_and_counted_in_status():
    store = ParamStore(initial={"input_mode": "video"})
    now = [0.0]
    loop = RunLoop(Skipping(96, 64), store, lambda f: None, reporter=Notes(),
                   pacer_options={"start": False, "clock": lambda: now[0]})
    assert loop.run_once().result.noise_scale == 0.6
    assert not loop._throttle
    loop.run_once()  # the first skip returns at once and is pushed
    assert loop._throttle and loop.pacer.target_fps is None  # measured mode, yet throttled:
    assert loop.pacer.stats.buffered == 21 > loop._frames_needed()  # run_once would wait now
    for _ in range(9):  # the output plays the buffer down to one chunk
        now[0] += 1.0
        loop.pacer.tick()
    assert loop.pacer.stats.buffered == 12
    assert loop.run_once().result.skipped
    st = loop.status()
    assert st["skipped"] == 2 and st["noise_scale_used"] == 0.6
    loop.stop()


def test_a_real_tiny_generator_restyles_the_input_texture():
    from vacelive.engine.generator import StreamGenerator

    gen = StreamGenerator.random("tiny", width=32, height=32, codec="tae", vace=False)
    camera = FrameHistory(CountingSource(w=48, h=40), depth=24, start=False)
    store = ParamStore(initial={"input_mode": "video", "noise_scale": 0.5})
    loop = RunLoop(gen, store, lambda f: None, reporter=Notes(), pacer_options={"start": False},
                   input_video=camera)
    feed(camera, 30)
    for expected in (9, 12):
        rec = loop.run_once()
        assert rec.error is None and rec.result.noise_scale == 0.5 and len(rec.result.frames) == expected
        feed(camera, 12)
    assert gen.video_input.counters["encodes"] == 2 and loop.status()["noise_scale_used"] == 0.5
    store.set("noise_scale", 1.0)  # the strength fader at the top: text-to-video, no encode
    assert loop.run_once().result.noise_scale == 1.0 and gen.video_input.counters["encodes"] == 2
    loop.stop()
