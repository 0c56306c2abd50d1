"""Remote link on loopback: frames flow raw and JPEG, latest wins, errors reach the caller,
a killed engine process is detected, and a new one gets the sticky references back."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vacelive.bridge.link import EngineServer, EngineUnavailable, RemoteGenerator, RemoteStepError
from pattern_engine import PatternGenerator, read_stamp, refs_checksum
from vacelive.engine.request import ChunkRequest, Generator


def video(n=12, h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    base = np.repeat(np.repeat(rng.integers(0, 256, (n, h // 16, w // 16, 4), dtype=np.uint8), 16, 1), 16, 2)
    base[..., 3] = 255
    return base


@pytest.fixture
def engine():
    servers = []

    def make(**kw):
        server = EngineServer(PatternGenerator(**kw), "tcp://127.0.0.1:0").start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.mark.parametrize("codec,tol", [("raw", 0), ("jpeg", 8)])
def test_frames_flow_both_ways(engine, codec, tol):
    server = engine()
    with RemoteGenerator(server.endpoint, codec=codec, heartbeat=0.1) as gen:
        assert isinstance(gen, Generator)
        assert gen.connected and (gen.width, gen.height) == (96, 64) and gen.next_chunk_frames == 9
        vid = video()
        res = gen.step(ChunkRequest(seed=5, video=vid))
        assert res.frames.shape == (9, 64, 96, 4) and res.frames.dtype == torch.uint8
        assert gen.next_chunk_frames == 12
        stamp = read_stamp(res.frames[0])
        assert stamp[0] == 0 and stamp[3] == 5 and stamp[4] == 12
        # body = inverted control video (away from the stamp row)
        expect = 255 - vid[-1, 32:, :, :3].astype(int)
        got = res.frames[-1, 32:, :, :3].numpy().astype(int)
        assert np.abs(got - expect).mean() <= tol  # raw: exact; JPEG: small mean error
        res = gen.step(ChunkRequest(seed=6, video=torch.from_numpy(vid)))
        assert read_stamp(res.frames[0])[:1] == [1] and res.frames.shape[0] == 12
        assert res.timings_ms["link_roundtrip"] > 0 and "step" in res.timings_ms
        assert gen.describe()["pipeline"] == "pattern"


def test_engine_errors_reach_caller_and_stream_goes_on(engine):
    server = engine(fail_on_seed=13)
    with RemoteGenerator(server.endpoint) as gen:
        with pytest.raises(RemoteStepError, match="planted failure"):
            gen.step(ChunkRequest(seed=13))
        res = gen.step(ChunkRequest(seed=14))
        assert read_stamp(res.frames[0])[3] == 14
        gen.reset()
        assert gen.next_chunk_frames == 9
        assert read_stamp(gen.step(ChunkRequest(seed=1)).frames[0])[0] == 0


def test_latest_request_wins_no_backlog(engine):
    server = engine(step_delay=1.0)
    gen_impl = server.generator
    with RemoteGenerator(server.endpoint, heartbeat=0.1) as gen:
        gen.step_timeout = 0.05
        for seed in range(1, 6):  # 5 requests abandoned while the engine is busy with the first
            with pytest.raises(EngineUnavailable, match="no reply"):
                gen.step(ChunkRequest(seed=seed))
        gen.step_timeout = None
        res = gen.step(ChunkRequest(seed=6))
        assert read_stamp(res.frames[0])[3] == 6  # our own result, not a stale one
        assert gen_impl.requests_seen[0] == 1 and gen_impl.requests_seen[-1] == 6
        assert len(gen_impl.requests_seen) <= 3, gen_impl.requests_seen  # replaced, not queued
        assert server.stats["dropped_requests"] >= 3
        assert gen.stats["stale_dropped"] >= 1  # the late result of seed 1 was thrown away


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_engine(endpoint: str, step_delay: float) -> subprocess.Popen:
    script = Path(__file__).resolve().parents[1] / "scripts" / "pattern_engine.py"
    proc = subprocess.Popen([sys.executable, str(script), "--listen", endpoint,
                             "--step-delay", str(step_delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    return proc


def test_killed_engine_is_detected_then_reconnects_and_gets_refs_back():
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    engine_a = _spawn_engine(endpoint, step_delay=0.4)
    engine_b = None
    ref = np.full((16, 16, 4), 7, np.uint8)
    ref[..., 3] = 255
    checksum = refs_checksum([ref])
    gen = RemoteGenerator(endpoint, heartbeat=0.1, dead_after=1.0, connect_timeout=10)
    try:
        assert gen.connected
        res = gen.step(ChunkRequest(seed=1, refs=[ref]))
        assert read_stamp(res.frames[0])[1:3] == [1, checksum]
        res = gen.step(ChunkRequest(seed=2))  # refs sticky on the engine, not re-sent
        assert read_stamp(res.frames[0])[1:3] == [1, checksum]
        first_engine = gen.describe()["link"]["engine_id"]

        outcome = {}

        def stepping():
            t0 = time.monotonic()
            try:
                gen.step(ChunkRequest(seed=3))
                outcome["result"] = "returned"
            except Exception as exc:
                outcome["result"] = exc
            outcome["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=stepping)
        t.start()
        time.sleep(0.1)
        engine_a.send_signal(signal.SIGKILL)  # mid-chunk
        engine_a.wait(timeout=10)
        t.join(timeout=15)
        assert not t.is_alive(), "step() hung on a dead engine"
        assert isinstance(outcome["result"], EngineUnavailable), outcome
        assert not gen.connected
        with pytest.raises(EngineUnavailable, match="unreachable"):
            gen.step(ChunkRequest(seed=4))  # while it is away: fails fast, no hang

        engine_b = _spawn_engine(endpoint, step_delay=0.0)
        assert gen.wait_ready(15), "did not reconnect to the new engine"
        assert gen.describe()["link"]["engine_id"] != first_engine
        res = gen.step(ChunkRequest(seed=5))  # refs=None: the relay must restore them
        stamp = read_stamp(res.frames[0])
        assert stamp[0] == 0, "a fresh engine starts a new stream"
        assert stamp[1:3] == [1, checksum], "sticky refs were not re-sent to the new engine"
        res = gen.step(ChunkRequest(seed=6, refs=[]))  # clearing works and is remembered
        assert read_stamp(res.frames[0])[1] == 0
    finally:
        gen.close()
        for p in (engine_a, engine_b):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=10)


def test_engine_restarted_between_heartbeats_asks_for_refs(engine):
    """The relay has not noticed the restart yet: the engine answers 'resync' and gets the refs."""
    server = engine()
    ref = np.full((16, 16, 4), 9, np.uint8)
    with RemoteGenerator(server.endpoint, heartbeat=0.1) as gen:
        gen.step(ChunkRequest(seed=1, refs=[ref]))
        gen._engine_id = "stale-id"  # as if the engine restarted since its last pong
        gen._refs_delivered_to = "stale-id"
        server.generator.refs = []  # and lost its state
        res = gen.step(ChunkRequest(seed=2))
        assert read_stamp(res.frames[0])[1:3] == [1, refs_checksum([ref])]


def test_network_bind_requires_keys():
    with pytest.raises(ValueError, match="needs CURVE keys"):
        EngineServer(PatternGenerator(), "tcp://0.0.0.0:5555")
    with pytest.raises(ValueError, match="needs CURVE keys"):
        EngineServer(PatternGenerator(), "tcp://192.168.1.20:5555")
