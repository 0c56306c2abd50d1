"""Annotators inside the stream: an annotator slower than a chunk (gated by semaphores, never by
sleeps) leaves the run loop producing chunks, reusing the last map, with the lag in
/vace/status and a notice; layout boxes and an overlay reach VACE as the control video."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from vacelive.bridge import layout as osc_layout
from vacelive.bridge.run.loop import RunLoop
from vacelive.bridge.store import ParamStore
from vacelive.bridge.transports import FrameHistory
from vacelive.engine.codecs import random_codec
from vacelive.engine.conditioning import VaceConditioner
from vacelive.engine.conditioning.annotators import PLUGINS, gray, overlay, register_annotator, scribble
from vacelive.engine.conditioning.inputs import to_signed
from vacelive.engine.conditioning.layout import render
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkRequest, Prompt
from test_runloop import CountingSource, Notes, feed

pytestmark = pytest.mark.usefixtures("single_thread")
TIMEOUT = 30.0  # a bound for a broken test only


class GatedAnnotator:
    """A weight-based annotator that finishes only when the test lets it."""

    def __init__(self):
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.calls = 0

    def plugin(self, models, device, dtype):
        def annotate(frames):
            self.calls += 1
            self.entered.release()
            assert self.release.acquire(timeout=TIMEOUT)
            return 1.0 - frames
        return annotate


@pytest.fixture
def gated():
    saved = dict(PLUGINS)
    g = GatedAnnotator()
    register_annotator("depth", g.plugin)
    yield g
    for _ in range(8):
        g.release.release()  # never leave the worker blocked
    PLUGINS.clear()
    PLUGINS.update(saved)


def test_a_slow_annotator_never_stalls_the_stream_and_is_reported(gated, tmp_path):
    gen = StreamGenerator.random("tiny", width=32, height=32, codec="tae", seed=0, vace=True)
    store = ParamStore()
    store.apply({"annotator": "depth", "prompt": "a cat"})
    history = FrameHistory(CountingSource(), depth=24, start=False)
    notes = Notes()
    loop = RunLoop(gen, store, lambda f: None, control=history, reporter=notes,
                   pacer_options={"start": False}, snapshot_dir=tmp_path)
    try:
        feed(history, 12)
        assert loop.run_once().error is None  # chunk 1: the first map is not ready: no video yet
        assert any("starting" in n for n in notes.notices)
        assert gated.entered.acquire(timeout=TIMEOUT)
        gated.release.release()  # the first map finishes
        loop.generator.conditioner.maps.runner.wait_idle(TIMEOUT)
        feed(history, 12)
        assert loop.run_once().error is None  # chunk 2: uses chunk 1's map; its own job hangs
        assert loop.status()["annotator_lag"] == 0
        assert gated.entered.acquire(timeout=TIMEOUT)
        lags = []
        for _ in range(4):  # the annotator stays stuck: chunks keep coming, counted
            feed(history, 12)
            rec = loop.run_once()
            assert rec.error is None and len(rec.result.frames) == 12
            lags.append(loop.status()["annotator_lag"])
        assert loop.chunks == 6 and lags == [1, 2, 3, 4]
        assert sum("slower than a chunk" in n for n in notes.notices) == 1  # said once, not every chunk
        assert loop.status()["annotator_ms"] >= 0.0 and gated.calls == 2
        gated.release.release()  # the stuck job ends; the newest frames run next
        assert gated.entered.acquire(timeout=TIMEOUT)
        gated.release.release()
        loop.generator.conditioner.maps.runner.wait_idle(TIMEOUT)
        feed(history, 12)
        loop.run_once()
        assert loop.status()["annotator_lag"] == 0  # caught up
        assert gated.entered.acquire(timeout=TIMEOUT)  # this chunk's job started
        assert gated.calls == 4  # 2 + the last stuck chunk's frames + this chunk's (never the 3 replaced ones)
    finally:
        gated.release.release()
        loop.stop()
        gen.conditioner.close()


class Spy:
    """The conditioner's encoder input: what VACE is given as the chunk's video."""

    def __init__(self, cond):
        self.videos = []
        inner = cond.encoder.encode

        def encode(video, mask, shape, **kw):
            self.videos.append(None if video is None else video.clone())
            return inner(video, mask, shape, **kw)
        cond.encoder.encode = encode


@pytest.fixture
def cond():
    c = VaceConditioner(random_codec("tae", seed=5), 32, 32, "cpu", torch.float32)
    yield c
    c.close()


def test_osc_boxes_are_the_control_video_and_glide_between_chunks(cond):
    spy = Spy(cond)
    boxes = osc_layout.with_box((), ["a", 0.25, 0.25, 0.5, 0.5])
    r = ChunkRequest(prompts=[Prompt("x")], annotator="layout", layout=osc_layout.request_layout(boxes))
    assert cond.prepare(r, first_chunk=True, num_frames=9) is not None and str(cond.tasks) == "control"
    want = to_signed(render([{"a": (0.25, 0.25, 0.5, 0.5)}] * 9, 32, 32)).transpose(0, 1)[None]
    assert torch.equal(spy.videos[0], want)
    moved = osc_layout.with_box(boxes, ["a", 0.5, 0.25, 0.25, 0.5])
    r = ChunkRequest(prompts=[Prompt("x")], annotator="layout", layout=osc_layout.request_layout(moved))
    cond.prepare(r, first_chunk=False, num_frames=12)
    x_left = [(spy.videos[1][0, 0, i] == -1).nonzero()[:, 1].min().item() for i in range(12)]
    assert x_left == sorted(x_left) and x_left[0] == 8 - 1 and x_left[-1] > x_left[0]  # gliding right
    cleared = ChunkRequest(prompts=[Prompt("x")], annotator="layout", layout=None)
    assert cond.prepare(cleared, first_chunk=False, num_frames=12) is None  # no boxes: text only
    assert any("no boxes" in n for n in cond.notices)


def test_overlay_of_two_annotators_reaches_vace(cond):
    spy = Spy(cond)
    g = torch.Generator().manual_seed(0)
    video = torch.zeros(9, 32, 32, 3)
    video[:, 8:24, 8:24] = torch.rand(3, generator=g)
    r = ChunkRequest(prompts=[Prompt("x")], video=video.numpy(), annotator="gray", annotator_overlay="scribble")
    cond.prepare(r, first_chunk=True, num_frames=9)
    x = video.permute(0, 3, 1, 2)
    want = to_signed(overlay(gray(x), scribble(x), 0.0)).transpose(0, 1)[None]
    assert torch.allclose(spy.videos[0], want, atol=1e-6)
    assert (spy.videos[0] == 1.0).any() and not torch.equal(want, to_signed(gray(x)).transpose(0, 1)[None])


def osc(address, *args):
    from pythonosc.osc_message_builder import OscMessageBuilder

    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build()


def bundle(*messages):
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder

    b = OscBundleBuilder(IMMEDIATELY)
    for m in messages:
        b.add_content(m)
    return b.build().dgram


def test_osc_layout_addresses_edit_the_boxes_in_one_packet():
    from vacelive.bridge.osc.server import OscConfig, OscServer

    store = ParamStore()
    server = OscServer(store, None, OscConfig(port=0, oscquery_port=0)).start()
    try:
        _edit_boxes(server, store)
        assert server.rejected == 1
    finally:
        server.stop()


def _edit_boxes(server, store):
    server.handle_datagram(bundle(osc("/vace/layout/box", "car", 0.1, 0.2, 0.3, 0.4),
                                  osc("/vace/layout/box", "sun", 0.5, 0.0, 0.2, 0.2),
                                  osc("/vace/layout/box", "car", 0.15, 0.2, 0.3, 0.4)), None)
    assert osc_layout.request_layout(store.get("layout_boxes")) == {
        "car": pytest.approx((0.15, 0.2, 0.3, 0.4)), "sun": pytest.approx((0.5, 0.0, 0.2, 0.2))}
    server.handle_datagram(osc("/vace/layout/box", "bad", 0.1, 0.2, 0.0, 0.4).dgram, None)  # refused
    server.handle_datagram(osc("/vace/layout/remove", "sun").dgram, None)
    assert list(osc_layout.request_layout(store.get("layout_boxes"))) == ["car"]
    server.handle_datagram(osc("/vace/layout/clear").dgram, None)
    assert store.get("layout_boxes") == () and osc_layout.request_layout(store.get("layout_boxes")) is None


def test_a_layout_detector_plugin_tracks_boxes_in_the_video_on_the_annotator_thread(cond):
    from vacelive.engine.conditioning import set_layout_detector

    spy = Spy(cond)
    seen = []

    def detector(frames):  # a "tracker": one box whose x follows the frame's brightness
        seen.append(threading.current_thread().name)
        return [{"obj": (float(f.mean()) * 0.5, 0.25, 0.25, 0.5)} for f in frames]

    set_layout_detector(detector)
    try:
        video = np.full((9, 32, 32, 3), 128, np.uint8)
        r = ChunkRequest(prompts=[Prompt("x")], video=video, annotator="layout")
        assert cond.prepare(r, first_chunk=True, num_frames=9) is None  # first map not ready yet
        assert any("starting" in n for n in cond.notices)
        assert cond.maps.runner.wait_idle(TIMEOUT)
        r = ChunkRequest(prompts=[Prompt("x")], video=np.full((12, 32, 32, 3), 128, np.uint8), annotator="layout")
        cond.prepare(r, first_chunk=False, num_frames=12)
        box = (128 / 255 * 0.5, 0.25, 0.25, 0.5)
        want = to_signed(render([{"obj": box}] * 12, 32, 32)).transpose(0, 1)[None]
        assert torch.allclose(spy.videos[-1], want) and set(seen) == {"annotators"}
    finally:
        set_layout_detector(None)
