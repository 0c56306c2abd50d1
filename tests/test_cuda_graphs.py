"""CUDA graphs of whole DiT forwards (engine.dit.graphs): a graphed stream is the normal stream
bit for bit. On CPU the capture is replaced by a stand-in that re-runs the captured function on
the static buffers, which checks everything the graphs rely on but the CUDA graph itself:
the keys (a wrong slot plan would write and read the wrong cache slots), the static inputs
(latents, timesteps, RoPE rotations, text K/V, pre-scaled hints, pose tokens), the cache
bookkeeping and the fall-backs. The gpu test captures real CUDA graphs."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkRequest, Prompt

pytestmark = pytest.mark.usefixtures("single_thread")
W = H = 32


def rerun_capture(fn):
    """CPU stand-in for a CUDA graph: replaying re-runs fn over the same static buffers and
    writes into the same output tensors (a forward's flow, or the hint stream's list)."""
    out = fn()

    def replay():
        new = fn()
        for dst, src in zip(out, new) if isinstance(out, list) else [(out, new)]:
            dst.copy_(src)

    return replay, out


def make(graphs, device="cpu", table=24, **kw):
    cfg = tiny_config(num_layers=2).with_(rope_max_positions=table)
    gen = StreamGenerator.random("tiny", width=W, height=H, codec="tae", cfg=cfg, device=device, seed=1, **kw)
    if graphs == "rerun":
        gen.set_cuda_graphs(True, capture=rerun_capture)
    elif graphs:
        gen.set_cuda_graphs(True)
    return gen


def requests(n=14):
    rng = np.random.default_rng(0)
    out = []
    for c in range(n):  # a new control video every chunk: the hint graphs' inputs change
        video = rng.integers(0, 255, (12, H, W, 4), dtype=np.uint8)
        out.append(dict(prompts=[Prompt("ab"[c // 5 % 2])], steps=2, video=video, hint_reuse=c % 2 == 0,
                        context_scale=(1.0, 0.5, 0.0)[c % 3], pose_strength=0.8 if c in (3, 4) else 0.0,
                        pose_source="rendered", reset=c == 11,
                        refs=[rng.integers(0, 255, (H, W, 3), dtype=np.uint8)] if c in (6, 12) else None))
    return out


def stream(gen, reqs):
    frames = []
    for r in reqs:
        r = dict(r)
        r["video"] = r["video"][:gen.next_chunk_frames]
        frames.append(gen.step(ChunkRequest(**r)).frames.clone())
    return frames


def test_a_graphed_stream_is_the_normal_stream_bit_for_bit():
    # cuts, hint reuse, scales 1 / 0.5 / 0, pose tokens, reference images (the hint stream's
    # prefix), past the 24-frame RoPE table, a reset
    reqs = requests()
    plain, graphed = make(False), make("rerun")
    a, b = stream(plain, reqs), stream(graphed, reqs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert plain.kv.rope_mode == graphed.kv.rope_mode == "absolute"  # after the reset
    d = graphed.describe()["cuda_graphs"]
    assert d["captures"] >= 6 and d["replays"] > d["captures"] and d["fallbacks"] == 0
    assert graphed.graphs.hint_graphs  # the VACE hint stream ran as graphs too
    # steady state: three ring positions x (denoising with hints, without, clean pass) at most
    recaches = [k for k in graphed.graphs.graphs if k.frames == 12]  # the two cuts' 12-frame re-caches
    assert len(recaches) == graphed.counters["recaches"] == 2
    assert d["graphs"] <= 3 * 3 + 12 + len(recaches)  # plus the window-filling and post-switch plans


def test_the_rope_switch_and_one_latent_chunks_are_graphed_too():
    reqs = [dict(prompts=[Prompt("a")], steps=1) for _ in range(30)]
    plain = make(False, chunk_latents=1)
    graphed = make("rerun", chunk_latents=1)
    a, b = stream(plain, [dict(r, video=np.zeros((12, H, W, 4), np.uint8)) for r in reqs]), \
        stream(graphed, [dict(r, video=np.zeros((12, H, W, 4), np.uint8)) for r in reqs])
    assert graphed.kv.rope_mode == "relative"  # 3 + 29 latent frames: past the 24-frame table
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_window_relative_rope_from_the_start_is_graphed_while_the_window_fills():
    reqs = [dict(prompts=[Prompt("ab"[c // 3 % 2])], steps=1, video=np.zeros((12, H, W, 4), np.uint8))
            for c in range(7)]
    plain, graphed = make(False, rope="relative"), make("rerun", rope="relative")
    assert all(torch.equal(x, y) for x, y in zip(stream(plain, reqs), stream(graphed, reqs)))
    assert graphed.kv.rope_mode == "relative" and graphed.graphs.fallbacks == 0


def test_new_weights_drop_every_graph():
    gen = make("rerun", vace=False)
    for _ in range(5):
        gen.step(ChunkRequest(prompts=[Prompt("a")], steps=1))
    assert gen.graphs.graphs
    gen.model.bump_weights_version()  # a LoRA re-merge does this
    gen.step(ChunkRequest(prompts=[Prompt("a")], steps=1))
    assert gen.graphs.describe()["graphs"] == len(gen.graphs.graphs) <= 2  # recaptured from scratch


def test_a_forward_that_cannot_be_captured_runs_without_a_graph(caplog):
    def refuse(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    plain, gen = make(False, vace=False), make(False, vace=False)
    gen.set_cuda_graphs(True, capture=refuse)
    reqs = [dict(prompts=[Prompt("a")], steps=1, video=np.zeros((12, H, W, 4), np.uint8)) for _ in range(6)]
    with caplog.at_level(logging.WARNING):
        assert all(torch.equal(x, y) for x, y in zip(stream(plain, reqs), stream(gen, reqs)))
    d = gen.describe()["cuda_graphs"]
    assert d["captures"] == 0 and d["failed"] >= 1 and d["fallbacks"] >= 1
    assert "could not capture" in caplog.text


def test_cuda_graphs_stay_off_where_they_cannot_run(caplog):
    with caplog.at_level(logging.WARNING):
        gen = make(True)  # no CUDA here (or, with CUDA, a CPU cache)
    assert gen.graphs is None and "CUDA" in gen.describe()["cuda_graphs"]
    rf = make(False, recipe="memflow")
    rf.set_cuda_graphs(True, capture=rerun_capture)
    assert rf.graphs is None and "memflow" in rf.graphs_off_reason
    assert make(False).describe()["cuda_graphs"] == "off"


@pytest.mark.gpu
def test_real_cuda_graphs_replay_the_normal_stream():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    reqs = requests()
    plain, graphed = make(False, device="cuda"), make(True, device="cuda")
    a, b = stream(plain, reqs), stream(graphed, reqs)
    d = graphed.describe()["cuda_graphs"]
    assert d["replays"] > 0 and d["failed"] == 0, d
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_status_reports_captures_and_fallbacks():
    from vacelive.bridge.run.loop import RunLoop, graph_status
    from vacelive.bridge.store import ParamStore

    assert graph_status({"captures": 6, "fallbacks": 2, "graphs": 6}) == {"graph_captures": 6, "graph_fallbacks": 2}
    assert graph_status("CUDA graphs need a CUDA device") == {"graph_captures": 0, "graph_fallbacks": 0}
    gen = make("rerun", vace=False)
    for _ in range(5):
        gen.step(ChunkRequest(prompts=[Prompt("a")], steps=1))
    loop = RunLoop(gen, ParamStore(), lambda f: None, pacer_options={"start": False})
    loop.describe = gen.describe()  # what the loop keeps after each chunk
    status = loop.status()
    assert status["graph_captures"] == gen.graphs.captures > 0 and status["graph_fallbacks"] == 0
    loop.stop()


class _Event:
    """A completion marker that logs what the pacing asked of it."""

    made = 0

    def __init__(self, log):
        self.log, self.n = log, _Event.made
        _Event.made += 1

    def record(self):
        self.log.append(("record", self.n))

    def synchronize(self):
        self.log.append(("wait", self.n))


@pytest.mark.parametrize("limit", [1, 2, 0])
def test_replays_wait_until_at_most_limit_are_queued(limit):
    """With `limit` replays queued, the next replay first waits for the oldest (an event
    synchronize: the GIL is free meanwhile); 0 queues every replay at once."""
    from vacelive.engine.dit.graphs import InFlight

    log = []

    def capture(fn):
        replay, out = rerun_capture(fn)
        return (lambda: (log.append(("replay",)), replay())[1]), out

    gen = make(False)
    gen.set_cuda_graphs(True, capture=capture)
    gen.graphs.in_flight = InFlight(limit, event=lambda: _Event(log))
    stream(gen, requests(6))
    replays = [i for i, e in enumerate(log) if e == ("replay",)]
    assert len(replays) > 10
    recorded = [e[1] for e in log if e[0] == "record"]
    waited = [e[1] for e in log if e[0] == "wait"]
    if limit == 0:
        assert not recorded and not waited
        return
    assert len(recorded) == len(replays)  # one marker after each replay
    assert waited == recorded[:len(replays) - limit]  # oldest first, each once
    for k, i in enumerate(replays[limit:], start=limit):  # replay k waits for replay k - limit
        assert ("wait", recorded[k - limit]) in log[:i]
        assert ("wait", recorded[k - limit + 1]) not in log[:i]
