"""Pipeline parallelism over DiT blocks (engine.parallel) on CPU with gloo: 2 and 3 ranks stream
10 chunks with a prompt cut (LongLive KV re-cache) and VACE control, equal to the single-process
stream bit for bit; a killed rank fails the chunk with a clear error within the timeout and every
later chunk at once; the placement is the optimal balanced contiguous split."""
from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.parallel.launch import ShardSpec, start_local
from vacelive.engine.parallel.partition import Placement, block_costs, partition
from vacelive.engine.parallel.wire import PipelineDead
from vacelive.engine.request import ChunkRequest, Prompt

W, H = 32, 32
CFG = tiny_config(num_layers=6, vace_layers=(0, 2, 3))
SPEC = ShardSpec(random_size="tiny", cfg=CFG, codec="tae", width=W, height=H, dtype="float32", timeout_s=20)

pytestmark = pytest.mark.usefixtures("single_thread")


def control(frames: int, phase: int) -> np.ndarray:
    x = np.arange(W, dtype=np.float32)[None, None, :]
    t = np.arange(phase, phase + frames, dtype=np.float32)[:, None, None]
    ramp = ((x * 8 + t * 16) % 256) * np.ones((1, H, 1), np.float32)
    out = np.empty((frames, H, W, 4), np.uint8)
    out[..., :3] = ramp[..., None].astype(np.uint8)
    out[..., 3] = 255
    return out


def requests(gen, chunks: int = 10):
    """A cut to a new prompt at chunk 5, hint reuse on at chunk 7, VACE control throughout."""
    phase = 0
    for i in range(chunks):
        n = gen.next_chunk_frames
        prompt = "a red cat" if i < 5 else "a blue dog"
        yield ChunkRequest(prompts=[Prompt(prompt)], video=control(n, phase), seed=7, hint_reuse=i >= 7,
                           context_scale=0.0 if i == 8 else 1.0)
        phase += n


def run(gen, chunks: int = 10):
    return [gen.step(r).frames.clone() for r in requests(gen, chunks)]


@pytest.fixture(scope="module")
def reference():
    gen = StreamGenerator.random("tiny", width=W, height=H, codec="tae", seed=0, vace=True, cfg=CFG)
    frames = run(gen)
    return frames, gen.counters["recaches"]


@pytest.mark.parametrize("world", [2, 3])
def test_pipelined_stream_equals_single_process(reference, world):
    frames, recaches = reference
    stream = start_local(SPEC, world)
    try:
        got = run(stream)
        assert stream.counters["recaches"] == recaches == 1
        placement = stream.describe()["parallel"]["placement"]
        assert len(placement) == world and placement[0]["layers"][0] == 0 and placement[-1]["layers"][1] == 6
    finally:
        stream.close()
    assert all(p.exitcode == 0 for p in stream.processes)
    assert len(got) == len(frames) == 10
    for i, (a, b) in enumerate(zip(got, frames)):
        assert torch.equal(a, b), f"chunk {i} differs"


@pytest.mark.parametrize("mode", ["pipeline", "sequence"])
def test_killed_rank_ends_the_stream_with_a_clear_error(mode):
    stream = start_local(replace(SPEC, mode=mode), 2)
    try:
        reqs = requests(stream, 4)
        stream.step(next(reqs))
        stream.processes[0].kill()
        stream.processes[0].join(10)
        with pytest.raises(PipelineDead, match="rank 1 is not reachable|rank 1 stopped answering|exchange failed"):
            stream.step(next(reqs))
        with pytest.raises(PipelineDead, match="multi-GPU pipeline stopped"):  # at once, no new wait
            stream.step(next(reqs))
        assert stream.describe()["parallel"]["dead"]
    finally:
        stream.close(timeout=1)


def brute_force(costs, world, extra):
    best = None
    for cuts in itertools.combinations(range(1, len(costs)), world - 1):
        bounds = (0, *cuts, len(costs))
        loads = [sum(costs[a:b]) + (extra if r == 0 else 0) for r, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        best = max(loads) if best is None else min(best, max(loads))
    return best


@pytest.mark.parametrize("world,extra", [(2, 0.0), (3, 2.0), (4, 5.0), (5, 0.5)])
def test_partition_is_the_optimal_contiguous_split(world, extra):
    costs = block_costs(12, (0, 2, 4, 6, 8, 10), dim=64, ffn_dim=128, text_len=16, chunk_tokens=48,
                        window_tokens=192)
    ranges = partition(costs, world, extra)
    assert ranges[0][0] == 0 and ranges[-1][1] == 12
    assert all(a < b and b == c for (a, b), (c, _) in zip(ranges, ranges[1:]))
    loads = [sum(costs[a:b]) + (extra if r == 0 else 0) for r, (a, b) in enumerate(ranges)]
    assert max(loads) == pytest.approx(brute_force(costs, world, extra))


def test_vace_blocks_live_with_the_layer_they_feed():
    p = Placement(((0, 11), (11, 21), (21, 30)), tuple(range(0, 30, 2)))
    assert p.vace_blocks(0) == tuple(range(6)) and p.vace_blocks(1) == (6, 7, 8, 9, 10)
    assert p.vace_blocks(2) == (11, 12, 13, 14)
    assert [p.rank_of_layer(x) for x in (10, 11, 20, 21, 29)] == [0, 1, 1, 2, 2]


def parse(*argv):
    from vacelive.bridge import config
    from vacelive.bridge.cli import _build_parser

    return config.resolve(_build_parser().parse_args(list(argv)))


def test_serve_gpus_builds_the_pipelined_generator_and_refuses_what_it_cannot_run():
    from vacelive.bridge.config import ConfigError
    from vacelive.bridge.run.generators import build_local_generator

    base = ("serve", "--random-weights", "tiny", "--device", "cpu", "--width", "32", "--height", "32",
            "--codec", "tae", "--gpus", "2", "--parallel-timeout", "20")
    with pytest.raises(ConfigError, match="--compile"):
        build_local_generator(parse(*base, "--compile"))
    with pytest.raises(ConfigError, match="own cache rule"):
        build_local_generator(parse(*base, "--pipeline", "reward-forcing"))
    with pytest.raises(ConfigError, match="num_heads"):  # the tiny DiT has 2 heads
        build_local_generator(parse(*base[:-4], "--gpus", "3", "--parallel-mode", "sequence"))
    gen = build_local_generator(parse(*base))
    try:
        res = gen.step(ChunkRequest(prompts=[Prompt("a red cat")]))
        assert res.frames.shape == (9, 32, 32, 4)
        assert gen.describe()["parallel"]["ranks"] == 2
    finally:
        gen.close()


# Sequence parallelism (Ulysses): 6 heads and 6 tokens per frame split over 2 and 3 ranks.
SEQ_CFG = tiny_config(dim=192, num_heads=6, num_layers=3, vace_layers=(0, 2))
SW, SH = 48, 32  # 3 x 2 tokens per frame


def seq_reference():
    gen = StreamGenerator.random("tiny", width=SW, height=SH, codec="tae", seed=0, vace=True, cfg=SEQ_CFG)
    return gen


@pytest.mark.parametrize("world", [2, 3])
def test_sequence_parallel_stream_equals_single_process(world):
    ref = seq_reference()
    want = [ref.step(r).frames.clone() for r in seq_requests(ref)]
    spec = replace(SPEC, cfg=SEQ_CFG, width=SW, height=SH, mode="sequence")
    stream = start_local(spec, world)
    try:
        got = [stream.step(r).frames.clone() for r in seq_requests(stream)]
        assert stream.describe()["parallel"]["mode"] == "sequence"
        assert stream.counters["recaches"] == ref.counters["recaches"] == 1
    finally:
        stream.close()
    assert all(p.exitcode == 0 for p in stream.processes)
    for i, (a, b) in enumerate(zip(got, want)):
        # same math, matmuls over fewer rows: equal up to fp32 round-off (uint8 frames: at most 1 level)
        assert (a.int() - b.int()).abs().max() <= 1, f"chunk {i} differs"


def seq_requests(gen, chunks: int = 6):
    phase = 0
    for i in range(chunks):
        n = gen.next_chunk_frames
        x = np.arange(SW, dtype=np.float32)[None, None, :]
        t = np.arange(phase, phase + n, dtype=np.float32)[:, None, None]
        ramp = ((x * 8 + t * 16) % 256) * np.ones((1, SH, 1), np.float32)
        video = np.empty((n, SH, SW, 4), np.uint8)
        video[..., :3] = ramp[..., None].astype(np.uint8)
        video[..., 3] = 255
        yield ChunkRequest(prompts=[Prompt("a red cat" if i < 3 else "a blue dog")], video=video, seed=7,
                           hint_reuse=i >= 4)
        phase += n


def test_sequence_parallel_refuses_a_split_it_cannot_make():
    with pytest.raises(ValueError, match="num_heads"):
        start_local(replace(SPEC, cfg=SEQ_CFG, width=SW, height=SH, mode="sequence"), 4)


def test_idle_workers_wait_and_a_silent_rank_fails_the_chunk_within_the_timeout():
    """A pause longer than the timeout between chunks is fine (workers wait for rank 0 as long as
    it takes); a rank that stops answering (SIGSTOP: alive, sockets open) fails the chunk after
    the timeout instead of hanging the show."""
    import os
    import signal
    import time

    stream = start_local(replace(SPEC, timeout_s=4.0), 2)
    worker = stream.processes[0]
    try:
        reqs = requests(stream, 4)
        stream.step(next(reqs))
        time.sleep(5.0)  # the show pauses longer than the timeout
        stream.step(next(reqs))
        os.kill(worker.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(PipelineDead, match="rank 1"):
            stream.step(next(reqs))
        assert time.monotonic() - t0 < 60  # bounded (4 s here), never a hang
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        worker.kill()
        stream.close(timeout=1)
