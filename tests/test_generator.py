"""StreamGenerator on tiny random weights (CPU): frame counts, determinism and seeds, prompt cuts
(cross-attention reset + LongLive KV re-cache), blends and transitions, live-parameter clamping,
LoRA scales, failure rollback, missing weights, VACE plumbing through the Conditioner protocol."""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.factory import byte_tokenizer, random_text_encoder
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.lora import lora_target_names
from vacelive.engine.models_dir import MissingWeightsError
from vacelive.engine.pipelines import WeightOptions, get_recipe
from vacelive.engine.request import ChunkRequest, Generator, Prompt
from vacelive.engine.vace_input import VaceInput
from support import count_hints

W, H = 32, 32  # latent 4x4 -> 2x2 tokens per latent frame
FT = (H // 16) * (W // 16)  # KV-cache tokens per latent frame


pytestmark = pytest.mark.usefixtures("single_thread")


def make(codec="tae", seed=0, **kw) -> StreamGenerator:
    kw.setdefault("vace", False)
    return StreamGenerator.random("tiny", width=W, height=H, codec=codec, seed=seed, **kw)


def req(text="a neon cat", **kw) -> ChunkRequest:
    prompts = kw.pop("prompts", None) or [Prompt(text)]
    return ChunkRequest(prompts=prompts, **kw)


def run(gen, requests):
    return [gen.step(r) for r in requests]


# ---- contract ----------------------------------------------------------------------------------
def test_frame_counts_first_chunk_9_then_12_and_reset_gives_9_again():
    gen = make()
    assert isinstance(gen, Generator)
    assert gen.next_chunk_frames == 9
    sizes = []
    for _ in range(3):
        r = gen.step(req())
        sizes.append(r.frames.shape[0])
        assert r.frames.shape[1:] == (H, W, 4) and r.frames.dtype == torch.uint8
        assert (r.frames[..., 3] == 255).all()
    assert sizes == [9, 12, 12] and gen.next_chunk_frames == 12
    encodes = gen.text_encoder.calls
    gen.reset()
    assert gen.next_chunk_frames == 9 and gen.frame == 0 and gen.kv.window_frames() == []
    assert gen.text is None and gen.history.head == 0 and gen.decoder.first
    assert gen.step(req()).frames.shape[0] == 9
    assert gen.text_encoder.calls == encodes  # the embedding LRU survives a reset
    assert gen.step(req()).frames.shape[0] == 12
    r = gen.step(req(reset=True))  # a reset carried by the request
    assert r.frames.shape[0] == 9 and r.chunk_index == 0 and gen.counters["resets"] == 2
    d = gen.describe()
    assert {d["pipeline"], d["codec"], d["rope_mode"]} == {"longlive", "tae", "absolute"}
    assert d["width"] == W and d["height"] == H and d["next_chunk_frames"] == 12


def test_timings_have_every_stage():
    r = make().step(req())
    assert {"text", "recache", "vace", "hints", "dit", "decode", "output", "total", "wall"} <= set(r.timings_ms)
    assert all(v >= 0 for v in r.timings_ms.values())
    assert r.timings_ms["dit"] > 0 and r.timings_ms["total"] >= r.timings_ms["dit"]


# ---- seeds -------------------------------------------------------------------------------------
def test_same_seed_same_frames_other_seed_differs_seed_change_applies_next_chunk():
    a = run(make(), [req(seed=7)] * 3)
    b = run(make(), [req(seed=7)] * 3)
    c = run(make(), [req(seed=8)] * 3)
    d = run(make(), [req(seed=7), req(seed=7), req(seed=8)])
    for x, y in zip(a, b):
        assert torch.equal(x.frames, y.frames)
    assert not torch.equal(a[0].frames, c[0].frames)
    assert torch.equal(d[0].frames, a[0].frames) and torch.equal(d[1].frames, a[1].frames)
    assert not torch.equal(d[2].frames, a[2].frames)
    # after a reset the stream replays exactly (noise depends only on seed and chunk index)
    gen = make()
    first = run(gen, [req(seed=7)] * 2)
    gen.reset()
    again = run(gen, [req(seed=7)] * 2)
    assert all(torch.equal(x.frames, y.frames) for x, y in zip(first, again))


# ---- prompts -------------------------------------------------------------------------------------
class ForwardLog:
    """Records every DiT forward (frames, timestep, start frame) and the KV storage right after a
    forward of `window` frames (the re-cache)."""

    def __init__(self, gen):
        self.gen, self.calls, self.after_recache = gen, [], None
        gen.model.register_forward_hook(self)

    def __call__(self, module, args, output):
        x, t, text, kv, start = args[:5]
        self.calls.append((x.shape[2], float(t), start, text))
        if x.shape[2] > self.gen.frames_per_chunk:
            self.after_recache = self.gen.kv.storage.clone()


def test_prompt_cut_resets_cross_attention_and_recaches_ring_keeping_sink():
    gen = make()
    log = ForwardLog(gen)
    run(gen, [req("a red cat")] * 5)  # frames 0..14
    old_text = gen.text
    layers = gen.model.cfg.num_layers
    assert old_text.kv_computations == layers  # computed once per block for 5 chunks x 5 passes
    before = gen.kv.storage.clone()
    log.calls.clear()

    r = gen.step(req("blue sea at night"))  # a cut: transition_chunks = 0
    assert gen.counters["recaches"] == 1
    recache = [c for c in log.calls if c[0] > 3]
    assert len(recache) == 1
    frames, t, start, text = recache[0]
    assert (frames, t, start) == (12, 0.0, 3) and text is gen.text  # last 12 latents, own start, new prompt
    assert gen.text is not old_text and gen.text.kv_computations == layers and old_text.kv_computations == layers
    after = log.after_recache
    assert torch.equal(after[:, :, :, :3 * FT], before[:, :, :, :3 * FT])  # sink keeps the old prompt's K/V
    for slot in range(3, 12):  # every ring slot (frames 6..14) was re-computed
        sl = slice(slot * FT, (slot + 1) * FT)
        assert not torch.equal(after[:, :, :, sl], before[:, :, :, sl]), slot
    assert gen.kv.window_frames() == [0, 1, 2] + list(range(9, 18)) and r.frames.shape[0] == 12

    gen.step(req("blue sea at night"))  # unchanged prompt: same TextState, no recomputation
    assert gen.counters["recaches"] == 1 and gen.text is text and text.kv_computations == layers


def test_early_cut_recaches_from_frame_0_and_rewrites_the_sink_like_longlive():
    gen = make()
    log = ForwardLog(gen)
    run(gen, [req("a red cat")] * 2)  # frames 0..5
    before = gen.kv.storage.clone()
    gen.step(req("blue sea"))
    assert [c[:3] for c in log.calls if c[0] > 3] == [(6, 0.0, 0)]
    assert not torch.equal(log.after_recache[:, :, :, :3 * FT], before[:, :, :, :3 * FT])


def test_no_recache_on_the_first_chunk_or_in_a_recipe_without_recache():
    gen = make()
    gen.step(req("a"))
    assert gen.counters["recaches"] == 0
    sf = make(recipe="self-forcing")
    run(sf, [req("a"), req("b")])
    assert sf.counters["recaches"] == 0 and sf.kv.policy.window == 21 and sf.kv.policy.sink == 0


def test_blend_1_0_equals_the_first_prompt_alone():
    a = run(make(), [req(prompts=[Prompt("a red cat", 1.0), Prompt("blue sea", 0.0)])] * 2)
    b = run(make(), [req("a red cat")] * 2)
    assert all(torch.equal(x.frames, y.frames) for x, y in zip(a, b))
    c = run(make(), [req(prompts=[Prompt("a red cat", 0.5), Prompt("blue sea", 0.5)])] * 2)
    assert not torch.equal(c[0].frames, b[0].frames)


def test_transition_changes_embeddings_gradually_without_a_cut():
    gen = make()
    run(gen, [req("a red cat")] * 2)
    start = gen.prompt_state.current.clone()
    target = gen.prompt_state.cache.get(["blue sea at night"])[0]
    dists, texts = [], []
    for _ in range(5):
        gen.step(req("blue sea at night", transition_chunks=4))
        dists.append(float((gen.prompt_state.current - target).norm()))
        texts.append(gen.text)
    assert gen.counters["recaches"] == 0  # blending is not a cut
    assert dists[0] < float((start - target).norm())
    assert all(a > b for a, b in zip(dists[:3], dists[1:4])) and dists[3] == 0.0 and dists[4] == 0.0
    assert len({id(t) for t in texts[:4]}) == 4 and texts[4] is texts[3]  # new cross-attn K/V per blend step


def test_random_text_encoder_distinguishes_prompts():
    enc = random_text_encoder(32, seq_len=16)
    a, b, a2 = enc.encode(["a red cat"]), enc.encode(["a red car"]), enc.encode(["a red cat"])
    assert a.shape == (1, 16, 32) and torch.equal(a, a2) and not torch.equal(a, b)
    ids = byte_tokenizer()(["ab"], add_special_tokens=True)["input_ids"][0]
    assert len(ids) == 3 and ids[-1] == 1


# ---- live parameters -------------------------------------------------------------------------------
def test_out_of_range_parameters_are_clamped_and_reported():
    a = make()
    r = a.step(req(steps=9, context_scale=5.0, seed=3))
    assert any("steps 9" in n for n in r.notices) and any("context_scale 5.0" in n for n in r.notices)
    b = make()
    assert torch.equal(r.frames, b.step(req(steps=4, seed=3)).frames)
    r = a.step(req(steps=0, context_scale=float("nan"), seed="x", lora_scales={"nope": 1.0}))
    notes = " | ".join(r.notices)
    assert "steps 0" in notes and "not a number" in notes and "seed 'x'" in notes and "no LoRA named 'nope'" in notes
    assert r.frames.shape[0] == 12


def test_step_count_changes_output():
    one = make().step(req(steps=1)).frames
    four = make().step(req(steps=4)).frames
    assert not torch.equal(one, four)


def test_lora_scale_applies_live_clamped_and_recomputes_text_kv():
    gen = make()
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name in lora_target_names(gen.model):
        lin = gen.model.get_submodule(name)
        sd[f"base_model.model.{name}.lora_A.weight"] = torch.randn(2, lin.in_features, generator=g) * 0.2
        sd[f"base_model.model.{name}.lora_B.weight"] = torch.randn(lin.out_features, 2, generator=g) * 0.2
    gen.loras.add("style", sd, scale=1.0)
    base = gen.step(req())
    computations = gen.text.kv_computations
    r = gen.step(req(lora_scales={"style": 3.0}))
    assert gen.loras.scales["style"] == 2.0 and any("lora_scales['style'] 3.0" in n for n in r.notices)
    assert gen.text.kv_computations == 2 * computations  # weights changed: text K/V recomputed
    assert gen.describe()["loras"] == {"style": 2.0}
    assert base.frames.shape[0] == 9


# ---- failures ---------------------------------------------------------------------------------------
class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["recache", "dit", "decode", "output"])
def test_a_failing_chunk_leaves_the_stream_consistent(where, monkeypatch):
    requests = [req("a red cat")] * 4 + [req("blue sea")] + [req("blue sea")] * 2  # a cut at chunk 4
    reference = run(make(), requests)

    gen = make()
    run(gen, requests[:4])
    if where == "decode":
        original = gen.decoder.decode

        def failing(latents):
            gen.decoder.decode = original
            original(latents[:, :, :1])  # let the stream advance, then fail (worst case)
            raise Boom("codec failure")

        gen.decoder.decode = failing
    elif where in ("recache", "dit"):
        calls = {"n": 0}
        fail_at = 1 if where == "recache" else 3  # 3: the re-cache and one denoising pass are done

        def hook(module, args, output):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise Boom("DiT failure")

        handle = gen.model.blocks[1].register_forward_hook(hook)
    else:
        import vacelive.engine.generator as generator_module

        real = generator_module.frames_to_rgba
        monkeypatch.setattr(generator_module, "frames_to_rgba", lambda f: (_ for _ in ()).throw(Boom("oom")))
    frame, chunk = gen.frame, gen.chunk_index
    with pytest.raises(Boom):
        gen.step(requests[4])
    assert (gen.frame, gen.chunk_index, gen.counters["failed_steps"]) == (frame, chunk, 1)
    if where in ("recache", "dit"):
        handle.remove()
    if where == "output":
        monkeypatch.setattr(generator_module, "frames_to_rgba", real)
    results = run(gen, requests[4:])
    for got, want in zip(results, reference[4:]):
        assert got.chunk_index == want.chunk_index
        assert torch.equal(got.frames, want.frames)


# ---- weights -----------------------------------------------------------------------------------------
def test_from_recipe_lists_every_missing_file(tmp_path):
    recipe = get_recipe("longlive")
    with pytest.raises(MissingWeightsError) as err:
        StreamGenerator.from_recipe("longlive", tmp_path, device="cpu", vace=True)
    text = str(err.value)
    needed = recipe.needed(WeightOptions())
    assert len(needed) >= 9
    for f in needed:
        assert str(tmp_path / f.path) in text
    with pytest.raises(MissingWeightsError) as err:
        StreamGenerator.from_recipe("longlive", tmp_path, device="cpu", vace=False, codec="tae", text_encoder="fp8")
    text = str(err.value)
    assert "Wan2_1-VACE_module" not in text and "taew2_1.pth" in text and "fp8" in text


# ---- VACE through the Conditioner protocol --------------------------------------------------------------
class FixedConditioner:
    """A Conditioner that hands the generator one random VACE context per chunk (seeded by the
    chunk number) and records how it was called."""

    def __init__(self):
        self.calls, self.resets = [], 0
        self.notices: list[str] = []

    def prepare(self, request, *, first_chunk, num_frames):
        self.calls.append((first_chunk, num_frames))
        self.notices = ["cond note"]
        g = torch.Generator().manual_seed(len(self.calls))
        return VaceInput(torch.randn(1, 96, 3, H // 8, W // 8, generator=g))

    def reset(self):
        self.resets += 1
        self.calls.clear()


def make_vace(**kw):
    from vacelive.engine.factory import build_random

    parts = build_random("tiny", codec="tae", vace=False, seed=0)
    from vacelive.engine.factory import random_dit

    model = random_dit(tiny_config(), vace=True, seed=0)
    cond = FixedConditioner()
    gen = StreamGenerator(model, parts.codec, parts.text_encoder, width=W, height=H, conditioner=cond, **kw)
    return gen, cond


def test_vace_hints_every_step_or_once_per_chunk_and_never_in_the_clean_pass():
    gen, cond = make_vace()
    hints = count_hints(gen)
    seen = []
    gen.model.register_forward_hook(lambda m, a, k, o: seen.append("hints" in k), with_kwargs=True)
    r = gen.step(req(steps=4))
    # 4 denoising passes; the first chunk's clean pass waits for the next step (StreamGenerator.flush)
    assert hints["n"] == 4 and seen == [True] * 4
    assert "cond note" in r.notices and cond.calls == [(True, 9)]
    assert r.timings_ms["hints"] > 0
    seen.clear()
    gen.step(req(steps=3, hint_reuse=True))  # the first chunk's clean pass, then this one's inline
    assert hints["n"] == 5 and seen == [False] + [True] * 3 + [False] and cond.calls[-1] == (False, 12)
    seen.clear()
    gen.flush()  # nothing left to run
    assert seen == []
    gen.defer_clean_pass = True
    gen.step(req(steps=1))
    gen.flush()
    assert seen == [True, False]
    gen.reset()
    assert cond.resets == 1 and gen.next_chunk_frames == 9


def test_vace_context_scale_0_equals_text_only_and_scale_changes_output():
    gen0, _ = make_vace()
    gen1, _ = make_vace()
    text_only = make(seed=0)
    a = gen0.step(req(context_scale=0.0)).frames
    b = gen1.step(req(context_scale=1.0)).frames
    # text-only generator with the same DiT weights: rebuild one without conditioner
    from vacelive.engine.factory import random_dit

    plain = StreamGenerator(random_dit(tiny_config(), vace=True, seed=0), text_only.codec, text_only.text_encoder,
                            width=W, height=H)
    c = plain.step(req()).frames
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_without_vace_inputs_are_ignored_with_one_notice():
    gen = make()
    video = torch.zeros(9, H, W, 4, dtype=torch.uint8)
    r1 = gen.step(req(video=video))
    r2 = gen.step(req(video=video))
    assert any("without VACE" in n for n in r1.notices) and not any("without VACE" in n for n in r2.notices)


def test_vace_true_without_the_conditioning_module_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vacelive.engine.conditioning", None)  # as if the module were absent
    with pytest.raises(RuntimeError, match="vace=False"):
        StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=True)


# ---- speed switches -----------------------------------------------------------------------------------
def _lora(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name in lora_target_names(model):
        lin = model.get_submodule(name)
        sd[f"base_model.model.{name}.lora_A.weight"] = torch.randn(2, lin.in_features, generator=g) * 0.2
        sd[f"base_model.model.{name}.lora_B.weight"] = torch.randn(lin.out_features, 2, generator=g) * 0.2
    return sd


def test_fp8_switch_is_reversible_and_requantises_after_a_lora_rescale():
    exact = make().step(req()).frames
    gen = make(fp8=True)
    assert gen.describe()["fp8"] is True
    assert not torch.equal(gen.step(req()).frames, exact)  # a different (approximate) path
    gen.set_fp8(False)
    gen.reset()
    assert torch.equal(gen.step(req()).frames, exact)  # restored bf16/fp32 Linears: exact again

    a, b = make(), make()
    for g in (a, b):
        g.loras.add("style", _lora(g.model), scale=1.0)
    a.set_fp8(True)
    a.step(req(lora_scales={"style": 0.5}))  # re-merge while FP8 is on: must re-quantise
    b.step(req(lora_scales={"style": 0.5}))
    b.set_fp8(True)  # quantised from the already re-merged weights
    for g in (a, b):
        g.reset()
    assert torch.equal(a.step(req()).frames, b.step(req()).frames)


def test_sdpa_backend_switch_math_matches_auto_on_cpu():
    auto = make().step(req()).frames
    math_ = make(sdpa="math").step(req()).frames
    assert (auto.int() - math_.int()).abs().max() <= 1
    with pytest.raises(ValueError, match="sdpa"):
        make(sdpa="fastest")


@pytest.mark.gpu
def test_gpu_compiled_blocks_match_eager_and_bf16_stream_is_finite():
    eager = StreamGenerator.random("tiny", width=64, height=64, codec="tae", device="cuda", vace=False)
    comp = StreamGenerator.random("tiny", width=64, height=64, codec="tae", device="cuda", vace=False, compile=True)
    for _ in range(3):
        a, b = eager.step(req()), comp.step(req())
        assert a.frames.device.type == "cuda" and a.frames.shape == b.frames.shape
        assert (a.frames.int() - b.frames.int()).abs().float().mean() < 3.0
        assert set(a.timings_ms) >= {"dit", "decode", "total"}
