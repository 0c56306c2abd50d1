"""Stream-shape switches (engine.pipelines.shaped_recipe): shorter chunks for lower latency, a
one-frame first chunk for a fast first frame, a shorter KV window; checked values, the stream's
frame accounting and cache window, the start-up warm-up covering the new shapes, the CLI flags
and the multi-GPU refusal (of these and of --cuda-graphs)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from vacelive.bridge.config import ConfigError, add_arguments
from vacelive.engine.config import tiny_config
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.pipelines import get_recipe, shaped_recipe
from vacelive.engine.request import ChunkRequest, Prompt
from vacelive.engine.warmup import reachable_shapes

pytestmark = pytest.mark.usefixtures("single_thread")
W = H = 32


def test_shaped_recipe_overrides_only_what_is_asked_and_checks_it():
    ll = get_recipe("longlive")
    assert shaped_recipe(ll) is ll
    one = shaped_recipe(ll, chunk_latents=1)
    assert (one.chunk_latents(True), one.chunk_latents(False)) == (3, 1)
    fast_start = shaped_recipe(ll, first_chunk_latents=1)
    assert (fast_start.chunk_latents(True), fast_start.chunk_latents(False)) == (1, 3)
    sd = shaped_recipe(get_recipe("streamdiffusionv2"), first_chunk_latents=1)
    assert (sd.chunk_latents(True), sd.chunk_latents(False)) == (1, 1)
    assert shaped_recipe(ll, kv_window=6).cache.local_frames == 6 and one.cache == ll.cache
    for bad in (0, 4, True, 1.5, "2"):
        with pytest.raises(ValueError, match="chunk_latents must be an integer in 1..3"):
            shaped_recipe(ll, chunk_latents=bad)
    with pytest.raises(ValueError, match="krea-realtime rebuilds its cache"):
        shaped_recipe(get_recipe("krea-realtime"), chunk_latents=1)
    with pytest.raises(ValueError, match="first_chunk_latents must be > 1 for reward-forcing"):
        shaped_recipe(get_recipe("reward-forcing"), first_chunk_latents=1)


def test_one_frame_first_chunk_then_four_frame_chunks_stream_with_vace_and_cuts():
    gen = StreamGenerator.random("tiny", width=W, height=H, codec="tae", chunk_latents=1, first_chunk_latents=1,
                                 recache="newest")
    video = np.random.default_rng(0).integers(0, 255, (12, H, W, 4), dtype=np.uint8)
    sizes, frames = [], []
    for c in range(16):  # past the 12-frame window, a prompt cut every fifth chunk
        n = gen.next_chunk_frames
        r = gen.step(ChunkRequest(prompts=[Prompt("ab"[c // 5 % 2])], steps=2, video=video[:n]))
        assert r.frames.shape[0] == n and torch.isfinite(r.frames.float()).all()
        sizes.append(n)
        frames.append(gen.frame)
    assert sizes == [1] + [4] * 15  # Wan's first latent frame is one video frame
    assert frames == list(range(1, 17))  # one latent frame per chunk
    assert gen.counters["recaches"] == 3
    window = gen.kv.window_frames()
    assert window == [0, 1, 2] + list(range(7, 16))  # the sink + the 9 newest frames


def test_one_frame_first_chunk_keeps_the_pipelines_chunks_after_it():
    gen = StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=False, first_chunk_latents=1)
    sizes = [gen.step(ChunkRequest(prompts=[Prompt("a")], steps=1)).frames.shape[0] for _ in range(5)]
    assert sizes == [1, 12, 12, 12, 12] and gen.frame == 13
    assert gen.kv.window_frames() == [0, 1, 2] + list(range(4, 13))  # sink frames 0-2 span two chunks
    gen.reset()
    assert gen.next_chunk_frames == 1  # every reset starts with the short chunk


def test_the_warm_up_covers_the_shorter_chunks(fresh_dynamo_shape):
    cfg = tiny_config(num_layers=2).with_(rope_max_positions=24)
    gen = StreamGenerator.random("tiny", width=W, height=H, codec="tae", cfg=cfg, chunk_latents=1,
                                 first_chunk_latents=1)
    shapes = reachable_shapes(gen.recipe, vace=True)
    assert {1, 12} <= {s.frames for s in shapes if s.kind == "kv"}  # the chunks, the exact re-cache
    assert {s.frames for s in shapes if s.kind == "hints" and s.prefix == 0} == {1}
    gen.set_compile(True, backend="eager")
    assert gen.warm_up()["failed"] == []
    for c in range(30):  # past the 24-frame table, with cuts
        gen.step(ChunkRequest(prompts=[Prompt("ab"[c // 4 % 2])], steps=1))
    assert gen.counters["recompiles"] == 0 and gen._restore_compile.eager_calls == 0


@pytest.fixture
def fresh_dynamo_shape():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _serve_args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, "model")
    return parser.parse_args(list(argv))


def test_cli_flags_reach_the_generator_and_multi_gpu_refuses_them():
    from vacelive.bridge.run.parallel import shard_spec

    cfg = _serve_args("--chunk-latents", "1", "--first-chunk-latents", "1")
    assert cfg.chunk_latents == 1 and cfg.first_chunk_latents == 1
    cfg.gpus, cfg.device, cfg.pipeline = 2, "cpu", "longlive"
    with pytest.raises(ConfigError, match="drop --chunk-latents, --first-chunk-latents"):
        shard_spec(cfg, "float32")
    cfg = _serve_args("--clean-pass", "reuse", "--cuda-graphs")
    cfg.gpus, cfg.device, cfg.pipeline = 2, "cpu", "longlive"
    with pytest.raises(ConfigError, match="drop --clean-pass reuse, --cuda-graphs"):
        shard_spec(cfg, "float32")


def test_compile_codec_reaches_the_generator_warms_up_and_multi_gpu_refuses_it(monkeypatch):
    from vacelive.bridge.run import generators
    from vacelive.bridge.run.parallel import shard_spec
    from vacelive.engine.generator import StreamGenerator

    built, warmed = {}, []

    def fake_random(size, **kw):
        built.update(kw)
        return "gen"

    monkeypatch.setattr(StreamGenerator, "random", staticmethod(fake_random))
    monkeypatch.setattr(generators, "warm_up", warmed.append)
    monkeypatch.setattr(generators, "log_speed_choices", lambda gen: None)
    cfg = _serve_args("--compile-codec", "--random-weights", "tiny", "--device", "cpu", "--sdpa", "default")
    assert generators.build_local_generator(cfg) == "gen"
    assert built["compile_codec"] is True and built["compile"] is False
    assert warmed == ["gen"]  # the codec's shapes compile at start, not in the show
    cfg.gpus, cfg.pipeline = 2, "longlive"
    with pytest.raises(ConfigError, match="--compile-codec"):
        shard_spec(cfg, "float32")
