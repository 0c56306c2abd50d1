"""RunLoop chunk assembly and failure behaviour, one chunk at a time (run_once) with a real
FrameHistory, real files and the deterministic PatternGenerator; threads only where the behaviour
is about time (pause)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from pattern_engine import PatternGenerator, read_stamp
from vacelive.bridge.run.generators import vace_available
from vacelive.bridge.run.loop import RunLoop
from vacelive.bridge.schema import STATUS_FIELDS
from vacelive.bridge.store import ParamStore
from vacelive.bridge.transports import FrameHistory
from vacelive.bridge.transports.base import FrameSource
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkResult
from runloop_support import Recorder, wait_until


class CountingSource(FrameSource):
    """Frames whose pixels carry their own counter (R = counter % 256, G = counter // 256)."""

    name = "counting"

    def __init__(self, w=40, h=24):
        self.w, self.h, self.n = w, h, 0
        self.pending = 0

    @property
    def size(self):
        return (self.w, self.h)

    @property
    def frame_counter(self):
        return self.n

    def read(self):
        if not self.pending:
            return None
        self.pending -= 1
        self.n += 1
        f = np.zeros((self.h, self.w, 4), np.uint8)
        f[..., 0], f[..., 1], f[..., 3] = self.n % 256, self.n // 256, 255
        return f


def feed(history: FrameHistory, n: int) -> None:
    history.source.pending += n
    while history.poll_once():
        pass


class Notes:
    def __init__(self):
        self.notices, self.errors = [], []

    def notice(self, m):
        self.notices.append(m)

    def error(self, m):
        self.errors.append(m)


def make_loop(gen=None, store=None, tmp_path=None, **kw):
    gen = gen or Recorder(PatternGenerator(96, 64))
    store = store or ParamStore()
    sent = []
    notes = Notes()
    loop = RunLoop(gen, store, sent.append, reporter=notes, pacer_options={"start": False},
                   snapshot_dir=(tmp_path / "snaps") if tmp_path else "snaps", **kw)
    return loop, gen, store, sent, notes


def png(path, color, size=(20, 10)):
    Image.new("RGBA", size, color).save(path)
    return str(path)


def test_request_uses_the_newest_consecutive_control_frames():
    history = FrameHistory(CountingSource(), depth=24, start=False)
    loop, gen, store, _, _ = make_loop(control=history)
    feed(history, 40)  # a backlog far beyond one chunk
    rec = loop.run_once()
    assert rec.error is None
    video = rec.request.video
    assert video.shape == (9, 24, 40, 4)  # first chunk: generator.next_chunk_frames == 9
    counters = video[:, 0, 0, 0].astype(int) + 256 * video[:, 0, 0, 1].astype(int)
    assert list(counters) == list(range(32, 41))  # the newest 9, in order, no gaps
    feed(history, 5)
    rec = loop.run_once()
    counters = rec.request.video[:, 0, 0, 0].astype(int) + 256 * rec.request.video[:, 0, 0, 1].astype(int)
    assert list(counters) == list(range(34, 46))  # 12 now, ending at the newest
    store.set("video_enabled", False)
    assert loop.run_once().request.video is None
    loop.stop()


def test_one_snapshot_per_chunk_and_params_reach_the_request():
    loop, gen, store, _, _ = make_loop()
    store.apply({"prompt": "a forest", "seed": 7, "context_scale": 0.5, "outpaint_direction": "left"})
    rec = loop.run_once()
    assert rec.snapshot.index == 1
    r = rec.request
    assert [(p.text, p.weight) for p in r.prompts] == [("a forest", 1.0)]
    assert (r.seed, r.context_scale, r.outpaint.left, r.outpaint.right) == (7, 0.5, 0.25, 0.0)
    assert read_stamp(rec.result.frames[0])[3] == 7  # the generator used the seed
    store.set("seed", 9)
    rec = loop.run_once()
    assert rec.snapshot.index == 2 and rec.request.seed == 9
    loop.stop()


def test_refs_are_sent_only_when_they_change(tmp_path):
    a, b = png(tmp_path / "a.png", (255, 0, 0, 255)), png(tmp_path / "b.png", (0, 0, 255, 255))
    loop, gen, store, _, notes = make_loop(tmp_path=tmp_path)
    store.set("refs", [a, b])
    r1 = loop.run_once()
    assert len(r1.request.refs) == 2 and r1.request.refs[0].shape == (10, 20, 4)
    assert read_stamp(r1.result.frames[0])[1] == 2  # the generator holds 2 sticky refs
    r2 = loop.run_once()
    assert r2.request.refs is None and read_stamp(r2.result.frames[0])[1] == 2  # kept, not resent
    # a missing file: clear error, the previous set stays in use
    store.set("refs", [a, str(tmp_path / "missing.png")])
    r3 = loop.run_once()
    assert r3.request.refs is None and read_stamp(r3.result.frames[0])[1] == 2
    assert any("missing.png: no such file" in e and "previous 2" in e for e in notes.errors)
    # the file appears and the performer re-sends the same value: now it loads
    png(tmp_path / "missing.png", (0, 255, 0, 255))
    store.set("refs", [a, str(tmp_path / "missing.png")])
    r4 = loop.run_once()
    assert len(r4.request.refs) == 2 and r4.request.refs[1][0, 0, 1] == 255
    store.set("refs", [])  # an empty list clears
    r5 = loop.run_once()
    assert r5.request.refs == [] and read_stamp(r5.result.frames[0])[1] == 0
    # unreadable (not an image)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    store.set("refs", [str(tmp_path / "bad.png")])
    assert loop.run_once().request.refs is None
    assert "cannot read as an image" in notes.errors[-1]
    loop.stop()


def test_initial_refs_from_config_are_loaded(tmp_path):
    a = png(tmp_path / "a.png", (255, 0, 0, 255))
    loop, *_ = make_loop(store=ParamStore(initial={"refs": [a]}))
    assert len(loop.run_once().request.refs) == 1
    loop.stop()


def test_ref_texture_joins_the_file_refs_and_only_new_pixels_count(tmp_path):
    src = CountingSource(16, 16)
    ref = FrameHistory(src, depth=1, start=False)
    loop, gen, store, _, _ = make_loop(ref=ref, tmp_path=tmp_path)
    store.set("refs", [png(tmp_path / "a.png", (1, 2, 3, 255))])
    feed(ref, 1)
    r = loop.run_once().request
    assert len(r.refs) == 2 and r.refs[1].shape == (16, 16, 4)
    # the sender re-publishes the same picture (new counter, same pixels): not a change
    src.n -= 1
    feed(ref, 1)
    assert loop.run_once().request.refs is None
    feed(ref, 1)  # new pixels
    assert len(loop.run_once().request.refs) == 2
    loop.stop()


def test_reset_resets_first_sizes_the_window_and_resends_refs(tmp_path):
    history = FrameHistory(CountingSource(), depth=24, start=False)
    loop, gen, store, _, _ = make_loop(control=history, tmp_path=tmp_path)
    store.set("refs", [png(tmp_path / "a.png", (9, 9, 9, 255))])
    feed(history, 30)
    for _ in range(3):
        loop.run_once()
    assert gen.inner.chunk_index == 3
    store.trigger("reset")
    rec = loop.run_once()
    assert gen.resets == 1
    assert rec.request.video.shape[0] == 9  # the first chunk's size after the reset
    assert rec.request.refs is not None and len(rec.request.refs) == 1  # sticky set restored
    assert rec.result.chunk_index == 0
    assert loop.run_once().request.refs is None
    loop.stop()


def test_a_failing_chunk_holds_the_frame_reports_and_goes_on():
    loop, gen, store, sent, notes = make_loop(gen=Recorder(PatternGenerator(96, 64), fail_on={2}))
    assert loop.run_once().error is None
    loop.pacer.tick()
    first = sent[-1]
    rec = loop.run_once()
    assert rec.error == "RuntimeError: injected failure in step 2"
    assert notes.errors and "chunk failed, holding the last frame" in notes.errors[-1]
    assert loop.errors == 1
    assert loop.run_once().error is None  # the next chunk works
    assert loop.chunks == 2
    assert sent[-1] is first  # nothing new was pushed by the failed chunk
    loop.stop()


class BadFrames(PatternGenerator):
    def step(self, request):
        r = super().step(request)
        return ChunkResult(frames=r.frames[..., :3], chunk_index=r.chunk_index)


def test_malformed_generator_frames_never_reach_the_sink():
    loop, gen, store, sent, notes = make_loop(gen=BadFrames(96, 64))
    rec = loop.run_once()
    assert "expected uint8 [F,H,W,4]" in rec.error
    assert loop.pacer.stats.buffered == 0 and notes.errors
    loop.stop()


class Noticing(PatternGenerator):
    def step(self, request):
        r = super().step(request)
        r.notices = ["control frames 40x24 fitted to 96x64 (crop)"]
        return r


def test_repeated_notices_are_reported_once():
    loop, gen, store, sent, notes = make_loop(gen=Noticing(96, 64))
    for _ in range(3):
        loop.run_once()
    assert notes.notices == ["control frames 40x24 fitted to 96x64 (crop)"]
    loop.stop()


def test_snapshot_action_writes_the_frame_on_screen(tmp_path):
    loop, gen, store, sent, notes = make_loop(tmp_path=tmp_path)
    loop.run_once()
    loop.pacer.tick()
    loop.pacer.tick()
    shown = np.asarray(sent[-1]).copy()
    store.trigger("snapshot")
    loop.run_once()
    note = wait_until(lambda: [n for n in notes.notices if n.startswith("snapshot saved")], 5, "snapshot")
    path = note[0].split(": ", 1)[1]
    saved = np.asarray(Image.open(path))
    assert path.startswith(str(tmp_path / "snaps")) and np.array_equal(saved, shown)
    loop.stop()


def test_snapshot_before_any_output_is_an_error_not_a_crash(tmp_path):
    loop, gen, store, sent, notes = make_loop(tmp_path=tmp_path)
    store.trigger("snapshot")
    assert loop.run_once().error is None
    assert "no output frame yet" in notes.errors[-1]
    loop.stop()


def test_extension_anchors_from_files(tmp_path):
    loop, gen, store, sent, notes = make_loop(tmp_path=tmp_path)
    first = png(tmp_path / "first.png", (200, 0, 0, 255), (32, 16))
    store.apply({"extension_mode": "firstframe", "extension_first": first, "extension_chunks": 3})
    ext = loop.run_once().request.extension
    assert ext.mode == "firstframe" and ext.first.shape == (16, 32, 4) and ext.last is None
    assert ext.chunks == 3
    assert loop.run_once().request.extension is None  # sent once; the engine keeps it N chunks
    store.apply({"extension_mode": "firstlastclip", "extension_last": str(tmp_path / "nope.mp4")})
    assert loop.run_once().request.extension is None
    assert "nope.mp4: no such file" in notes.errors[-1]
    store.set("extension_last", first)  # a still for a clip mode: a one-frame clip
    ext = loop.run_once().request.extension
    assert ext.first.shape == (1, 16, 32, 4) and ext.last.shape == (1, 16, 32, 4)
    loop.stop()


def test_extension_mode_none_cancels_the_running_extension(tmp_path):
    loop, gen, store, sent, notes = make_loop(tmp_path=tmp_path)
    first = png(tmp_path / "first.png", (200, 0, 0, 255), (32, 16))
    store.apply({"extension_mode": "firstframe", "extension_first": first, "extension_chunks": 8})
    assert loop.run_once().request.extension.chunks == 8
    assert loop.run_once().request.extension is None
    store.set("extension_mode", "none")
    cancel = loop.run_once().request.extension
    assert cancel.chunks == 0 and cancel.first is None and cancel.last is None  # the engine's cancel
    assert loop.run_once().request.extension is None  # sent once
    store.set("extension_mode", "none")  # none again: nothing to cancel
    assert loop.run_once().request.extension is None
    store.apply({"extension_mode": "lastframe", "extension_last": first})
    assert loop.run_once().request.extension.mode == "lastframe"  # a new one after the cancel
    assert notes.errors == []
    loop.stop()


@pytest.mark.skipif(not vace_available(), reason="needs engine.conditioning (VACE)")
def test_extension_mode_none_ends_the_extension_inside_the_engine(tmp_path):
    """Through the run loop into a real VACE generator (tiny, random weights): the extension that
    would condition 8 chunks is gone from the conditioner at the chunk after the change to none."""
    generator = StreamGenerator.random("tiny", width=48, height=32, codec="tae", vace=True)
    loop, gen, store, sent, notes = make_loop(gen=Recorder(generator), tmp_path=tmp_path)
    first = png(tmp_path / "first.png", (200, 0, 0, 255), (48, 32))
    store.apply({"extension_mode": "firstframe", "extension_first": first, "extension_chunks": 8})
    assert loop.run_once().error is None and generator.conditioner.extension is not None
    assert loop.run_once().error is None and generator.conditioner.extension is not None
    store.set("extension_mode", "none")
    assert loop.run_once().error is None and generator.conditioner.extension is None
    assert notes.errors == []
    loop.stop()


def test_status_sends_exactly_the_schema_status_fields():
    loop, *_ = make_loop()
    assert loop.run_once().error is None
    status = loop.status()
    assert list(status) == [f.name for f in STATUS_FIELDS]  # the schema documents what is sent
    for f in STATUS_FIELDS:
        assert isinstance(status[f.name], float if f.type == "float" else int), f.name
    loop.stop()


def test_mask_uses_the_latest_texture():
    mask = FrameHistory(CountingSource(8, 8), depth=1, start=False)
    loop, gen, store, *_ = make_loop(mask=mask)
    assert loop.run_once().request.mask is None
    feed(mask, 3)
    assert loop.run_once().request.mask[0, 0, 0] == 3
    store.set("mask_enabled", False)
    assert loop.run_once().request.mask is None
    loop.stop()


def test_output_fps_parameter_drives_the_pacer():
    loop, gen, store, *_ = make_loop(store=ParamStore(initial={"output_fps": 30}))
    assert loop.pacer.target_fps == 30
    store.set("output_fps", 0)
    loop.run_once()
    assert loop.pacer.target_fps is None
    loop.stop()


def test_pause_holds_the_output_and_generates_nothing():
    store = ParamStore(initial={"output_fps": 60})
    gen = Recorder(PatternGenerator(96, 64, step_delay=0.01))
    sent = []
    loop = RunLoop(gen, store, sent.append, reporter=Notes(), idle_sleep=0.005)
    loop.start()
    try:
        wait_until(lambda: len(sent) > 5, 10, "frames")
        store.set("pause", True)
        wait_until(lambda: loop.paused, 5, "paused")
        steps = len(gen.calls)
        held = loop.pacer.stats.repeated
        time.sleep(0.5)
        assert len(gen.calls) == steps  # no chunk while paused
        assert loop.pacer.stats.repeated > held  # the output kept its clock, repeating
        assert loop.status()["paused"] is True
        store.set("pause", False)
        wait_until(lambda: len(gen.calls) > steps, 5, "resume")
    finally:
        loop.stop()


@pytest.mark.parametrize("fps", [40.0])
def test_fixed_fps_throttle_keeps_at_most_a_chunk_queued(fps):
    store = ParamStore(initial={"output_fps": fps})
    loop = RunLoop(PatternGenerator(96, 64), store, lambda f: None, reporter=Notes())
    peak = 0
    loop.start()
    try:
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            peak = max(peak, loop.pacer.stats.buffered)
            time.sleep(0.003)
    finally:
        loop.stop()
    # without the throttle a 1 ms generator would fill the pacer to its capacity (36) at once
    assert 0 < peak <= 12 + 12
    assert loop.pacer.stats.dropped == 0


class WithLoras(PatternGenerator):
    def describe(self):
        return {**super().describe(), "loras": {"style": 1.0}}


def test_lora_scales_only_for_loras_the_generator_has():
    from vacelive.bridge.schema import build_schema

    store = ParamStore(build_schema(["style"]))
    loop, gen, store, sent, notes = make_loop(gen=Recorder(WithLoras(96, 64)), store=store)
    assert loop.run_once().request.lora_scales == {"style": 1.0}  # no "pipeline": it has none
    store.set("lora/pipeline", 0.5)
    assert loop.run_once().request.lora_scales == {"style": 1.0}
    assert notes.notices == ["/vace/lora/pipeline: this pipeline has no LoRA 'pipeline'; "
                             "the scale is not used"]
    loop.run_once()
    assert len(notes.notices) == 1
    loop.stop()


def test_a_generator_that_keeps_failing_is_reported_sparingly():
    class Down(PatternGenerator):
        n = 0

        def step(self, request):
            Down.n += 1
            raise RuntimeError(f"engine unreachable for {Down.n * 0.5:.1f} s; reconnecting")

    loop, gen, store, sent, notes = make_loop(gen=Down(96, 64), max_backoff=0.0)
    for _ in range(20):
        loop.run_once()
    assert loop.errors == 20
    assert len(notes.errors) == 1 and "unreachable for 0.5 s" in notes.errors[0]
    loop.stop()


def test_clip_anchors_from_video_files(tmp_path):
    import av

    from vacelive.bridge.run.media import load_anchor

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=24)
        st.width, st.height, st.pix_fmt = 32, 16, "yuv420p"
        for i in range(5):
            img = np.full((16, 32, 3), 40 * i + 20, np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    clip = load_anchor(path, clip=True)
    assert clip.shape == (5, 16, 32, 4)
    assert abs(int(load_anchor(path, False, "first")[8, 16, 0]) - 20) < 8
    assert abs(int(load_anchor(path, False, "last")[8, 16, 0]) - 180) < 8


def test_a_stopped_control_sender_is_sent_as_one_still_frame(monkeypatch):
    from vacelive.bridge.run import loop as loop_mod

    released = []
    monkeypatch.setattr(loop_mod, "_release_memory", lambda: released.append(1))

    class Stopping(CountingSource):
        gone = False

        @property
        def size(self):
            return None if self.gone else (self.w, self.h)

    source = Stopping()
    history = FrameHistory(source, depth=24, start=False)
    loop, gen, store, _, _ = make_loop(control=history)
    feed(history, 20)
    assert loop.run_once().request.video.shape == (9, 24, 40, 4)
    source.gone = True
    history.poll_once()
    rec = loop.run_once()
    assert rec.error is None and history.releases == 1
    assert rec.request.video.shape == (1, 24, 40, 4)  # a still: the engine holds it for the chunk
    assert rec.request.video[0, 0, 0, 0] == 20  # the newest frame
    assert released == [1]  # freed memory handed back once, not every chunk
    loop.run_once()
    assert released == [1]


def test_host_frames_reach_the_sink_as_they_are():
    """The run loop stages CUDA chunks to host memory (bridge/transports/staging.py); numpy chunks
    (a torch-free relay's; numpy arrays have a `device` attribute too) and CPU tensors pass
    through untouched."""
    import torch

    from vacelive.bridge.transports.staging import ChunkStager

    stage = ChunkStager()
    chunk = np.zeros((2, 8, 8, 4), np.uint8)
    assert stage(chunk) is chunk
    cpu = torch.zeros(2, 8, 8, 4, dtype=torch.uint8)
    assert stage(cpu) is cpu
    loop, gen, store, sent, notes = make_loop()
    rec = loop.run_once()
    assert rec.error is None and not notes.errors
    loop.pacer.tick()
    assert np.array_equal(np.asarray(sent[0]), np.asarray(rec.result.frames[0]))
    loop.stop()


def test_staged_chunks_are_freed_by_the_stager_once_the_pacer_cannot_hold_them():
    """ChunkStager keeps the newest staged buffers covering what the pacer can hold (its capacity
    + the held frame), so a buffer's last reference drops on the staging thread, not the pacer's."""
    import gc
    import weakref

    import torch

    from vacelive.bridge.transports.staging import ChunkStager

    stage = ChunkStager(keep_frames=37)
    bufs = [torch.zeros(12, 2, 2, 4, dtype=torch.uint8) for _ in range(6)]
    alive = [weakref.ref(b) for b in bufs]
    for b in bufs:
        stage.keep(b)
    del bufs, b
    gc.collect()
    # 4 x 12 = 48 frames kept: without the oldest of them, 36 < 37 frames would be left
    assert [r() is not None for r in alive] == [False, False, True, True, True, True]
    small = ChunkStager(keep_frames=37)
    for _ in range(20):  # 4-frame chunks: 10 kept (40 frames; 36 without the oldest)
        small.keep(torch.zeros(4, 1, 1, 4, dtype=torch.uint8))
    assert len(small._kept) == 10
    loop, *_ = make_loop()
    assert loop._stage is not None and loop._stage.keep_frames == loop.pacer.capacity + 1
    loop.stop()
