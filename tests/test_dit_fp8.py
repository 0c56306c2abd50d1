"""FP8 Linears switch (engine/dit/fp8.py): which Linears it swaps, that it is reversible without
touching the state dict, and how far the FP8 path is from the exact one on the same weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CausalWanModel, SinkWindow, VaceWanModel
from vacelive.engine.dit.fp8 import BLOCK_LINEARS, Fp8Linear, Fp8Linears, relative_error

LATENT_HW = (4, 6)


def make_model(seed=0):
    torch.manual_seed(seed)
    model = VaceWanModel(CausalWanModel(tiny_config(num_layers=4, vace_layers=(0, 2)))).eval()
    with torch.no_grad():  # real VACE checkpoints are not zero-initialised
        for n, p in model.named_parameters():
            if "_proj" in n:
                p.normal_(0, 0.2)
    return model


def run_chunks(model, chunks=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    text = model.prepare_text(torch.randn(1, 9, model.cfg.text_dim, generator=g))
    kv = model.new_kv_cache(SinkWindow(6, 3), latent_hw=LATENT_HW)
    outs = []
    for c in range(chunks):
        x = torch.randn(1, 16, 3, *LATENT_HW, generator=g)
        vc = torch.randn(1, 96, 3, *LATENT_HW, generator=g)
        t = torch.full((1, 3), 750.0)
        outs.append(model(x, t, text, kv, 3 * c, vace_context=vc))
    return torch.cat(outs, 2)


def test_fp8_linear_matches_linear_within_e4m3_precision():
    torch.manual_seed(0)
    linear = nn.Linear(256, 128)
    x = torch.randn(4, 10, 256)
    ref = linear(x)
    out = Fp8Linear(linear)(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    err = relative_error(out, ref)
    # e4m3 keeps 3 mantissa bits: ~2^-4 per element, averaged down by the dot products.
    assert 1e-3 < err < 0.06, err  # lower bound: it really ran in FP8, not a silent fallback


def test_fp8_linear_rejects_unaligned_features():
    with pytest.raises(ValueError, match="divisible by 16"):
        Fp8Linear(nn.Linear(100, 64))


@torch.inference_mode()
def test_swap_targets_every_block_linear_and_restores_exactly():
    model = make_model()
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    exact = run_chunks(model)
    fp8 = Fp8Linears(model)
    blocks = len(model.blocks) + len(model.vace_blocks)
    assert fp8.count == len(BLOCK_LINEARS) * blocks
    swapped = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    assert len(swapped) == fp8.count
    # cross-attention K/V (run once per prompt) stay bf16/fp32 Linears
    assert all(isinstance(b.cross_attn.k, nn.Linear) and isinstance(b.cross_attn.v, nn.Linear) for b in model.blocks)
    assert model.state_dict().keys() == keys.keys()
    approx = run_chunks(model)
    err = relative_error(approx, exact)
    assert 1e-3 < err < 0.15, err
    fp8.restore()
    assert not any(isinstance(m, Fp8Linear) for m in model.modules())
    assert torch.equal(run_chunks(model), exact)
    assert all(torch.equal(v, keys[k]) for k, v in model.state_dict().items())


@torch.inference_mode()
def test_refresh_requantises_changed_weights():
    model = make_model()
    fp8 = Fp8Linears(model)
    before = run_chunks(model)
    fp8.restore()
    with torch.no_grad():
        model.blocks[1].ffn[0].weight.mul_(2.0)
    fp8.apply()
    assert not torch.equal(run_chunks(model), before)
