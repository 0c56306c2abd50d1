"""`vacelive serve` end to end on the CPU: the tiny random-weight StreamGenerator, shared-memory
transports, real OSC over UDP; and the command itself as a process (SIGTERM, shm release)."""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from pattern_engine import PatternGenerator
from vacelive.bridge.osc import OscConfig
from vacelive.bridge.run.generators import vace_available
from vacelive.bridge.run.session import Session, SessionOptions
from vacelive.bridge.transports import ShmFrameSink
from vacelive.engine.generator import StreamGenerator
from runloop_support import (OutputReader, Peer, ProcessLog, Recorder, shm_exists, unique,
                             vacelive, wait_until)

W, H = 64, 48


def tiny():
    return StreamGenerator.random("tiny", width=W, height=H, codec="tae", device="cpu",
                                  vace=vace_available())


class ControlWriter:
    """A sender writing frames of a given size into an shm ring at ~60 fps; size can change."""

    def __init__(self, name, size):
        self.sink = ShmFrameSink(name)
        self.size = size
        self.color = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            w, h = self.size
            f = np.empty((h, w, 4), np.uint8)
            f[..., :3], f[..., 3] = self.color, 255
            self.sink.send(f)
            time.sleep(1 / 60)

    def close(self):
        self._stop.set()
        self._thread.join(1.0)
        self.sink.close()


@pytest.fixture
def rig():
    """Session + control writer + output reader + OSC peer; torn down in order."""
    made = {}

    def make(generator, **params):
        ctl, out = unique("sc"), unique("so")
        made["writer"] = ControlWriter(ctl, (80, 60))
        opts = SessionOptions(control=f"shm:{ctl}", output=f"shm:{out}",
                              osc=OscConfig(port=0, oscquery_port=None, status_hz=20.0),
                              params=params, presets_dir=None)
        made["session"] = session = Session(generator, opts).start()
        made["reader"] = OutputReader(out)
        made["peer"] = peer = Peer(session.osc.address)
        peer.send("/vace/hello", peer.port)
        wait_until(lambda: peer.got("/vace/prompt"), 5, "hello echo")
        return session, made["writer"], made["reader"], peer

    yield make
    for key in ("peer", "session", "reader", "writer"):
        if key in made:
            made[key].close()


def test_osc_prompt_change_is_used_by_the_next_chunk(rig):
    gen = Recorder(tiny())
    session, writer, reader, peer = rig(gen, prompt="first prompt")
    records = []
    session.loop.add_observer(records.append)
    applied = {}
    session.store.add_listener(
        lambda ch, origin: applied.setdefault("t", time.monotonic())
        if ch.get("prompt") == "second prompt" else None)
    wait_until(lambda: len(records) >= 3, 30, "3 chunks")
    t_send = peer.send("/vace/prompt", "second prompt")
    wait_until(lambda: "t" in applied, 5, "OSC applied")
    wait_until(lambda: any(r.boundary > applied["t"] for r in records), 30, "next chunk")

    def text(r):
        return [p.text for p in r.request.prompts]

    before = [r for r in records if r.boundary < t_send]
    after = [r for r in records if r.boundary > applied["t"]]
    assert before and all(text(r) == ["first prompt"] for r in before)
    assert text(after[0]) == ["second prompt"]  # the very next chunk boundary uses it
    # ... and the generator itself received it and switched its prompt state
    wait_until(lambda: any([p.text for p in req.prompts] == ["second prompt"] for _, req in gen.calls),
               5, "generator request")
    # (the generator's prompt state now holds that text's embedding)
    expect = gen.inner.prompt_state.cache.get(["second prompt"])[0]
    wait_until(lambda: gen.inner.prompt_state.current is not None
               and bool((gen.inner.prompt_state.current == expect).all()), 10, "prompt state")
    assert session.loop.errors == 0
    # status over OSC reflects the loop
    wait_until(lambda: peer.got("/vace/status/chunk"), 5, "status")
    assert peer.got("/vace/status/chunk")[-1][2][0] >= 3


def test_wrong_size_control_frames_are_fitted_not_rejected(rig):
    gen = Recorder(tiny())
    session, writer, reader, peer = rig(gen)
    wait_until(lambda: len(gen.calls) >= 2 and gen.calls[-1][1].video is not None, 30, "video chunks")
    assert gen.calls[-1][1].video.shape[1:] == (60, 80, 4)
    writer.size = (50, 90)  # TouchDesigner changes the TOP resolution mid-show
    t = time.monotonic()
    wait_until(lambda: any(tc > t and req.video is not None and req.video.shape[1:] == (90, 50, 4)
                           for tc, req in gen.calls), 30, "a window of the new size")
    n = len(gen.calls)
    wait_until(lambda: len(gen.calls) >= n + 2, 30, "more chunks")
    late = [req for tc, req in gen.calls[n:]]
    assert all(r.video.shape[1:] == (90, 50, 4) for r in late)  # never a mixed, unstackable window
    assert session.loop.errors == 0 and not peer.got("/vace/error")
    frame = reader.items[-1][2]
    assert frame.shape == (H, W, 4)  # output stays at the generation size
    if not vace_available():  # the engine says why the video is not used (forwarded as a notice)
        wait_until(lambda: any("without VACE" in m[2][0] for m in peer.got("/vace/notice")), 5, "notice")


def test_wrong_size_frames_are_fitted_into_the_generated_picture(rig):
    """With PatternGenerator (output = inverted control video, nearest-neighbour fitted) the
    fitted content is checkable pixel for pixel."""
    session, writer, reader, peer = rig(PatternGenerator(96, 64))
    writer.color = 40
    writer.size = (333, 77)
    wait_until(lambda: reader.items and reader.items[-1][2][40, 50, 0] == 255 - 40, 10, "fitted frame")
    assert reader.items[-1][2].shape == (64, 96, 4)


def test_a_chunk_that_raises_does_not_stop_the_output(rig):
    gen = Recorder(tiny(), fail_on={4}, fail_delay=1.2)
    session, writer, reader, peer = rig(gen, output_fps=30.0)
    wait_until(lambda: len(gen.calls) >= 4, 30, "the failing chunk to start")
    t_fail = gen.calls[3][0]
    wait_until(lambda: peer.got("/vace/error"), 10, "/vace/error")
    err = peer.got("/vace/error")[0][2][0]
    assert "injected failure in step 4" in err and "holding the last frame" in err
    wait_until(lambda: len(gen.calls) >= 7, 30, "chunks after the failure")
    t_back = gen.calls[4][0]
    # frames kept coming through the failure: the buffer runs dry ~0.8 s in, then the last frame
    # is re-sent at the output rate
    during = [it for it in reader.items if t_fail + 0.9 < it[0] < t_back]
    assert len(during) >= 3, "the output stopped during the failed chunk"
    assert all(np.array_equal(it[2], during[0][2]) for it in during)  # the held frame
    counters = [it[1] for it in during]
    assert counters == sorted(set(counters))  # each a new published frame, not a stale read
    wait_until(lambda: any(not np.array_equal(it[2], during[0][2]) for it in reader.since(t_back + 0.05)),
               10, "new frames after the failure")
    assert session.loop.errors == 1 and session.loop.pacer.stats.repeated > 0


def test_initial_params_and_bad_ones(tmp_path):
    from vacelive.bridge.config import ConfigError

    out = unique("bp")
    opts = SessionOptions(output=f"shm:{out}", osc=None, params={"stepz": 3})
    with pytest.raises(ConfigError, match=r"\[params\] .*unknown parameter 'stepz'.*steps"):
        Session(PatternGenerator(96, 64), opts).start()
    assert not shm_exists(out)  # the half-started session closed its output again
    opts = SessionOptions(output=f"shm:{out}", osc=None, params={"context_scale": 2.5},
                          params_source="stage.toml: [params]")
    with pytest.raises(ConfigError, match=r"stage.toml: \[params\] context_scale: 2.5 is outside"):
        Session(PatternGenerator(96, 64), opts).start()  # refused, not clamped as OSC would
    assert not shm_exists(out)


def test_missing_platform_library_is_a_clear_startup_error():
    from vacelive.bridge.config import ConfigError

    opts = SessionOptions(output=f"shm:{unique('pl')}", control="spout:TDOut", osc=None)
    import sys

    if sys.platform == "win32":
        pytest.skip("Spout exists here")
    with pytest.raises(ConfigError, match=r"--control spout:TDOut: .*SpoutGL.*--control none"):
        Session(PatternGenerator(96, 64), opts).start()


def test_serve_process_sigterm_exits_cleanly_and_releases_shm(tmp_path):
    ctl, out = unique("pc"), unique("po")
    writer = ControlWriter(ctl, (80, 60))
    proc = vacelive("serve", "--random-weights", "tiny", "--device", "cpu", "--codec", "tae",
                    "--width", str(W), "--height", str(H), "--control", f"shm:{ctl}",
                    "--mask", "none", "--ref", "none", "--output", f"shm:{out}",
                    "--osc-port", "0", "--oscquery-port", "0", "--snapshots", str(tmp_path))
    log = ProcessLog(proc)
    reader = None
    try:
        log.wait_for("vacelive serve running", 60)
        reader = OutputReader(out)
        wait_until(lambda: reader.count() > 5, 30, "output frames")
        assert shm_exists(out)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.text()
    finally:
        if proc.poll() is None:
            proc.kill()
        if reader:
            reader.close()
        writer.close()
    assert "session closed" in log.text()
    assert not shm_exists(out) and not any(shm_exists(f"{out}.{g}") for g in range(1, 4))


def test_serve_reports_an_osc_port_in_use(capsys):
    import socket

    from vacelive.bridge.cli import main

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    out = unique("pu")
    try:
        code = main(["serve", "--random-weights", "tiny", "--device", "cpu", "--width", "64",
                     "--height", "48", "--codec", "tae", "--control", "none", "--mask", "none",
                     "--ref", "none", "--output", f"shm:{out}", "--osc-port", str(port),
                     "--oscquery-port", "0"])
    finally:
        s.close()
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot listen for OSC on 127.0.0.1:{port}" in err and "--osc-port" in err
    assert not shm_exists(out)


def test_load_time_size_is_reported_as_the_engine_runs_it():
    """An engine at 256x160 reports 160 through /vace/get and OSCQuery (not the schema default)."""
    import json
    import urllib.request

    out = unique("sz")
    opts = SessionOptions(output=f"shm:{out}", presets_dir=None,
                          osc=OscConfig(port=0, oscquery_port=0, status_hz=20.0))
    session = Session(PatternGenerator(256, 160), opts).start()
    peer = Peer(session.osc.address)
    try:
        peer.send("/vace/get", "/vace/height", "width")
        wait_until(lambda: peer.got("/vace/height") and peer.got("/vace/width"), 5, "replies")
        assert peer.got("/vace/height")[-1][2] == [160]
        assert peer.got("/vace/width")[-1][2] == [256]
        url = f"http://127.0.0.1:{session.osc.oscquery.address[1]}/vace/height?VALUE"
        with urllib.request.urlopen(url, timeout=3) as r:
            assert json.loads(r.read()) == {"VALUE": [160]}
    finally:
        peer.close()
        session.close()


def test_an_engine_size_outside_the_schema_range_is_reported_unclamped():
    session = Session(PatternGenerator(4096, 32), SessionOptions(
        output=f"shm:{unique('sx')}", osc=None, presets_dir=None)).start()
    try:
        assert session.store.get("width") == 4096 and session.store.get("height") == 32
    finally:
        session.close()
