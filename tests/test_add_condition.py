"""`add_condition` in the DiT: zeros change nothing, shapes are checked, a condition on chunk N
changes chunk N and later chunks only through the KV cache, never an earlier chunk."""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import SinkWindow
from vacelive.engine.factory import random_dit

LATENT_HW = (4, 6)  # token grid 2 x 3
FRAMES = 3
TOKENS = FRAMES * 2 * 3


@pytest.fixture(scope="module")
def vace_model():
    return random_dit(tiny_config(), vace=True, device="cpu", dtype=torch.float32, seed=0).eval()


def text(model):
    g = torch.Generator().manual_seed(5)
    return model.prepare_text(torch.randn(1, 7, model.cfg.text_dim, generator=g))


def latents(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, FRAMES, *LATENT_HW, generator=g)


def run_chunks(model, conds, t=500.0):
    """Chunks 0..n-1 through one KV cache, each denoising pass then its clean pass, as the
    generator does; conds[i] is chunk i's condition (None = off). Returns flows and the cache."""
    kv = model.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    txt = text(model)
    outs = []
    for i, cond in enumerate(conds):
        x = latents(10 + i)
        flow = model(x, t, txt, kv, i * FRAMES, add_condition=cond)
        model(x - flow, 0.0, txt, kv, i * FRAMES, add_condition=cond)  # clean pass
        outs.append(flow)
    return outs, kv


def test_zeros_equal_no_condition_exactly(vace_model):
    m = vace_model
    zeros = torch.zeros(1, TOKENS, m.cfg.dim)
    a, _ = run_chunks(m, [None, None])
    b, _ = run_chunks(m, [zeros, zeros])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # the VACE path (hint stream + main stream) and the base model too
    txt = text(m)
    ctx = torch.randn(1, m.vace_in_dim, FRAMES, *LATENT_HW, generator=torch.Generator().manual_seed(2))
    x = latents(3)
    assert torch.equal(m(x, 250.0, txt, vace_context=ctx), m(x, 250.0, txt, vace_context=ctx, add_condition=zeros))
    hints = m.compute_hints(x, 250.0, txt, ctx)
    assert all(torch.equal(h, z) for h, z in zip(hints, m.compute_hints(x, 250.0, txt, ctx, add_condition=zeros)))
    assert torch.equal(m.base(x, 250.0, txt), m.base(x, 250.0, txt, add_condition=zeros))


def test_condition_on_chunk_n_changes_n_and_later_only_through_the_cache(vace_model):
    m = vace_model
    cond = 0.5 * torch.randn(1, TOKENS, m.cfg.dim, generator=torch.Generator().manual_seed(9))
    plain, _ = run_chunks(m, [None] * 4)
    posed, _ = run_chunks(m, [None, None, cond, None])
    assert torch.equal(plain[0], posed[0]) and torch.equal(plain[1], posed[1])  # never earlier
    assert not torch.allclose(plain[2], posed[2], atol=1e-4)  # chunk N
    assert not torch.allclose(plain[3], posed[3], atol=1e-4)  # later: changed ...
    # ... only through the cache: chunk 3 on the cache of the unconditioned chunks 0-2 is the
    # plain result, on the cache of the conditioned ones the posed result
    txt = text(m)
    _, kv_plain3 = run_chunks(m, [None] * 3)
    _, kv_posed3 = run_chunks(m, [None, None, cond])
    assert torch.equal(m(latents(13), 500.0, txt, kv_plain3, 3 * FRAMES), plain[3])
    assert torch.equal(m(latents(13), 500.0, txt, kv_posed3, 3 * FRAMES), posed[3])
    assert not torch.equal(kv_plain3.storage, kv_posed3.storage)


def test_wrong_shapes_give_a_clear_error(vace_model):
    m = vace_model
    txt = text(m)
    x = latents(1)
    for bad in (torch.zeros(1, TOKENS - 1, m.cfg.dim), torch.zeros(1, TOKENS, 5120), torch.zeros(2, TOKENS, m.cfg.dim),
                torch.zeros(TOKENS, m.cfg.dim)):
        with pytest.raises(ValueError, match=rf"add_condition must be \[B, L, C\] = \[1, {TOKENS}, {m.cfg.dim}\]"):
            m(x, 500.0, txt, add_condition=bad)
    with pytest.raises(ValueError, match="got list"):
        m.base(x, 500.0, txt, add_condition=[0.0])
