"""GPU checks of the DiT hot path (skipped without CUDA): bf16 streaming through the KV cache with
the fast SDPA kernels vs the dense masked path, and torch.compile of the blocks vs eager."""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CausalWanModel, SinkWindow, VaceWanModel

pytestmark = pytest.mark.gpu
LATENT_HW = (8, 12)


def model_and_inputs(frames, dtype=torch.bfloat16):
    torch.manual_seed(0)
    cfg = tiny_config(dim=256, num_heads=2, num_layers=4, ffn_dim=512)  # head_dim 128 like 1.3B
    model = VaceWanModel(CausalWanModel(cfg)).to("cuda", dtype).eval()
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(1, 16, frames, *LATENT_HW, device="cuda", generator=g)
    vc = torch.randn(1, 96, frames, *LATENT_HW, device="cuda", generator=g)
    t = torch.rand(1, frames, device="cuda", generator=g) * 1000
    text = model.prepare_text(torch.randn(1, cfg.text_len - 4, cfg.text_dim, device="cuda", generator=g))
    return model, x, vc, t, text


@torch.inference_mode()
def test_bf16_streaming_matches_dense_masked_forward():
    frames, window, sink = 18, 12, 3
    model, x, _, t, text = model_and_inputs(frames)
    ft = (LATENT_HW[0] // 2) * (LATENT_HW[1] // 2)
    allow = torch.zeros(frames, frames, dtype=torch.bool)
    for q in range(frames):
        end = (q // 3 + 1) * 3
        for k in range(frames):
            allow[q, k] = k < end and (k < sink or k >= end - (window - sink))
    mask = allow.repeat_interleave(ft, 0).repeat_interleave(ft, 1).cuda()
    dense = model(x, t, text, attn_mask=mask)
    kv = model.new_kv_cache(SinkWindow(window, sink), latent_hw=LATENT_HW)
    out = torch.cat([model(x[:, :, s:s + 3], t[:, s:s + 3], text, kv, s) for s in range(0, frames, 3)], dim=2)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - dense).abs().max() <= 0.05 * dense.abs().max()


@torch.inference_mode()
def test_compiled_blocks_match_eager():
    from vacelive.engine.dit.compile import compile_blocks

    model, x, vc, t, text = model_and_inputs(3)
    kv_a = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    kv_b = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    eager = [model(x, t, text, kv_a, s, vace_context=vc) for s in (0, 3, 6)]
    restore = compile_blocks(model, dynamic=False)
    try:
        compiled = [model(x, t, text, kv_b, s, vace_context=vc) for s in (0, 3, 6)]
    finally:
        restore()
    for a, b in zip(eager, compiled):
        assert (a - b).abs().max() <= 0.05 * a.abs().max()
