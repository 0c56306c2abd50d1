"""The stage layer through the real OSC server: quantised prompt cuts and preset recalls wait for
their beat and land in the snapshot of the chunk the quantiser picks; tap tempo; beat lengths;
recording start/stop over OSC; status fields. Time is injected (no wall clock)."""
from __future__ import annotations

import types

import av
import numpy as np
import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from vacelive.bridge.osc import OscConfig, OscServer
from vacelive.bridge.presets import PresetLibrary
from vacelive.bridge.record import Recorder
from vacelive.bridge.stage import Stage, stage_status
from vacelive.bridge.store import PRESET_LOAD, ParamStore


def dgram(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class FakeLoop:
    """What the stage reads of a run loop: pacer stats, last chunk time, chunk size, the tap."""

    def __init__(self, fps=24.0, buffered=12, latency_ms=300.0, frames=12):
        self.pacer = types.SimpleNamespace(stats=types.SimpleNamespace(fps_out=fps, buffered=buffered))
        self.last_latency_ms = latency_ms
        self._frames = frames
        self.control = None
        self.tap = types.SimpleNamespace(listeners=[])
        self.stage = None

    def _frames_needed(self):
        return self._frames


@pytest.fixture
def rig(tmp_path):
    now = [0.0]
    store = ParamStore()
    presets = PresetLibrary(store.schema, user_dir=tmp_path / "presets")
    presets.save("dusk", {**store.preset_values(), "context_scale": 1.8})
    osc = OscServer(store, presets, OscConfig(port=0, oscquery_port=None)).start()
    stage = Stage(store, Recorder(tmp_path / "rec"), reporter=osc, now=lambda: now[0])
    loop = FakeLoop()
    stage.attach(loop)
    osc.stage, stage.server = stage, osc
    yield types.SimpleNamespace(now=now, store=store, osc=osc, stage=stage, loop=loop,
                                send=lambda *m: osc.handle_datagram(dgram(*m), None))
    stage.close()
    osc.stop()


def test_quantised_prompt_cut_waits_for_the_bar(rig):
    rig.send("/vace/quantize", "bar")
    rig.now[0] = 0.4  # 120 bpm: the next bar line is beat 4 = 2.0 s
    rig.send("/vace/prompt", "neon city")
    assert rig.store.get("prompt") != "neon city"
    assert rig.stage.status()["armed"] == 1
    shown = []
    for t0 in (0.5, 1.0, 1.5, 2.0):  # boundaries every 0.5 s; a chunk shows 0.5 s after its boundary
        rig.now[0] = t0
        rig.stage.at_boundary(rig.loop)
        snap = rig.store.snapshot()
        shown.append((t0 + 0.5, snap["prompt"]))
    # the chunk whose first frame is at 2.0 s (boundary 1.5 s) is the first with the new prompt
    assert [p == "neon city" for _, p in shown] == [False, False, True, True]
    assert rig.stage.status()["armed"] == 0


def test_cue_with_beat_length_arms_a_preset_morph(rig):
    rig.now[0] = 0.1
    rig.send("/vace/cue", "beat", "8beats", "/vace/preset/load", "dusk")
    assert rig.stage.last_preset == "dusk"
    rig.now[0] = 0.0  # boundary: first frame at 0.5 s = beat 1, the armed beat
    rig.stage.at_boundary(rig.loop)
    snap = rig.store.snapshot()
    action = snap.action(PRESET_LOAD)
    assert action is not None and action.args == ("dusk", 8)  # 8 beats at 120 bpm, 24 fps = 8 chunks


def test_now_grid_and_unquantised_writes_apply_at_once(rig):
    rig.send("/vace/cue", "now", "/vace/prompt", "at once")
    assert rig.store.get("prompt") == "at once"
    rig.send("/vace/quantize", "bar")
    rig.send("/vace/cue", "now", "/vace/prompt", "past the grid")  # "now" wins over quantize
    assert rig.store.get("prompt") == "past the grid"
    rig.send("/vace/quantize", "none")
    rig.send("/vace/context_scale", 1.5)  # not a quantised parameter
    assert rig.store.get("context_scale") == 1.5
    rig.send("/vace/cue", "bar")  # malformed: no inner message; refused, nothing armed
    assert rig.stage.status()["armed"] == 0


def test_tap_tempo_and_transition_beats(rig):
    for t in (10.0, 10.5, 11.0, 11.5):
        rig.now[0] = t
        rig.send("/vace/tap")
    assert rig.store.get("tempo") == pytest.approx(120.0)
    rig.send("/vace/tempo", 90.0)
    assert rig.stage.clock.tempo == 90.0
    rig.send("/vace/transition_beats", 8.0)
    rig.stage.at_boundary(rig.loop)  # 8 beats at 90 bpm = 5.33 s = 128 frames = 11 chunks
    assert rig.store.get("transition_chunks") == 11


def test_record_over_osc(rig, tmp_path):
    rig.loop.pacer.stats.fps_out = 24.0
    rig.send("/vace/record/start", "take1")
    rec = rig.stage.recorder
    assert rec.current is not None and rec.current.path.name.endswith("-take1.mp4")
    for i in range(30):
        for fn in rig.loop.tap.listeners:
            fn(np.full((48, 64, 4), i * 8, np.uint8))
    assert stage_status(rig.stage)["recording"] == 1
    rig.send("/vace/record/stop")
    rec.last.join(30)
    with av.open(str(rec.last.path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 30
    rig.send("/vace/record/stop")  # not recording: an error reply, nothing breaks
    assert stage_status(None)["recording"] == 0


def test_real_run_loop_applies_the_armed_cut_in_that_chunks_request(tmp_path):
    """A real RunLoop (run_once, pacer not started) with the stage attached: the armed prompt is
    absent from the requests before the chosen boundary and present from it on; the pacer's tap
    feeds the recorder."""
    from pattern_engine import PatternGenerator
    from vacelive.bridge.run.loop import RunLoop
    from runloop_support import Recorder as RecordingGenerator

    now = [0.0]
    store = ParamStore(initial={"output_fps": 24.0})
    gen = RecordingGenerator(PatternGenerator(96, 64))
    sent = []
    loop = RunLoop(gen, store, sent.append, pacer_options={"start": False}, snapshot_dir=tmp_path)
    stage = Stage(store, Recorder(tmp_path / "rec"), now=lambda: now[0])
    stage.attach(loop)
    try:
        store.apply({"quantize": "bar"})
        packet = types.SimpleNamespace(sender=None, changes={"prompt": "on the bar"}, actions=[],
                                       after=[])
        now[0] = 0.2
        stage.intercept(packet)  # what the OSC server does with an incoming packet
        assert packet.changes == {} and stage.status()["armed"] == 1
        prompts = []
        for t0 in (0.5, 1.0, 1.5, 2.0):
            now[0] = t0
            loop.last_latency_ms = 300.0  # L (the tiny test generator itself takes ~1 ms)
            loop.pacer.clear()  # B = 0 frames buffered: first frame at t0 + L = t0 + 0.3 s
            record = loop.run_once()
            prompts.append(record.request.prompts[0].text if record.request.prompts else "")
        # t0 = 1.5 shows at 1.8 s: 1.8 + 0.25 >= 2.0 (the bar) -> that chunk carries the cut
        assert [p == "on the bar" for p in prompts] == [False, False, True, True]
        assert set(loop.status()) >= {"tempo", "beat", "phase", "armed", "recording"}
        loop.tap.send(np.zeros((64, 96, 4), np.uint8))  # the pacer's sink path feeds listeners
        assert stage.recorder.current is None  # (nothing recorded unless started)
    finally:
        loop.stop()
        stage.close()
