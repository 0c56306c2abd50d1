"""`vacelive engine` + relay on loopback with the tiny model: frames flow; the engine PROCESS is
killed mid-stream and the relay keeps emitting the held frame; a new engine process comes up and
the relay reconnects and restores parameters and references (the new engine logs receiving them)."""
from __future__ import annotations

import signal
import socket
import time

import numpy as np
from PIL import Image

from vacelive.bridge import config
from vacelive.bridge.cli import _build_parser
from vacelive.bridge.run.generators import build_remote_generator
from vacelive.bridge.run.session import Session, SessionOptions
from runloop_support import OutputReader, Peer, ProcessLog, unique, vacelive, wait_until

W, H = 64, 48


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_engine(port: int) -> ProcessLog:
    proc = vacelive("engine", "--listen", f"tcp://127.0.0.1:{port}", "--random-weights", "tiny",
                    "--device", "cpu", "--codec", "tae", "--width", str(W), "--height", str(H))
    log = ProcessLog(proc)
    log.wait_for("vacelive engine ready", 90)
    return log


def test_relay_holds_through_an_engine_crash_and_restores_state(tmp_path):
    port = free_port()
    ref = tmp_path / "ref.png"
    Image.new("RGBA", (40, 30), (200, 40, 90, 255)).save(ref)
    engine = start_engine(port)
    engine2 = None
    out = unique("ro")
    # exactly what `vacelive relay --config rig.toml ...` builds (the process itself runs the same
    # Session; in-process here so the test can look at the link's counters)
    rig = tmp_path / "rig.toml"
    rig.write_text(f'fps = 30\n[params]\nprompt = "first prompt"\nrefs = ["{ref}"]\n')
    cfg = config.resolve(_build_parser().parse_args([
        "relay", "--config", str(rig), "--engine", f"tcp://127.0.0.1:{port}", "--control", "none",
        "--mask", "none", "--ref", "none", "--output", f"shm:{out}", "--osc-port", "0",
        "--oscquery-port", "0"]))
    gen = build_remote_generator(cfg)
    session = Session(gen, SessionOptions.from_config(cfg)).start()
    reader = OutputReader(out)
    peer = Peer(session.osc.address)
    try:
        peer.send("/vace/hello", peer.port)
        engine.wait_for("references received: 1 image(s) (40x30)", 60)
        engine.wait_for("prompts: 'first prompt'", 10)
        wait_until(lambda: reader.count() > 10, 30, "frames through the relay")
        assert reader.items[-1][2].shape == (H, W, 4)
        peer.send("/vace/prompt", "second prompt")
        engine.wait_for("prompts: 'second prompt'", 30)

        # the engine process dies without a word
        engine.proc.send_signal(signal.SIGKILL)
        engine.proc.wait(10)
        t_kill = time.monotonic()
        wait_until(lambda: [m for m in peer.got("/vace/error") if m[0] > t_kill], 15, "/vace/error")
        assert any(m[2][0] > 0 for m in peer.got("/vace/status/fps") if m[0] < t_kill)
        t_err = peer.got("/vace/error")[-1][0]
        wait_until(lambda: len([m for m in peer.got("/vace/status/fps") if m[0] > t_err]) >= 2, 30,
                   "status")
        assert peer.got("/vace/status/fps")[-1][2][0] == 0.0  # not the dead engine's last rate

        def holding():  # once the buffered frames have played out, one frame is re-sent on
            items = reader.since(t_kill)
            return len(items) >= 8 and all(np.array_equal(it[2], items[-1][2]) for it in items[-5:])

        wait_until(holding, 30, "the relay re-sending the last frame (its output must not stop)")
        held = reader.since(t_kill)[-5:]
        assert any("unreachable" in m[2][0] or "silent" in m[2][0] or "went" in m[2][0]
                   for m in peer.got("/vace/error")), peer.got("/vace/error")

        # a new engine process on the same address: reconnect, state restored
        engine2 = start_engine(port)
        engine2.wait_for("references received: 1 image(s) (40x30)", 60)
        engine2.wait_for("prompts: 'second prompt'", 10)
        t_back = time.monotonic()
        wait_until(lambda: any(not np.array_equal(it[2], held[0][2]) for it in reader.since(t_back)),
                   30, "new frames from the new engine")
        wait_until(lambda: any(m[0] > t_back and m[2][0] > 0 for m in peer.got("/vace/status/fps")),
                   30, "a generation rate again")
        assert "first prompt" not in engine2.text()  # it got the current state, not the initial
        assert gen.stats["reconnects"] >= 1
    finally:
        peer.close()
        session.close()
        reader.close()
        for log in (engine, engine2):
            if log is not None and log.proc.poll() is None:
                log.proc.send_signal(signal.SIGTERM)
                assert log.proc.wait(30) == 0
