"""Cache rules of RewardForcing and StreamDiffusionV2 against plain reimplementations.

RewardForcing: `RefRewardForcing` below is a line-by-line port of the reference's token buffer
(YepicAI/Reward-Forcing CausalWanSelfAttention: shift-left eviction, EMA into the sink, keys
stored un-roped and rotated at attention time from position 0 over [sink | recent], queries at
the window's end). The engine's frame-indexed slots + EmaSinkWindow must give the same attention
output on every pass, including the copy branch (evictions of another size than the sink).
StreamDiffusionV2: 1-latent-frame chunks (2 on the first) through SinkWindow(6, 3) == one dense
forward under a mask written from the rule "sink + the 3 most recent frames".
"""
from __future__ import annotations

import math

import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CausalWanModel
from vacelive.engine.dit.rope import RopeTable
from vacelive.engine.pipelines import RECIPES
from vacelive.engine.policies import cache_policy
from vacelive.engine.policies.reward_forcing import EmaSinkKVCache, EmaSinkWindow

pytestmark = pytest.mark.usefixtures("single_thread")

B, HEADS, D = 1, 2, 12
GRID = (2, 3)  # tokens per frame: 6
FT = GRID[0] * GRID[1]


def plain_attention(q, k, v):
    """softmax(q k^T / sqrt(D)) v per head, [B, L, H, D] in and out."""
    s = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhlm,bmhd->blhd", s.softmax(-1), v)


class RefRewardForcing:
    """The reference's per-block cache, in tokens (one block)."""

    def __init__(self, rope: RopeTable, local: int = 9, sink: int = 3, alpha: float = 0.999):
        self.rope, self.sink_size, self.alpha = rope, sink, alpha
        self.k = torch.zeros(B, local * FT, HEADS, D)
        self.v = torch.zeros(B, local * FT, HEADS, D)
        self.global_end = self.local_end = 0
        self.max_attention_size = local * FT

    def rope_from(self, x, start_frame):
        frames = x.shape[1] // FT
        return RopeTable.rotate(x, self.rope.token_freqs(range(start_frame, start_frame + frames), *GRID))

    def forward(self, q, k, v, current_start_frame):
        current_start = current_start_frame * FT
        current_end = current_start + q.shape[1]
        sink_tokens = self.sink_size * FT
        size = self.k.shape[1]
        n_new = q.shape[1]
        evicted_k = None
        if current_end > self.global_end and n_new + self.local_end > size:
            n_ev = n_new + self.local_end - size
            n_roll = self.local_end - n_ev - sink_tokens
            evicted_k = self.k[:, sink_tokens:sink_tokens + n_ev].clone()
            evicted_v = self.v[:, sink_tokens:sink_tokens + n_ev].clone()
            self.k[:, sink_tokens:sink_tokens + n_roll] = self.k[:, sink_tokens + n_ev:sink_tokens + n_ev + n_roll].clone()
            self.v[:, sink_tokens:sink_tokens + n_roll] = self.v[:, sink_tokens + n_ev:sink_tokens + n_ev + n_roll].clone()
            local_end = self.local_end + current_end - self.global_end - n_ev
        else:
            local_end = self.local_end + current_end - self.global_end
        self.k[:, local_end - n_new:local_end] = k
        self.v[:, local_end - n_new:local_end] = v
        if evicted_k is not None and evicted_k.shape[1] > 0:
            if evicted_k.shape[1] == sink_tokens:
                a = self.alpha
                self.k[:, :sink_tokens] = a * self.k[:, :sink_tokens] + (1 - a) * evicted_k
                self.v[:, :sink_tokens] = a * self.v[:, :sink_tokens] + (1 - a) * evicted_v
            else:
                m = min(evicted_k.shape[1], sink_tokens)
                self.k[:, :m] = evicted_k[:, :m]
                self.v[:, :m] = evicted_v[:, :m]
        kv_start = max(sink_tokens, local_end - self.max_attention_size + sink_tokens)
        k_all = torch.cat([self.k[:, :sink_tokens], self.k[:, kv_start:local_end]], 1)
        v_all = torch.cat([self.v[:, :sink_tokens], self.v[:, kv_start:local_end]], 1)
        q_start = (sink_tokens + (local_end - kv_start) - q.shape[1]) // FT
        out = plain_attention(self.rope_from(q, q_start), self.rope_from(k_all, 0), v_all)
        self.global_end, self.local_end = current_end, local_end
        return out


def engine_cache(layers: int = 1, alpha: float = 0.999):
    rope = RopeTable(D, 1024)
    kv = EmaSinkKVCache(EmaSinkWindow(9, 3, alpha), num_layers=layers, batch=B, grid_hw=GRID, num_heads=HEADS,
                        head_dim=D, rope=rope, dtype=torch.float32, rope_mode="relative")
    return rope, kv


def engine_forward(kv, q, k, v, start, layers=(0,)):
    attn = kv.begin(start, (q.shape[1] // FT, *GRID), B)
    assert not attn.rotate_keys  # keys are cached un-roped
    outs = []
    for layer in layers:
        K, V = attn.keys_values(layer, k, v)
        outs.append(plain_attention(RopeTable.rotate(q, attn.q_freqs), K, V))
    kv.commit(attn)
    return outs


def schedule(starts_frames, passes=3, seed=0):
    """[(start, q, k, v)] for every pass of every chunk; random per pass."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for start, n in starts_frames:
        for _ in range(passes):
            out.append((start, *(torch.randn(B, n * FT, HEADS, D, generator=g) for _ in range(3))))
    return out


CASES = {
    "3-frame chunks": [(3 * c, 3) for c in range(10)],
    "V2V first chunk one short": [(0, 3)] + [(2 + 3 * c, 3) for c in range(9)],
    # (a first chunk shorter than the sink is left out: the reference then attends the sink's
    # unwritten zero keys, which the engine does not copy)
    "1-frame chunks": [(0, 3)] + [(f, 1) for f in range(3, 16)],
}


@pytest.mark.parametrize("case", sorted(CASES))
@torch.no_grad()
def test_ema_sink_and_relative_rope_match_the_reference_buffer(case):
    rope, kv = engine_cache()
    ref = RefRewardForcing(rope)
    for start, q, k, v in schedule(CASES[case]):
        want = ref.forward(q, k, v, start)
        got = engine_forward(kv, q, k, v, start)[0]
        assert (got - want).abs().max() <= 1e-5, (case, start)
    assert kv.window_frames()[:3] == [0, 1, 2] and len(kv.window_frames()) == 9
    assert kv.merges > 0  # evictions really happened


@torch.no_grad()
def test_the_rule_is_visible_an_off_by_one_changes_the_output():
    """Alpha 1 (no merge) or a window of 8 give other outputs: the reference test can fail."""
    steps = schedule(CASES["3-frame chunks"])
    rope, _ = engine_cache()
    ref = RefRewardForcing(rope)
    want = [ref.forward(q, k, v, s) for s, q, k, v in steps]
    for alpha, window in ((1.0, 9), (0.999, 8)):
        kv = EmaSinkKVCache(EmaSinkWindow(window, 3, alpha), num_layers=1, batch=B, grid_hw=GRID, num_heads=HEADS,
                            head_dim=D, rope=rope, dtype=torch.float32, rope_mode="relative")
        got = [engine_forward(kv, q, k, v, s)[0] for s, q, k, v in steps]
        assert max((a - b).abs().max().item() for a, b in zip(got, want)) > 1e-4


@torch.no_grad()
def test_ema_merge_is_alpha_sink_plus_one_minus_alpha_evicted():
    rope, kv = engine_cache(alpha=0.9)
    steps = schedule([(3 * c, 3) for c in range(3)], passes=1)
    for s, q, k, v in steps:
        engine_forward(kv, q, k, v, s)
    store = kv.storage[0].clone()  # slots 0-2 sink (frames 0-2), 3-8 frames 3-8
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(B, 3 * FT, HEADS, D, generator=g) for _ in range(3))
    engine_forward(kv, q, k, v, 9)  # frames 9-11 evict frames 3-5 (slots 3-5)
    for i in range(3):
        sink, ev = store[:, :, i * FT:(i + 1) * FT], store[:, :, (3 + i) * FT:(4 + i) * FT]
        assert torch.equal(kv.storage[0][:, :, i * FT:(i + 1) * FT], 0.9 * sink + (1 - 0.9) * ev)
    assert torch.equal(kv.storage[0, 0][:, 3 * FT:6 * FT], k)  # un-roped keys written where frames 3-5 were


@torch.no_grad()
def test_a_failed_chunk_retry_skips_applied_merges_and_is_bit_identical():
    layers = (0, 1)
    steps = schedule(CASES["3-frame chunks"], passes=2, seed=3)
    _, clean = engine_cache(layers=2)
    want = [engine_forward(clean, q, k, v, s, layers) for s, q, k, v in steps]
    _, kv = engine_cache(layers=2)
    got = []
    for i, (s, q, k, v) in enumerate(steps):
        if i % 2 == 0 and s >= 9:  # the first pass of an evicting chunk fails after block 0
            saved = (kv.state, kv.origin)
            attn = kv.begin(s, (3, *GRID), B)
            attn.keys_values(0, torch.randn_like(k), torch.randn_like(v))
            kv.restore(*saved)
        got.append(engine_forward(kv, q, k, v, s, layers))
    for a, b in zip(got, want):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_recipes_pick_their_policies():
    rf, sd = RECIPES["reward-forcing"], RECIPES["streamdiffusionv2"]
    p = cache_policy(rf.cache)
    assert isinstance(p, EmaSinkWindow) and (p.window, p.sink, p.alpha) == (9, 3, 0.999)
    assert rf.cache.unroped_keys and rf.schedule.shift == 5.0 and rf.schedule.warp
    q = cache_policy(sd.cache)
    assert type(q).__name__ == "SinkWindow" and (q.window, q.sink) == (6, 3)
    assert (sd.frames_per_chunk, sd.chunk_latents(True), sd.schedule.shift, sd.schedule.warp) == (1, 2, 8.0, False)
    assert sd.vae_latents == "raw" and sd.v2v_steps == (700, 500, 400, 200) and sd.v2v_timestep_offset == 100


# ---- StreamDiffusionV2: 1-frame chunks == dense -------------------------------------------------
def sdv2_mask(bounds, window, sink, ft):
    """Query frame in the chunk [a, b) sees the sink frames and the last window - sink frames
    before b (itself included); nothing after b."""
    frames = bounds[-1][1]
    allow = torch.zeros(frames, frames, dtype=torch.bool)
    for a, b in bounds:
        for qf in range(a, b):
            for kf in range(b):
                allow[qf, kf] = kf < sink or kf >= b - (window - sink)
    return allow.repeat_interleave(ft, 0).repeat_interleave(ft, 1)


@torch.no_grad()
def test_one_frame_chunks_rolling_cache_equals_dense_forward():
    torch.manual_seed(0)
    model = CausalWanModel(tiny_config(num_layers=2)).eval()
    hw = (4, 6)
    frames = 12
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, frames, *hw, generator=g)
    t = torch.rand(1, frames, generator=g) * 1000
    text = model.prepare_text(torch.randn(1, 9, model.cfg.text_dim, generator=g))
    recipe = RECIPES["streamdiffusionv2"]
    policy = cache_policy(recipe.cache)
    bounds = [(0, recipe.chunk_latents(True))]
    while bounds[-1][1] < frames:
        bounds.append((bounds[-1][1], bounds[-1][1] + recipe.chunk_latents(False)))
    ft = (hw[0] // 2) * (hw[1] // 2)
    dense = model(x, t, text, attn_mask=sdv2_mask(bounds, policy.window, policy.sink, ft))
    kv = model.new_kv_cache(policy, latent_hw=hw)
    outs = []
    for a, b in bounds:
        model(torch.randn_like(x[:, :, a:b]), t[:, a:b] * 0.5, text, kv, start_frame=a)  # an earlier pass
        outs.append(model(x[:, :, a:b], t[:, a:b], text, kv, start_frame=a))
    assert (torch.cat(outs, 2) - dense).abs().max() <= 1e-5
    assert kv.window_frames() == [0, 1, 2, 9, 10, 11] and kv.storage.shape[3] == 6 * ft
    # an off-by-one window (4 recent frames) is distinguishable
    other = model(x, t, text, attn_mask=sdv2_mask(bounds, policy.window + 1, policy.sink, ft))
    assert (other - dense).abs().max() > 1e-3
