"""Krea Realtime's per-chunk rule against a plain dense reimplementation: the KV cache rebuilt
from the context frames (latent 0 + the last 2 latents, then the VAE re-encode of the first of
the last 9 decoded frames + the last 2 latents), RoPE start clamped to 3, log(bias) on the cached
keys except the first frame and the current chunk, no clean pass."""
from __future__ import annotations

import math

import pytest
import torch

from vacelive.engine.generator import StreamGenerator
from vacelive.engine.policies.krea import biased_slots
from vacelive.engine.request import ChunkRequest, Prompt

W, H = 32, 32
pytestmark = pytest.mark.usefixtures("single_thread")


def krea(**kw):
    g = StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=False, recipe="krea-realtime", **kw)
    decoded = []
    inner = g.decoder.decode

    def recording(x0):
        out = inner(x0)
        decoded.append(out.clone())
        return out

    g.decoder.decode = recording
    return g, decoded


def plain_mask(ctx: int, chunk: int, ft: int, bias: float) -> torch.Tensor:
    """Dense [L, L] additive mask over [context | chunk] tokens, written from the rule itself:
    context queries see the context only; chunk queries see everything, with log(bias) on keys
    kv in [ft, cache_len - chunk * ft) (Scope's score_mod: not the first frame, not the block)."""
    n = (ctx + chunk) * ft
    mask = torch.zeros(n, n)
    for q in range(n):
        for kv in range(n):
            if q < ctx * ft:
                if kv >= ctx * ft:
                    mask[q, kv] = -math.inf
            elif ft <= kv < n - chunk * ft:
                mask[q, kv] = math.log(bias)
    return mask


def plain_context(g, decoded, frame: int) -> torch.Tensor:
    """Context latents for the chunk at `frame`, straight from the rule (K = 3, 3-frame chunks)."""
    latents = g.history.last(2)
    if frame - 3 < 3:
        first = g.stream.first_latent
    else:
        last9 = torch.cat(decoded, dim=2)[:, :, -9:]
        first = g.codec.encode_image(last9[:, :, 0]).float()
    return torch.cat([first, latents], dim=2)


def stream_and_dense(g, decoded, bias: float, seed: int = 0):
    plan = g.schedule.plan(4)
    g.stream.apply_request(ChunkRequest(kv_cache_attention_bias=bias), [])
    frame = g.frame
    context = plain_context(g, decoded, frame)
    start = g.stream.chunk_start(plan)
    assert start == frame and g.kv.origin == frame - min(frame, 3)
    x = torch.randn(1, 16, 3, H // 8, W // 8, generator=torch.Generator().manual_seed(seed))
    t = plan.timestep_tensor[1]
    flow = g.model(x, t, g.text, g.kv, start)
    ft = g.kv.frame_tokens
    t_frames = torch.cat([torch.zeros(3), t.reshape(1).float().expand(3)]).view(1, 6)
    dense = g.model(torch.cat([context, x], dim=2), t_frames, g.text, None, 0,
                    attn_mask=plain_mask(3, 3, ft, bias))[:, :, 3:]
    return flow, dense


@pytest.mark.parametrize("chunks_before", [1, 2, 3])  # frame 3 (latent 0 kept), 6 and 9 (re-encoded)
def test_recompute_with_bias_equals_the_dense_rule(chunks_before):
    g, decoded = krea()
    for i in range(chunks_before):
        g.step(ChunkRequest(prompts=[Prompt("a koi pond")], seed=i))
    flow, dense = stream_and_dense(g, decoded, 0.3)
    assert torch.allclose(flow, dense, atol=2e-5, rtol=1e-4), (flow - dense).abs().max()
    # the bias matters, and 1.0 is plain attention over the same keys
    g2, decoded2 = krea()
    for i in range(chunks_before):
        g2.step(ChunkRequest(prompts=[Prompt("a koi pond")], seed=i))
    flow1, dense1 = stream_and_dense(g2, decoded2, 1.0)
    assert torch.allclose(flow1, dense1, atol=2e-5, rtol=1e-4)
    assert (flow1 - flow).abs().max() > 1e-3


def test_an_off_by_one_context_is_detected():
    """The dense rule with the wrong first context frame (latent 0 kept one chunk too long) does
    not match: the comparison above can fail."""
    g, decoded = krea()
    for i in range(2):
        g.step(ChunkRequest(prompts=[Prompt("a koi pond")], seed=i))
    plan = g.schedule.plan(4)
    wrong = torch.cat([g.stream.first_latent, g.history.last(2)], dim=2)  # frame 6 must re-encode
    assert g.frame == 6
    right = g.stream.context(g.frame)
    assert not torch.allclose(wrong, right)
    assert torch.allclose(right, plain_context(g, decoded, g.frame))


def test_stream_never_leaves_the_rope_table_and_has_no_clean_pass():
    g, _ = krea()
    calls = []
    inner = g.model.forward

    def counting(x, t, text, kv=None, start_frame=0, **kw):
        calls.append((x.shape[2], start_frame - (kv.origin if kv is not None else 0)))
        return inner(x, t, text, kv, start_frame, **kw)

    g.model.forward = counting
    for i in range(5):
        calls.clear()
        g.step(ChunkRequest(prompts=[Prompt("rain")], steps=4))
        # chunk 0: 4 denoising passes at 0; later: 1 recompute of 3 frames at 0 + 4 passes at 3
        expected = [(3, 0)] * 4 if i == 0 else [(3, 0)] + [(3, 3)] * 4
        assert calls == expected, (i, calls)
    assert g.stream.recomputes == 4 and g.kv.rope_mode == "absolute"
    assert g.describe()["kv_cache_attention_bias"] == pytest.approx(0.3)


def test_biased_slots_rule():
    # cache frames 0..5 in slots 0..5, chunk = frames 3..5: only frames 1 and 2 are biased
    assert biased_slots((0, 1, 2, 3, 4, 5), ((0, 6),), 3, 6, 0) == [False, True, True, False, False, False]
    # chunk 0 alone: nothing cached before it
    assert biased_slots((0, 1, 2, None, None, None), ((0, 3),), 0, 3, 0) == [False] * 3


def test_bias_is_clamped_with_a_notice():
    g, _ = krea()
    r = g.step(ChunkRequest(kv_cache_attention_bias=5.0))
    assert any("kv_cache_attention_bias" in n for n in r.notices) and g.kv.attention_bias == 1.0
    r = g.step(ChunkRequest(kv_cache_attention_bias="x"))
    assert any("not a number" in n for n in r.notices) and g.kv.attention_bias == pytest.approx(0.3)
