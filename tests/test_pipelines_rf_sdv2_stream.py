"""RewardForcing and StreamDiffusionV2 through the real StreamGenerator (tiny random DiT with live
VACE projections, tiny TAE, the real VaceConditioner): 20 chunks with every VACE task, a hard
prompt cut, bounded memory; 1-latent-frame chunks cut every input per chunk; SDv2's VACE contexts
are handed over un-normalised."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vacelive.engine.codecs.base import WAN_LATENT_MEAN, WAN_LATENT_STD
from vacelive.engine.conditioning import VaceConditioner
from vacelive.engine.conditioning.tasks import ExtensionPlan
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.pipelines import RECIPES
from vacelive.engine.request import ChunkRequest, Extension, Outpaint, Prompt

W, H = 48, 32
pytestmark = pytest.mark.usefixtures("single_thread")


def gen(recipe, **kw):
    return StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=True, recipe=recipe, **kw)


def pics(n, seed, c=4, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


MASK = np.where(np.arange(W)[None, :].repeat(H, 0) > W // 2, 255, 0).astype(np.uint8)
REF = pics(1, 90, c=3)[0]


def task_request(i: int, n: int, prompt: str) -> ChunkRequest:
    """Chunk i of a 20-chunk show: every task and a few compositions, inputs cut to n frames."""
    p = [Prompt(prompt)]
    plan = [
        lambda: ChunkRequest(prompts=p, refs=[REF]),  # r2v (sticky for the next chunks)
        lambda: ChunkRequest(prompts=p, video=pics(n, i, c=1)),  # control map + sticky refs
        lambda: ChunkRequest(prompts=p, refs=[], video=pics(n, i), annotator="edges"),
        lambda: ChunkRequest(prompts=p, video=pics(n, i), mask=MASK),  # inpaint, static mask
        lambda: ChunkRequest(prompts=p, video=pics(n, i), mask=pics(n, 100 + i)),  # per-frame mask
        lambda: ChunkRequest(prompts=p, video=pics(n, i), outpaint=Outpaint(left=0.25, top=0.25)),
        lambda: ChunkRequest(prompts=p, extension=Extension("firstlastframe", first=REF, last=REF[::-1].copy(), chunks=3)),
        lambda: ChunkRequest(prompts=p),
        lambda: ChunkRequest(prompts=p),
        lambda: ChunkRequest(prompts=p, extension=Extension("lastclip", last=pics(6, 7), chunks=2)),
        lambda: ChunkRequest(prompts=p),
        lambda: ChunkRequest(prompts=p, video=pics(n, i, c=1), extension=Extension("firstclip", first=pics(3, 8), chunks=2)),
        lambda: ChunkRequest(prompts=p, video=pics(n, i), mask=MASK, refs=[REF]),  # r2v + inpaint
        lambda: ChunkRequest(prompts=p, refs=[], extension=Extension("firstframe", first=REF, chunks=2),
                             outpaint=Outpaint(right=0.3)),
        lambda: ChunkRequest(prompts=p),
    ]
    return plan[i % len(plan)]()


@pytest.mark.parametrize("recipe", ["reward-forcing", "streamdiffusionv2"])
def test_twenty_chunks_every_vace_task_and_a_prompt_cut_with_bounded_memory(recipe):
    g = gen(recipe)
    rec = RECIPES[recipe]
    first_px, later_px = (5, 4) if recipe == "streamdiffusionv2" else (9, 12)
    kv_bytes, seen, cond_bytes = g.kv.nbytes, set(), []
    sink_before = None
    for i in range(20):
        n = g.next_chunk_frames
        assert n == (first_px if i == 0 else later_px)
        r = g.step(task_request(i, n, "a red cat" if i < 10 else "a blue boat"))  # hard cut at chunk 10
        assert r.frames.shape == (n, H, W, 4) and r.frames.dtype == torch.uint8
        assert not any("ignored" in x or "frames" in x for x in r.notices), (i, r.notices)
        assert torch.isfinite(g.history.last(rec.chunk_latents(i == 0))).all()
        seen.update(g.conditioner.tasks.names)
        enc = g.conditioner.encoder
        cond_bytes.append(enc.inactive.stream.state.nbytes() + enc.reactive.stream.state.nbytes())
        if i == 2:
            sink_before = g.kv.storage[:, :, :, :g.kv.frame_tokens].clone()
    assert seen == {"r2v", "control", "inpaint", "outpaint", "extension"}
    assert g.kv.nbytes == kv_bytes and g.kv.storage.shape[3] == rec.cache.local_frames * g.kv.frame_tokens
    frames = g.kv.window_frames()
    assert len(frames) == rec.cache.local_frames and frames[:3] == [0, 1, 2] and frames[-1] == g.frame - 1
    assert max(cond_bytes[5:]) <= max(cond_bytes[:5]) * 1.01  # encoder caches do not grow
    assert g.counters["chunks"] == 20 and g.counters["recaches"] == 0  # neither recipe re-caches
    sink_now = g.kv.storage[:, :, :, :g.kv.frame_tokens]
    if recipe == "reward-forcing":  # evictions merged into the sink (frame 0 is never rewritten otherwise)
        assert g.kv.rope_mode == "relative" and not torch.equal(sink_now, sink_before)
    else:
        assert g.kv.rope_mode == "absolute" and torch.equal(sink_now, sink_before)


def test_extension_spans_are_laid_out_in_the_pipeline_chunk_size():
    first, last = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    ext = Extension("firstlastframe", first=first, last=last, chunks=3)
    plan = ExtensionPlan(ext, 4, 4, torch.device("cpu"), [])  # SDv2: 4-frame chunks
    assert plan.total == 12
    got = [plan.take(4) for _ in range(3)]
    assert [idx for idx, _ in got[0]] == [[0, 1, 2, 3]]  # first image over the chunk's one group
    assert got[1] == []
    assert [idx for idx, _ in got[2]] == [[0, 1, 2, 3]] and plan.finished  # last image on the span's end
    big = ExtensionPlan(ext, 9, 12, torch.device("cpu"), [])  # 3-latent chunks: 9 + 12 + 12
    assert big.total == 33 and [idx for idx, _ in big.take(9)] == [[0]]


def test_streamdiffusionv2_vace_contexts_are_raw_latents():
    """The same inputs through two conditioners on one codec: with raw latents the encoded channels
    are the normalised ones * std + mean, masks untouched; a reference prefix keeps its zero
    reactive half. The generator sets the layout from the recipe."""
    codec = gen("streamdiffusionv2").codec
    out = {}
    for raw in (False, True):
        cond = VaceConditioner(codec, W, H, "cpu", torch.float32)
        cond.set_stream_layout(chunk_frames=4, raw_latents=raw)
        cond.prepare(ChunkRequest(video=pics(5, 1)), first_chunk=True, num_frames=5)
        out[raw] = cond.prepare(ChunkRequest(video=pics(4, 2), mask=MASK, refs=[REF]), first_chunk=False, num_frames=4)
    mean = torch.tensor(WAN_LATENT_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN_LATENT_STD).view(1, 16, 1, 1, 1)
    norm, raw = out[False].context, out[True].context
    assert torch.allclose(raw[:, :16], norm[:, :16] * std + mean, atol=1e-5)
    assert torch.allclose(raw[:, 16:32, 1:], norm[:, 16:32, 1:] * std + mean, atol=1e-5)  # the chunk
    assert not raw[:, 16:32, :1].any()  # the reference prefix's reactive half stays zeros
    assert torch.equal(raw[:, 32:], norm[:, 32:])
    assert torch.allclose(out[True].prefix_latents, out[False].prefix_latents * std + mean, atol=1e-5)
    g = gen("streamdiffusionv2")
    assert g.conditioner.chunk_frames == 4 and g.conditioner._raw is not None
    assert gen("reward-forcing").conditioner._raw is None


def test_reward_forcing_refuses_absolute_rope_and_describes_its_rule():
    with pytest.raises(ValueError, match="window-relative"):
        gen("reward-forcing", rope="absolute")
    d = gen("reward-forcing").describe()
    assert (d["window"], d["sink"], d["sink_ema"], d["rope_mode"]) == (9, 3, 0.999, "relative")
    s = gen("streamdiffusionv2").describe()
    assert (s["window"], s["sink"], s["frames_per_chunk"], s["vae_latents"]) == (6, 3, 1, "raw")


def test_sink_ema_is_a_reward_forcing_only_live_parameter():
    from vacelive.bridge.run.request_fields import direct_fields
    from vacelive.bridge.schema import DEFAULT_SCHEMA

    p = next(q for q in DEFAULT_SCHEMA.live if q.name == "sink_ema")
    assert p.pipelines == ("reward-forcing",) and p.default == RECIPES["reward-forcing"].cache.sink_ema
    assert p.available_on("reward-forcing") and not p.available_on("streamdiffusionv2")
    assert "reward-forcing" in p.unavailable_message("longlive") and "sink_ema" in direct_fields()
    g = gen("reward-forcing")
    g.step(ChunkRequest(sink_ema=0.95))
    assert g.policy.alpha == 0.95
    r = g.step(ChunkRequest(sink_ema=1.5))
    assert g.policy.alpha == 1.0 and any("sink_ema" in n for n in r.notices)
    sd = gen("streamdiffusionv2")
    assert not any("sink_ema" in n for n in sd.step(ChunkRequest(sink_ema=0.5)).notices)  # ignored there


def test_reward_forcing_v2v_second_chunk_rewrites_the_first_chunks_last_frame():
    """Scope's RewardForcing V2V: after the first V2V chunk the stream advances 2 latent frames, so
    chunk 2 rewrites frame 2 (the last sink frame); text-to-video advances 3."""
    g = gen("reward-forcing")
    starts = []
    for i in range(4):
        starts.append(g.frame)
        g.step(ChunkRequest(input_mode="video", input_video=pics(g.next_chunk_frames, i), noise_scale=0.7))
    assert starts == [0, 2, 5, 8] and g.kv.window_frames() == list(range(11))[:3] + list(range(5, 11))
    t = gen("reward-forcing")
    for i in range(2):
        t.step(ChunkRequest())
    assert t.frame == 6
    sd = gen("streamdiffusionv2")  # no overlap there
    for i in range(3):
        sd.step(ChunkRequest(input_mode="video", input_video=pics(sd.next_chunk_frames, i)))
    assert sd.frame == 4


@pytest.mark.parametrize("fail_at", [1, 2, 5])  # block-1 calls: during the merging first pass, after it, at the clean pass
def test_reward_forcing_chunk_failing_after_the_sink_merge_retries_bit_identically(fail_at):
    """A chunk that evicts (chunk 4 of RewardForcing: frames 9-11 push out 3-5) fails inside the
    DiT after the EMA merge; the retry must equal an uninterrupted stream."""
    reqs = [ChunkRequest(prompts=[Prompt("a red cat")], video=pics(9 if i == 0 else 12, i)) for i in range(6)]
    ref = gen("reward-forcing")
    want = [ref.step(r).frames for r in reqs]
    g = gen("reward-forcing")
    for r in reqs[:3]:
        g.step(r)
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("DiT failure")

    handle = g.model.blocks[1].register_forward_hook(hook)
    with pytest.raises(RuntimeError, match="DiT failure"):
        g.step(reqs[3])
    handle.remove()
    got = [g.step(r).frames for r in reqs[3:]]
    assert all(torch.equal(a, b) for a, b in zip(got, want[3:]))
