"""KV cache policy: streaming chunk by chunk == one dense masked forward; sink survival, bounded
storage, re-cache, relative RoPE (shift invariance, > 1024 frames, mode switches)."""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CacheState, CausalWanModel, SinkWindow
from support import windowed_mask


pytestmark = pytest.mark.usefixtures("single_thread")

CHUNK = 3
LATENT_HW = (4, 6)  # 2x3 = 6 tokens per latent frame


def make_model(layers=2, seed=0):
    torch.manual_seed(seed)
    return CausalWanModel(tiny_config(num_layers=layers)).eval()


def inputs(model, frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, frames, *LATENT_HW, generator=g)
    t = torch.rand(1, frames, generator=g) * 1000  # a different (fractional) timestep per frame
    text = model.prepare_text(torch.randn(1, 9, model.cfg.text_dim, generator=g))
    return x, t, text


def stream(model, x, t, text, kv, origin=0, passes=1):
    outs = []
    for c in range(x.shape[2] // CHUNK):
        sl = slice(c * CHUNK, (c + 1) * CHUNK)
        for p in range(passes - 1):  # earlier passes of the same chunk, overwritten by the last
            model(torch.randn_like(x[:, :, sl]), t[:, sl] * 0.5, text, kv, start_frame=origin + c * CHUNK)
        outs.append(model(x[:, :, sl], t[:, sl], text, kv, start_frame=origin + c * CHUNK))
    return torch.cat(outs, dim=2)


@pytest.mark.parametrize("window,sink,frames", [(21, 0, 15), (12, 3, 24), (8, 2, 18), (7, 2, 21)])
@torch.no_grad()
def test_streaming_equals_dense_block_causal_forward(window, sink, frames):
    model = make_model()
    x, t, text = inputs(model, frames)
    ft = (LATENT_HW[0] // 2) * (LATENT_HW[1] // 2)
    dense = model(x, t, text, attn_mask=windowed_mask(frames, window, sink, ft))
    kv = model.new_kv_cache(SinkWindow(window, sink), latent_hw=LATENT_HW)
    assert kv.storage.shape[3] == window * ft  # sized from the actual resolution
    streamed = stream(model, x, t, text, kv, passes=2)
    assert (streamed - dense).abs().max() <= 1e-5
    # the window is really used: a plain block-causal (global) mask gives something else
    if frames > window:
        full = model(x, t, text, attn_mask=windowed_mask(frames, 10**6, 0, ft))
        assert (full - dense).abs().max() > 1e-3


def test_sink_window_plan_matches_longlive_semantics():
    policy = SinkWindow(12, 3)
    state = CacheState((None,) * 12, 0)
    for c in range(8):
        plan = policy.plan(state, c * 3, 3, "absolute")
        state = plan.state
    frames_seen = sorted(state.slot_frame[s] for a, b in plan.attend for s in range(a, b))
    assert frames_seen == [0, 1, 2] + list(range(15, 24))  # 3 sink + 9 most recent incl. itself
    assert [policy.slot_of(f) for f in (0, 2, 3, 11, 12, 21)] == [0, 2, 3, 11, 3, 3]
    assert SinkWindow(21, 0).slot_of(44) == 2
    with pytest.raises(ValueError):
        SinkWindow(3, 3)


@torch.no_grad()
def test_sink_survives_eviction_and_storage_is_bounded_over_100_chunks():
    model = make_model(layers=1)
    x, t, text = inputs(model, CHUNK)
    kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    storage, ptr, shape = kv.storage, kv.storage.data_ptr(), tuple(kv.storage.shape)
    ft = kv.frame_tokens
    model(x, t, text, kv, start_frame=0)
    sink = kv.storage[:, :, :, : 3 * ft].clone()
    for c in range(1, 100):
        xc = torch.randn_like(x)
        model(xc, t, text, kv, start_frame=3 * c)  # denoising pass
        model(xc, t * 0, text, kv, start_frame=3 * c)  # clean pass rewrites the same slots
    assert kv.storage is storage and kv.storage.data_ptr() == ptr and tuple(kv.storage.shape) == shape
    assert len(kv.state.slot_frame) == 12
    assert torch.equal(kv.storage[:, :, :, : 3 * ft], sink)
    assert kv.window_frames() == [0, 1, 2] + list(range(291, 300))
    assert kv.head == 300


@torch.no_grad()
def test_recache_protect_sink_and_late_recache_rewrites_exactly_ring_slots():
    model = make_model(layers=1)
    x, t, text = inputs(model, 30)
    new_text = model.prepare_text(torch.randn(1, 9, model.cfg.text_dim))
    ft = 6

    # early prompt switch (stream head at frame 6): re-cache frames 0..5
    for protect in (True, False):
        kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
        stream(model, x[:, :, :6], t[:, :6], text, kv)
        before = kv.storage.clone()
        kv.protect_sink = protect
        model(x[:, :, :6], torch.zeros(1, 6), new_text, kv, start_frame=0)
        kv.protect_sink = False
        sink_same = torch.equal(kv.storage[:, :, :, : 3 * ft], before[:, :, :, : 3 * ft])
        assert sink_same == protect
        assert not torch.equal(kv.storage[:, :, :, 3 * ft: 6 * ft], before[:, :, :, 3 * ft: 6 * ft])
        assert kv.head == 6 and kv.window_frames() == list(range(6))

    # late switch (head at 30): re-cache the last 12 frames; only 21..29 fit the 9-frame ring
    kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    stream(model, x, t, text, kv)
    before = kv.storage.clone()
    attn = kv.begin(18, (12, 2, 3), 1)
    assert attn.plan.writes == ((3, 12, 3),)  # chunk frames 21..29 -> ring slots 3..11; 18..20 dropped
    model(x[:, :, 18:30], torch.zeros(1, 12), new_text, kv, start_frame=18)
    assert torch.equal(kv.storage[:, :, :, : 3 * ft], before[:, :, :, : 3 * ft])  # sink untouched
    ring_changed = [not torch.equal(kv.storage[:, :, :, s * ft:(s + 1) * ft], before[:, :, :, s * ft:(s + 1) * ft]) for s in range(3, 12)]
    assert all(ring_changed)
    assert kv.head == 30 and kv.window_frames() == [0, 1, 2] + list(range(21, 30))


@torch.no_grad()
def test_relative_rope_is_shift_invariant_and_absolute_mode_refuses_the_table_end():
    model = make_model()
    x, t, text = inputs(model, 27)
    a = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW, rope_mode="relative")
    b = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW, rope_mode="relative", origin=2000)
    ya = stream(model, x, t, text, a)
    yb = stream(model, x, t, text, b, origin=2000)
    assert (ya - yb).abs().max() <= 1e-6
    # before the ring wraps, relative positions are the absolute ones
    c = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    yc = stream(model, x[:, :, :12], t[:, :12], text, c)
    assert (yc - ya[:, :, :12]).abs().max() <= 1e-5
    # the absolute table ends at 1024 latent frames: clear error, cache unchanged
    d = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW, origin=2000)
    d.origin = 0
    with pytest.raises(ValueError, match="relative"):
        model(x[:, :, :3], t[:, :3], text, d, start_frame=1023)
    assert d.head == 0 and d.window_frames() == []


@torch.no_grad()
def test_relative_mode_runs_past_1024_frames_with_bounded_storage():
    model = make_model(layers=1)
    x, t, text = inputs(model, CHUNK)
    kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW, rope_mode="relative")
    ptr = kv.storage.data_ptr()
    for c in range(350):  # 1050 latent frames
        y = model(x, t, text, kv, start_frame=3 * c)
    assert torch.isfinite(y).all() and kv.head == 1050 and kv.storage.data_ptr() == ptr
    assert kv.window_frames() == [0, 1, 2] + list(range(1041, 1050))


@torch.no_grad()
def test_switching_absolute_to_relative_keeps_cached_state():
    model = make_model()
    x, t, text = inputs(model, 24)
    ref = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW, rope_mode="relative")
    y_ref = stream(model, x, t, text, ref)

    kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)  # absolute
    first = stream(model, x[:, :, :9], t[:, :9], text, kv)
    kv.set_rope_mode("relative")  # un-rotates the cached keys once
    assert (kv.storage[:, 0, :, : 9 * kv.frame_tokens] - raw_keys_after(model, x, t, text, 9)).abs().max() <= 1e-5
    rest = []
    for c in range(3, 8):
        sl = slice(3 * c, 3 * c + 3)
        rest.append(model(x[:, :, sl], t[:, sl], text, kv, start_frame=3 * c))
    y = torch.cat([first] + rest, dim=2)
    assert (y - y_ref).abs().max() <= 1e-5

    # and back to absolute while every cached frame is inside the table
    kv2 = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW, rope_mode="relative")
    stream(model, x[:, :, :9], t[:, :9], text, kv2)
    kv2.set_rope_mode("absolute")
    abs_kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    stream(model, x[:, :, :9], t[:, :9], text, abs_kv)
    assert (kv2.storage - abs_kv.storage).abs().max() <= 1e-5


def raw_keys_after(model, x, t, text, frames):
    """Un-rotated keys of the first `frames` frames, from a cache that was relative throughout."""
    kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW, rope_mode="relative")
    stream(model, x[:, :, :frames], t[:, :frames], text, kv)
    return kv.storage[:, 0, :, : frames * kv.frame_tokens]


def test_cache_rejects_wrong_resolution_and_batch():
    model = make_model(layers=1)
    x, t, text = inputs(model, CHUNK)
    kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=(4, 4))
    with pytest.raises(ValueError, match="new KV cache"):
        model(x, t, text, kv)
    kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW, batch=2)
    with pytest.raises(ValueError, match="batch"):
        model(x, t, text, kv)
