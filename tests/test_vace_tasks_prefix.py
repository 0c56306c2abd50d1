"""The reference prefix of the VACE wrapper: references live in the hint stream only, laid out
like the original `[refs | video]`, clean at t = 0; P = 0 is bit-identical to the plain path."""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.dit import SinkWindow
from vacelive.engine.dit.vace import PREFIX_TIMESTEP
from support import vace_pair

LATENT_HW = (4, 6)
CHUNK = 3
HW_TOKENS = 6  # (4/2) * (6/2)


pytestmark = pytest.mark.usefixtures("single_thread")


def inputs(model, refs=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, CHUNK, *LATENT_HW, generator=g)
    t = torch.full((1, CHUNK), 937.5)
    prefix = torch.randn(1, 16, refs, *LATENT_HW, generator=g)
    chunk_ctx = torch.randn(1, 96, CHUNK, *LATENT_HW, generator=g)
    ref_ctx = torch.cat([prefix, torch.zeros(1, 80, refs, *LATENT_HW)], 1)  # [ref | 0 | mask 0]
    text = model.prepare_text(torch.randn(1, 9, model.cfg.text_dim, generator=g))
    return x, t, prefix, torch.cat([ref_ctx, chunk_ctx], 2), chunk_ctx, text


def hints_before_prefix(wrapped, x, t, text, vace_context):
    """compute_hints exactly as it was before the prefix extension (commit 6b64207)."""
    base = wrapped.base
    tokens, grid = base.embed_video(x)
    e0 = base.embed_time(t, x.shape[0], grid[0])[1]
    text.sync(base.weights_version)
    c = wrapped._context_tokens(vace_context, x.shape[0], grid)
    attn = base.local_attention(grid, 0)
    hints = []
    for n, block in enumerate(wrapped.vace_blocks):
        if n == 0:
            c = block.before_proj(c) + tokens
        c = block(c, e0, text, attn, n)
        hints.append(block.after_proj(c.to(block.after_proj.weight.dtype)))
    return hints


@torch.no_grad()
def test_no_prefix_is_bit_identical_to_the_plain_path():
    _, wrapped = vace_pair()
    x, t, _, _, chunk_ctx, text = inputs(wrapped)
    old = hints_before_prefix(wrapped, x, t, text, chunk_ctx)
    new = wrapped.compute_hints(x, t, text, chunk_ctx, vace_prefix=None)
    assert all(torch.equal(a, b) for a, b in zip(old, new))
    assert torch.equal(wrapped(x, t, text, vace_context=chunk_ctx, vace_prefix=None),
                       wrapped(x, t, text, hints=old))


@torch.no_grad()
def test_prefix_equals_the_hint_stream_over_refs_then_chunk_with_clean_refs():
    """The prefix path == the plain hint stream run over the original layout [refs | chunk]
    (RoPE frames 0..P-1 then P..P+F-1, per-frame t = 0 for the refs), keeping the chunk's part."""
    _, wrapped = vace_pair()
    x, t, prefix, ctx, _, text = inputs(wrapped, refs=2)
    ours = wrapped.compute_hints(x, t, text, ctx, vace_prefix=prefix)
    full_x = torch.cat([prefix, x], 2)
    full_t = torch.cat([torch.full((1, 2), PREFIX_TIMESTEP), t], 1)
    dense = wrapped.compute_hints(full_x, full_t, text, ctx)
    assert PREFIX_TIMESTEP == 0.0
    for a, b in zip(ours, dense):
        assert a.shape == (1, CHUNK * HW_TOKENS, wrapped.cfg.dim)  # hints only at chunk tokens
        assert (a - b[:, 2 * HW_TOKENS:]).abs().max() < 1e-5


@torch.no_grad()
def test_references_change_the_hints_and_the_output_but_not_its_shape():
    base, wrapped = vace_pair()
    x, t, prefix, ctx, chunk_ctx, text = inputs(wrapped, refs=1)
    plain = wrapped.compute_hints(x, t, text, chunk_ctx)
    with_ref = wrapped.compute_hints(x, t, text, ctx, vace_prefix=prefix)
    other = prefix.flip(-1)
    other_ctx = ctx.clone()
    other_ctx[:, :16, :1] = other
    with_other = wrapped.compute_hints(x, t, text, other_ctx, vace_prefix=other)
    for a, b, c in zip(plain, with_ref, with_other):
        assert a.shape == b.shape == c.shape
        assert (a - b).abs().max() > 1e-4 and (b - c).abs().max() > 1e-4
    y = wrapped(x, t, text, vace_context=ctx, vace_prefix=prefix)
    assert y.shape == x.shape  # the denoised latents never contain the references
    assert (y - wrapped(x, t, text, vace_context=chunk_ctx)).abs().max() > 1e-4
    # context_scale 0 is the base model exactly, prefix or not
    assert torch.equal(wrapped(x, t, text, vace_context=ctx, vace_prefix=prefix, context_scale=0.0), base(x, t, text))


@torch.no_grad()
def test_prefix_shape_errors_are_clear():
    _, wrapped = vace_pair()
    x, t, prefix, ctx, chunk_ctx, text = inputs(wrapped, refs=2)
    with pytest.raises(ValueError, match="prefix"):  # context must cover prefix + chunk exactly
        wrapped.compute_hints(x, t, text, chunk_ctx, vace_prefix=prefix)
    with pytest.raises(ValueError, match="vace_prefix"):
        wrapped.compute_hints(x, t, text, ctx, vace_prefix=prefix[:, :8])
    with pytest.raises(ValueError, match="grid"):
        wrapped.compute_hints(x, t, text, ctx, vace_prefix=prefix[..., :4])


@torch.no_grad()
def test_prefix_streams_through_the_kv_cache_without_entering_it():
    """Refs condition every chunk through the hints only: the cache holds chunk frames only and a
    streamed run equals per-chunk hints injected by hand."""
    base, wrapped = vace_pair()
    x, t, prefix, ctx, _, text = inputs(wrapped, refs=1)
    kv = wrapped.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    kv_ref = base.new_kv_cache(SinkWindow(12, 3), latent_hw=LATENT_HW)
    for c in range(3):
        xc = x.roll(c, dims=-1)
        got = wrapped(xc, t, text, kv, c * CHUNK, vace_context=ctx, vace_prefix=prefix)
        hints = wrapped.compute_hints(xc, t, text, ctx, vace_prefix=prefix)
        res = dict(zip(wrapped.vace_layers, hints))
        want = base(xc, t, text, kv_ref, c * CHUNK, block_residuals=res)
        assert torch.equal(got, want)
