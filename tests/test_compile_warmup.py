"""Nothing compiles during a show: engine.warmup enumerates every forward shape and RoPE mode a
stream can reach and runs them at start-up; compiled blocks then run only the warmed signatures
compiled (others eagerly, counted); a compile inside a chunk is counted, logged and noticed, and
/vace/status/recompiles reports it. torch.compile runs with backend="eager" here (TorchDynamo's
tracing and guards, which decide recompiles, without Inductor's code generation)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vacelive.bridge.run.loop import RunLoop
from vacelive.bridge.store import ParamStore
from vacelive.engine.config import tiny_config
from vacelive.engine.dit.compile import call_signature, compile_count
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.pipelines import get_recipe
from vacelive.engine.request import ChunkRequest, Prompt
from vacelive.engine.warmup import ForwardShape, reachable_shapes

pytestmark = pytest.mark.usefixtures("single_thread")
W = H = 32


@pytest.fixture
def fresh_dynamo():
    """Compiled code is cached per function across tests: start from an empty cache."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def make(recache="exact", vace=True, table=24, recipe="longlive", compile=True):
    cfg = tiny_config(num_layers=2).with_(rope_max_positions=table)
    gen = StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=vace, cfg=cfg, recache=recache,
                                 recipe=recipe)
    if compile:
        gen.set_compile(True, backend="eager")
    return gen


def kv(mode, *frames):
    return {ForwardShape("kv", mode, f) for f in frames}


def hints(*chunks):
    return {ForwardShape("hints", "local", n + p, p) for n in chunks for p in range(4)}


def test_reachable_shapes_of_every_recipe():
    r = get_recipe
    assert set(reachable_shapes(r("longlive"), recache="exact")) == kv("absolute", 3, 6, 9, 12) | kv("relative", 3, 12)
    assert set(reachable_shapes(r("longlive"), recache="newest")) == kv("absolute", 3) | kv("relative", 3)
    assert set(reachable_shapes(r("longlive"), recache="exact", vace=True)) >= hints(3)
    assert set(reachable_shapes(r("longlive"), rope="relative", recache="exact")) == kv("relative", 3, 6, 9, 12)
    assert set(reachable_shapes(r("memflow"), recache="newest")) == kv("absolute", 3) | kv("relative", 3)
    # StreamDiffusionV2: a 2-frame first chunk, then 1-frame chunks; no re-cache
    assert set(reachable_shapes(r("streamdiffusionv2"), vace=True)) == (kv("absolute", 2, 1) | kv("relative", 1)
                                                                          | hints(2, 1))
    # RewardForcing stores un-rotated keys from the start; Krea rebuilds its cache every chunk
    assert set(reachable_shapes(r("reward-forcing"))) == kv("relative", 3)
    assert set(reachable_shapes(r("krea-realtime"))) == kv("absolute", 3)
    assert set(reachable_shapes(r("self-forcing"))) == kv("absolute", 3) | kv("relative", 3)


def test_call_signature_sees_shapes_dtypes_and_flags():
    a, b = torch.zeros(1, 6, 4), torch.zeros(1, 6, 4, dtype=torch.bfloat16)
    assert call_signature((a, True)) != call_signature((a, False))
    assert call_signature((a, (a, a))) != call_signature((torch.zeros(1, 12, 4), (a, a)))
    assert call_signature((a, (a, a))) != call_signature((a, (a, a, a)))
    assert call_signature((a,)) != call_signature((b,))
    assert call_signature((a, (a, a))) == call_signature((torch.ones(1, 6, 4), (a, a)))


def test_a_compile_inside_a_chunk_is_counted_logged_and_noticed(fresh_dynamo, caplog):
    gen = make()  # compiled, never warmed up: the first chunk compiles
    with caplog.at_level(logging.WARNING, logger="vacelive.engine.generator"):
        r = gen.step(ChunkRequest(prompts=[Prompt("a")], steps=1))
    assert gen.counters["recompiles"] > 0 and gen.describe()["recompiles"] == gen.counters["recompiles"]
    assert any("torch.compile compiled" in n for n in r.notices)
    assert any("torch.compile compiled" in m for m in caplog.messages)
    n = gen.counters["recompiles"]
    r = gen.step(ChunkRequest(prompts=[Prompt("a")], steps=1))  # same shapes: nothing new
    assert gen.counters["recompiles"] == n and not r.notices


@pytest.mark.parametrize("recache", ["exact", "newest"])
def test_after_the_warm_up_nothing_compiles_past_the_table_end_with_cuts_resets_and_control(fresh_dynamo, recache):
    gen = make(recache)
    report = gen.warm_up()
    assert report["failed"] == [] and report["compiles"] > 0 and gen.counters["recompiles"] == 0
    assert gen.frame == 0 and gen.counters["chunks"] == 0 and gen.kv.rope_mode == "absolute"
    video = np.random.default_rng(0).integers(0, 255, (12, H, W, 4), dtype=np.uint8)
    prompts = ["a", "b"]
    compiles = compile_count()
    for c in range(16):  # 48 latent frames: past the 24-frame table, a cut every other chunk
        if c == 5:
            gen.reset()  # a reset mid-show, then early cuts while the window fills
        req = ChunkRequest(prompts=[Prompt(prompts[c % 2])], steps=2, video=video[:gen.next_chunk_frames],
                           hint_reuse=c % 3 == 0)
        r = gen.step(req)
        assert not any("torch.compile" in n for n in r.notices)
    assert gen.kv.rope_mode == "relative" and gen.counters["recaches"] >= 6
    assert gen.counters["recompiles"] == 0 and compile_count() == compiles
    assert gen._restore_compile.eager_calls == 0


def test_a_signature_the_warm_up_did_not_see_runs_eagerly_not_compiled(fresh_dynamo):
    gen = make(vace=False)
    gen.warm_up(real_chunks=0)
    blocks = gen._restore_compile
    text = gen.model.prepare_text(torch.zeros(1, 1, gen.model.cfg.text_dim))
    x = torch.randn(1, gen.model.cfg.in_dim, 5, H // 8, W // 8, generator=torch.Generator().manual_seed(1))
    compiles = compile_count()
    gen.kv.reset(0)
    with torch.no_grad():
        y = gen.model(x, torch.tensor(500.0), text, gen.kv, 0)  # 5 frames: no stream does this
    assert compile_count() == compiles and blocks.eager_calls > 0
    gen.set_compile(False)
    gen.kv.reset(0)
    with torch.no_grad():
        assert torch.equal(y, gen.model(x, torch.tensor(500.0), text, gen.kv, 0))


def test_the_warm_up_leaves_the_stream_exactly_as_a_fresh_one():
    requests = [ChunkRequest(prompts=[Prompt(p)], steps=2) for p in ("a", "a", "b", "b")]
    plain = make(compile=False)
    want = [plain.step(r).frames for r in requests]
    warmed = make(compile=False)
    warmed.warm_up()  # eager: runs every shape once, then resets
    assert warmed.counters == plain.counters | {"chunks": 0, "recaches": 0}
    got = [warmed.step(r).frames for r in requests]
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_status_reports_the_engines_recompiles():
    class Gen:
        next_chunk_frames = 12

        def describe(self):
            return {"pipeline": "longlive", "recompiles": 3}

    loop = RunLoop(Gen(), ParamStore(), lambda f: None, pacer_options={"start": False})
    assert loop.status()["recompiles"] == 3
    loop.describe = {}  # a remote engine that has not answered yet
    assert loop.status()["recompiles"] == 0
    loop.stop()


def test_live_lora_scale_changes_are_reported_as_compiles(fresh_dynamo, caplog):
    """PEFT keeps a live LoRA's scale as a Python float, which TorchDynamo specialises on: a scale
    change recompiles. Said at compile time, and counted like any compile in a chunk."""
    from vacelive.engine.lora import LoraSet, lora_target_names

    gen = make(vace=False, compile=False)
    g = torch.Generator().manual_seed(0)
    weights = {}
    for name in lora_target_names(gen.model):
        lin = gen.model.get_submodule(name)
        weights[f"base_model.model.{name}.lora_A.weight"] = torch.randn(2, lin.in_features, generator=g) * 0.1
        weights[f"base_model.model.{name}.lora_B.weight"] = torch.randn(lin.out_features, 2, generator=g) * 0.1
    gen.loras = LoraSet(gen.model)
    gen.loras.add("style", weights, scale=0.5, mode="live")
    assert gen.loras.modes == {"style": "live"}
    with caplog.at_level(logging.WARNING, logger="vacelive.engine.generator"):
        gen.set_compile(True, backend="eager")
    assert any("live LoRA" in m for m in caplog.messages)
    gen.warm_up()
    gen.step(ChunkRequest(prompts=[Prompt("a")], steps=1, lora_scales={"style": 0.5}))
    assert gen.counters["recompiles"] == 0
    r = gen.step(ChunkRequest(prompts=[Prompt("a")], steps=1, lora_scales={"style": 0.9}))
    assert gen.counters["recompiles"] > 0 and any("live LoRA" in n for n in r.notices)


def test_serve_warm_up_never_stops_the_start(caplog):
    from vacelive.bridge.run.generators import warm_up

    class Broken:
        def warm_up(self):
            raise RuntimeError("CUDA out of memory")

    class Fine:
        def warm_up(self):
            return {"shapes": 6, "compiles": 13, "seconds": 1.5}

    with caplog.at_level(logging.INFO, logger="vacelive.bridge.run"):
        warm_up(Broken())  # logged, the show starts anyway
        warm_up(Fine())
    assert any("warm-up failed" in m and "out of memory" in m for m in caplog.messages)
    assert any("6 shapes, 13 compiles" in m for m in caplog.messages)


@pytest.mark.parametrize("recipe", ["longlive", "self-forcing", "reward-forcing", "streamdiffusionv2",
                                    "krea-realtime", "memflow"])
def test_every_pipeline_warms_up_and_then_never_compiles(fresh_dynamo, recipe):
    gen = make(recipe=recipe, table=30)
    report = gen.warm_up()
    assert report["failed"] == []
    chunks = 32 if recipe == "streamdiffusionv2" else 12  # past the 30-frame table where a stream can get there
    for c in range(chunks):
        gen.step(ChunkRequest(prompts=[Prompt("ab"[c % 2])], steps=1))
    assert gen.counters["recompiles"] == 0 and gen._restore_compile.eager_calls == 0
    assert gen.kv.rope_mode == ("absolute" if recipe == "krea-realtime" else "relative")


def test_a_compiled_codec_is_warmed_up_and_sealed_with_the_dit(fresh_dynamo):
    """--compile-codec: the warm-up's real chunks carry a control video, so the codec's encode
    (VACE) and decode shapes, first chunk and steady state, compile at start; then a stream with
    control video, a cut and a reset compiles nothing, and a shape the warm-up never saw runs
    eagerly (counted) instead of compiling."""
    cfg = tiny_config(num_layers=2).with_(rope_max_positions=24)
    gen = StreamGenerator.random("tiny", width=W, height=H, codec="tae", cfg=cfg)
    gen.set_compile(True, backend="eager")
    gen.codec.use_compile(backend="eager")
    compiled = gen.codec.compiled_methods
    report = gen.warm_up()
    names = {key[0] for key in compiled.allowed}
    assert compiled.sealed and names == {"_encode_chunk", "_decode_chunk"} and report["codec_signatures"] == 2
    assert gen.describe()["compile_codec"] is True
    rng = np.random.default_rng(0)
    for c in range(8):
        video = rng.integers(0, 255, (gen.next_chunk_frames, H, W, 4), dtype=np.uint8)
        gen.step(ChunkRequest(prompts=[Prompt("ab"[c // 3 % 2])], steps=1, video=video, reset=c == 5))
    assert gen.counters["recompiles"] == 0 and compiled.eager_calls == 0
    before = compile_count()
    gen.codec.encode(torch.zeros(1, 3, 5, 16, 16))  # a clip shape no stream here has
    assert compile_count() == before and compiled.eager_calls == 1
    gen.codec.use_compile(False)
    assert gen.codec.compiled_methods is None and "_decode_chunk" not in vars(gen.codec)
