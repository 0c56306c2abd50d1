"""Shared-memory frame ring: cross-process seqlock, newest-frame semantics, generations, history."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from vacelive.bridge.transports import shm as shm_mod
from vacelive.bridge.transports.base import FrameHistory
from vacelive.bridge.transports.shm import ShmFrameSink, ShmFrameSource


def _name() -> str:
    return "vlt" + uuid.uuid4().hex[:8]


def _pattern(n: int, h: int, w: int) -> np.ndarray:
    """Every pixel's 4 bytes are the little-endian frame number: a torn frame mixes numbers."""
    return np.full((h, w), n, dtype="<u4").view(np.uint8).reshape(h, w, 4)


def _frame_number(frame: np.ndarray) -> int:
    words = frame.view("<u4")
    lo, hi = int(words.min()), int(words.max())
    assert lo == hi, f"torn frame: pixels from frames {lo}..{hi}"
    return lo


WRITER = r"""
import sys, time, numpy as np
from vacelive.bridge.transports.shm import ShmFrameSink
name, w, h, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sink = ShmFrameSink(name, slots=3)
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    n += 1
    with sink.frame(w, h) as view:      # zero-copy: write straight into the slot
        view.view('<u4')[...] = n
print("DONE", n, flush=True)
sys.stdin.read()                          # keep the ring alive until the test says so
sink.close()
"""


def test_cross_process_writer_never_tears_and_reader_gets_newest():
    name, w, h = _name(), 320, 240
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", WRITER, name, str(w), str(h), "2.0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    src = ShmFrameSource(name)
    stop = threading.Event()

    def load():  # CPU pressure in the reader's process, so copies get preempted mid-way
        a = np.random.rand(256, 256)
        while not stop.is_set():
            a = (a @ a.T) % 1.0

    loaders = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in loaders:
        t.start()
    seen, last = 0, 0
    try:
        deadline = time.monotonic() + 30
        while not _writer_done(proc) and time.monotonic() < deadline:
            view = src._view
            newest_before = int(view.write_index[0]) if view is not None else 0
            frame = src.read()
            if frame is None:
                continue
            n = _frame_number(frame)
            assert n == src.frame_counter
            assert n >= newest_before, "reader returned an older frame than the newest published"
            assert n > last, "frame counter must increase"
            last, seen = n, seen + 1
        stop.set()
        line = proc.stdout.readline().split()
        assert line[0] == "DONE"
        total = int(line[1])
        # After the writer stops, the reader gets exactly its last frame, then "nothing new".
        frame = src.read()
        if frame is not None:
            assert _frame_number(frame) == total
        assert src.frame_counter == total
        assert src.read() is None
        assert seen > 20, f"only {seen} frames read"
    finally:
        stop.set()
        src.close()
        proc.stdin.close()
        proc.wait(timeout=10)


def _writer_done(proc) -> bool:
    import select

    r, _, _ = select.select([proc.stdout], [], [], 0)
    return bool(r)


def test_reader_skips_slot_being_written_and_returns_previous_frame():
    name = _name()
    sink, src = ShmFrameSink(name, slots=2), ShmFrameSource(name)
    try:
        sink.send(_pattern(1, 4, 4))
        with sink.frame(4, 4) as view:  # writer is mid-frame 2 (seq odd)
            view[...] = _pattern(2, 4, 4)[...]
            assert src.read() is None or src.frame_counter == 1
            frame = src.read()
            assert frame is None  # frame 1 already returned; frame 2 not complete
        assert _frame_number(src.read()) == 2
    finally:
        src.close()
        sink.close()


def test_seqlock_retries_when_writer_laps_during_copy(monkeypatch):
    name = _name()
    sink, src = ShmFrameSink(name, slots=2), ShmFrameSource(name)
    try:
        sink.send(_pattern(1, 8, 8))
        real_copyto = np.copyto
        calls = {"n": 0}

        def racing_copyto(dst, srcarr, *a, **k):
            real_copyto(dst, srcarr, *a, **k)
            calls["n"] += 1
            if calls["n"] == 1:
                # While the reader copied frame 1, the writer published 2 and 3 (3 reuses slot 0).
                sink._stager  # noqa: B018 - same process; write through the normal API
                for n in (2, 3):
                    with sink.frame(8, 8) as view:
                        real_copyto(view, _pattern(n, 8, 8))
                # and the copy the reader holds is now a mix: make it visibly torn
                dst[0, 0] = _pattern(3, 1, 1)[0, 0]

        monkeypatch.setattr(shm_mod.np, "copyto", racing_copyto)
        frame = src.read()
        assert calls["n"] >= 2, "the reader must re-copy after the sequence changed"
        assert _frame_number(frame) == 3
        assert src.retries >= 1
    finally:
        monkeypatch.undo()
        src.close()
        sink.close()


def test_resize_starts_new_generation_and_reader_follows():
    name = _name()
    sink, src = ShmFrameSink(name), ShmFrameSource(name)
    try:
        sink.send(_pattern(1, 4, 6))
        assert src.read().shape == (4, 6, 4)
        sink.send(_pattern(2, 10, 3))
        frame = src.read()
        assert frame.shape == (10, 3, 4) and src.size == (3, 10)
        assert src.frame_counter == 2  # counters stay monotonic across generations
    finally:
        src.close()
        sink.close()


def test_reader_before_writer_and_after_writer_restart():
    name = _name()
    src = ShmFrameSource(name)
    try:
        assert src.read() is None  # no writer yet: no error
        sink = ShmFrameSink(name)
        sink.send(_pattern(5, 2, 2))
        assert src.read() is not None
        sink.close()
        assert src.read() is None
        sink = ShmFrameSink(name)  # a new writer under the same name
        sink.send(_pattern(1, 2, 2))
        deadline = time.monotonic() + 5
        frame = None
        while frame is None and time.monotonic() < deadline:
            frame = src.read()
            time.sleep(0.01)
        assert frame is not None and _frame_number(frame) == 1
        sink.close()
    finally:
        src.close()


def test_send_accepts_torch_and_rejects_bad_frames():
    torch = pytest.importorskip("torch")
    name = _name()
    sink, src = ShmFrameSink(name), ShmFrameSource(name)
    try:
        sink.send(torch.from_numpy(_pattern(7, 3, 5)))
        assert _frame_number(src.read()) == 7
        with pytest.raises(ValueError, match="RGBA"):
            sink.send(np.zeros((3, 5, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            sink.send(np.zeros((3, 5, 4), np.float32))
    finally:
        src.close()
        sink.close()


def test_frame_history_keeps_newest_consecutive_frames():
    name = _name()
    sink, src = ShmFrameSink(name), ShmFrameSource(name)
    hist = FrameHistory(src, depth=5, start=False)
    try:
        assert hist.window(3) is None
        sink.send(_pattern(1, 2, 2))
        assert hist.poll_once() and not hist.poll_once()  # "is new": no duplicate
        win = hist.window(3)
        assert win.padded == 2 and win.counters == [1, 1, 1] and win.frames.shape == (3, 2, 2, 4)
        for n in range(2, 10):
            sink.send(_pattern(n, 2, 2))
            hist.poll_once()
        win = hist.window(4)
        assert win.counters == [6, 7, 8, 9] and win.padded == 0
        assert [_frame_number(f) for f in win.frames] == [6, 7, 8, 9]
        sink.send(_pattern(10, 2, 2))
        sink.send(_pattern(11, 2, 2))  # the poller misses frame 10
        hist.poll_once()
        assert hist.stats["gaps"] == 1 and hist.latest()[1] == 11
        sink.send(_pattern(12, 3, 3))  # new size: history restarts, windows still stack
        hist.poll_once()
        win = hist.window(4)
        assert win.frames.shape == (4, 3, 3, 4) and win.counters == [12] * 4
    finally:
        hist.close()
        src.close()
        sink.close()


def test_a_stopped_2560x1600_sender_leaves_one_frame_not_a_backlog():
    """When the sender stops, the history keeps only its newest frame (a still) and hands it out
    once, not as n full-size copies; the frames before it are released."""
    name = _name()
    sink, src = ShmFrameSink(name), ShmFrameSource(name)
    hist = FrameHistory(src, depth=6, start=False, stale_after=3600.0)
    try:
        frame = np.zeros((1600, 2560, 4), np.uint8)
        for n in range(1, 7):
            frame[0, 0, 0] = n
            sink.send(frame)
            assert hist.poll_once()
        assert not hist.poll_once() and hist.stats["buffered"] == 6  # between frames: kept
        assert hist.window(13, still_as_one=True).padded == 7  # several frames: padded as before
        sink.close()
        assert not hist.poll_once()
        assert hist.stats["buffered"] == 1 and hist.releases == 1
        still = hist.window(13, still_as_one=True)
        assert still.frames.shape == (1, 1600, 2560, 4) and still.padded == 12
        assert still.frames[0, 0, 0, 0] == 6 and still.counters == [6]
        assert hist.window(13).frames.shape == (13, 1600, 2560, 4)  # the padded form still exists
        assert not hist.poll_once() and hist.releases == 1  # released once, not per poll
    finally:
        hist.close()
        src.close()
        sink.close()


def test_a_sender_silent_past_stale_after_becomes_a_still():
    name = _name()
    sink, src = ShmFrameSink(name), ShmFrameSource(name)
    hist = FrameHistory(src, depth=4, start=False, stale_after=0.0)  # connected, but silent
    try:
        for n in range(1, 4):
            sink.send(_pattern(n, 2, 2))
            hist.poll_once()
        assert hist.stats["buffered"] == 3
        assert not hist.poll_once() and hist.stats["buffered"] == 1 and hist.latest()[1] == 3
        sink.send(_pattern(4, 2, 2))  # it comes back: the history grows again
        assert hist.poll_once() and hist.window(2).counters == [3, 4]
    finally:
        hist.close()
        src.close()
        sink.close()


def test_frame_history_thread_survives_a_failing_source(caplog):
    class Flaky(ShmFrameSource):
        calls = 0

        def read(self):
            Flaky.calls += 1
            if Flaky.calls < 5:
                raise OSError("sender vanished")
            return super().read()

    name = _name()
    sink = ShmFrameSink(name)
    src = Flaky(name)
    sink.send(_pattern(3, 2, 2))
    with FrameHistory(src, depth=2, poll_interval=0.001) as hist:
        deadline = time.monotonic() + 5
        while hist.latest() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert hist.latest()[1] == 1
    assert "sender vanished" in caplog.text
    src.close()
    sink.close()


def test_open_by_spec():
    from vacelive.bridge.transports import open_sink, open_source

    name = _name()
    with open_sink(f"shm:{name}") as sink, open_source(f"shm:{name}") as src:
        sink.send(_pattern(4, 2, 2))
        assert _frame_number(src.read()) == 4
    with pytest.raises(ValueError, match="spec"):
        open_source("rtmp:cam")  # not a transport kind
    if sys.platform != "win32":
        from vacelive.bridge.transports.base import TransportUnavailable

        with pytest.raises(TransportUnavailable, match="pip install SpoutGL"):
            open_sink("spout:out")


def test_documented_plain_python_reader_works_in_another_process():
    """docs/transports.md's reader (numpy + stdlib only) against a live writer, in its own process."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "transports.md"
    block = re.search(r"<!-- reader:start -->\s*```python\n(.*?)```\s*<!-- reader:end -->",
                      doc.read_text(), re.S)
    assert block, "reader block missing from docs/transports.md"
    name = _name()
    script = block.group(1) + r"""
import sys, time
reader = VaceliveShmReader(sys.argv[1])
got, deadline = [], time.monotonic() + 20
while len(got) < 2 and time.monotonic() < deadline:
    img = reader.read()
    if img is None:
        time.sleep(0.005)
        continue
    words = img.view("<u4")
    assert words.min() == words.max(), "torn"
    got.append((int(words.flat[0]), img.shape))
    print("GOT", got[-1][0], *got[-1][1], flush=True)
"""
    sink = ShmFrameSink(name)
    proc = subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True)
    try:
        sink.send(_pattern(41, 6, 8))
        assert proc.stdout.readline().split() == ["GOT", "41", "6", "8", "4"]
        sink.send(_pattern(42, 5, 3))  # resize: the reader follows the new generation
        assert proc.stdout.readline().split() == ["GOT", "42", "5", "3", "4"]
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sink.close()
