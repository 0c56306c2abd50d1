"""Recording: the MP4 holds exactly the frames the pacer sent (count, order, content), a slow
encoder drops recorded frames (counted) while the pacer still sends every frame, and a recording
stopped or killed mid-write stays playable."""
from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import av
import numpy as np
import pytest

from vacelive.bridge.pacer import ManualClock, Pacer
from vacelive.bridge.record import Recorder, RecordError, fit, pick_encoder

W, H = 96, 64
BANDS = 8


def frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Index i in black/white bands over the top half; a colour ramp below."""
    f = np.zeros((h, w, 4), np.uint8)
    f[..., 3] = 255
    band = w // BANDS
    for bit in range(BANDS):
        f[: h // 2, bit * band:(bit + 1) * band, :3] = 255 if i >> bit & 1 else 0
    f[h // 2:, :, 0] = (i * 37) % 256
    f[h // 2:, :, 1] = 128
    return f


def index_of(rgb: np.ndarray) -> int:
    band = rgb.shape[1] // BANDS
    top = rgb[: rgb.shape[0] // 4, :, :3].astype(np.int32).mean(axis=(0, 2))
    return sum(1 << b for b in range(BANDS) if top[b * band + band // 4:(b + 1) * band - band // 4].mean() > 127)


def decode(path: Path, fps: float = 24.0) -> tuple[list[np.ndarray], list[int]]:
    """Decoded frames and their frame numbers (pts in frames, from the first frame)."""
    frames, pts = [], []
    with av.open(str(path)) as c:
        tb = c.streams.video[0].time_base
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(f.pts)
    return frames, [round(float((p - pts[0]) * tb) * fps) for p in pts]


class Sink:
    def __init__(self):
        self.frames = []

    def send(self, f):
        self.frames.append(f)


def paced(recorder: Recorder, chunks: int, fps: float = 24.0, side=None, path=None):
    """Chunks of 12 frames through a real Pacer on a manual clock, its sink tapped by the recorder
    the way the run loop's tap is."""
    clock = ManualClock()
    sink = Sink()

    def send(f):
        sink.send(f)
        recorder.offer(f)

    pacer = Pacer(send, target_fps=fps, clock=clock.now, sleep=clock.sleep)
    target = recorder.start(fps, preset="Neon Forest/2", side=side, path=path)
    n = 0
    for _ in range(chunks):
        pacer.push(np.stack([frame(n + k) for k in range(12)]))
        n += 12
        clock.advance(12 / fps)
    clock.advance(0.5)
    clock.close()
    pacer.stop()
    return target, sink, pacer


def test_file_holds_the_paced_frames(tmp_path):
    # virtual time runs faster than any encoder: a queue that holds the whole take
    rec = Recorder(tmp_path, queue_frames=128, now=lambda: datetime(2026, 12, 4, 21, 30, 5))
    path, sink, pacer = paced(rec, chunks=4)
    status = rec.stop(wait=None)
    assert path.name == "vacelive-20261204-213005-Neon-Forest-2.mp4"
    sent = [index_of(f) for f in sink.frames if f is not None]
    assert sent[:48] == list(range(48))  # the pacer's emissions (held frames repeat the last)
    assert status.frames == len(sink.frames) and status.dropped == 0 and status.error == ""
    frames, pts = decode(path)
    assert len(frames) == len(sink.frames)
    assert [index_of(f) for f in frames] == [index_of(f[..., :3]) for f in sink.frames]
    assert pts == list(range(len(sink.frames)))  # one slot per paced frame, no gaps
    for got, want in zip(frames, sink.frames):  # lossy, but the same picture
        assert np.abs(got.astype(int) - want[..., :3].astype(int)).mean() < 6


def test_slow_encoder_drops_recorded_frames_never_output_frames(tmp_path):
    gate = threading.Event()
    rec = Recorder(tmp_path, queue_frames=6, encode_hook=lambda pts: gate.wait(10))
    path, sink, pacer = paced(rec, chunks=3)
    # the writer is stuck on its first frame: the pacer still sent every frame
    assert pacer.stats.emitted == len(sink.frames) >= 36 and pacer.stats.dropped == 0
    status = rec.status()
    assert status.dropped == len(sink.frames) - 1 - 6  # one in the writer, 6 queued
    gate.set()
    status = rec.stop(wait=None)
    frames, pts = decode(path)
    assert len(frames) == status.frames == 7
    assert [index_of(f) for f in frames] == list(range(7)) and pts == list(range(7))
    # the file's length is the whole take at the pacer's rate, drops included
    assert status.seconds == pytest.approx(len(sink.frames) / 24.0)


def test_side_by_side_and_fit(tmp_path):
    control = frame(200, 48, 48)
    rec = Recorder(tmp_path, queue_frames=128)
    path, sink, _ = paced(rec, chunks=1, side=lambda: control)
    rec.stop(wait=None)
    frames, _ = decode(path)
    assert frames[0].shape == (H, 2 * W, 3)
    assert index_of(frames[3][:, :W]) == index_of(sink.frames[3][..., :3])
    panel = fit(control, W, H)
    assert np.abs(frames[0][:, W:].astype(int) - panel[..., :3].astype(int)).mean() < 8


def test_errors_are_reported(tmp_path):
    rec = Recorder(tmp_path)
    rec.start(24.0)
    with pytest.raises(RecordError, match="already recording"):
        rec.start(24.0)
    rec.stop(wait=None)
    with pytest.raises(RecordError, match="frame rate"):
        rec.start(0.0)
    with pytest.raises(RecordError, match="no video encoder"):
        pick_encoder(("no_such_codec",))


def test_stopped_mid_write_is_playable(tmp_path):
    gate = threading.Event()
    rec = Recorder(tmp_path, queue_frames=100, encode_hook=lambda pts: pts < 5 or gate.wait(10))
    path, sink, _ = paced(rec, chunks=4)
    assert rec.status().queued > 0  # frames still waiting when the stop comes
    gate.set()
    status = rec.stop(wait=None)
    frames, _ = decode(path)
    assert len(frames) == status.frames == len(sink.frames)


KILLED = """
import sys, threading, numpy as np
from vacelive.bridge.record import Recorder
rec = Recorder(sys.argv[1])
path = rec.start(24.0, path=sys.argv[1] + "/killed.mp4")
for i in range(10_000):
    f = np.full((64, 96, 4), i % 256, np.uint8)
    rec.offer(f)
    if rec.current.written >= 60:
        print("written", rec.current.written, flush=True)
        threading.Event().wait(60)
    threading.Event().wait(0.002)
"""


def test_killed_mid_write_is_playable(tmp_path):
    """A crash (SIGKILL, no close): the fragmented MP4 decodes up to its last fragment."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().startswith("written")
    finally:
        proc.kill()
        proc.wait(10)
    frames, pts = decode(tmp_path / "killed.mp4")
    assert len(frames) >= 24  # at least the first one-second fragment
    assert pts == sorted(pts)
