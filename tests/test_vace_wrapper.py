"""VACE composition wrapper: shared parameters and public layout, exact base equivalence when
off, hint math and injection point, hint reuse, and the same wrapper over two cache policies."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CausalWanModel, SinkWindow, VaceWanModel
from support import vace_pair, windowed_mask

LATENT_HW = (4, 6)
CHUNK = 3


pytestmark = pytest.mark.usefixtures("single_thread")


def inputs(model, frames=CHUNK, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, frames, *LATENT_HW, generator=g)
    t = torch.rand(1, frames, generator=g) * 1000
    vc = torch.randn(1, 96, frames, *LATENT_HW, generator=g)
    text = model.prepare_text(torch.randn(1, 9, model.cfg.text_dim, generator=g))
    return x, t, vc, text


def test_state_dict_is_public_layout_and_parameters_are_shared():
    base, wrapped = vace_pair()
    keys = list(wrapped.state_dict())
    base_keys = list(base.state_dict())
    assert [k for k in keys if not k.startswith("vace_")] == base_keys
    vace = {k for k in keys if k.startswith("vace_")}
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in vace if k.startswith("vace_blocks")} == {"vace_blocks.0", "vace_blocks.1"}
    assert "vace_blocks.0.before_proj.weight" in vace and "vace_blocks.1.before_proj.weight" not in vace
    assert {"vace_patch_embedding.weight", "vace_patch_embedding.bias", "vace_blocks.1.after_proj.weight"} <= vace
    assert wrapped.blocks is base.blocks and wrapped.head is base.head
    assert wrapped.state_dict()["blocks.0.ffn.0.weight"].data_ptr() == base.blocks[0].ffn[0].weight.data_ptr()
    # default mapping 14B-style: VACE blocks sit at cfg.vace_layers
    assert VaceWanModel(CausalWanModel(tiny_config(num_layers=10, vace_layers=(0, 5)))).vace_layers == (0, 5)
    with pytest.raises(ValueError):
        VaceWanModel(base, vace_layers=(1, 2))


@torch.no_grad()
def test_off_means_exactly_the_base_and_on_changes_the_output():
    base, wrapped = vace_pair()
    x, t, vc, text = inputs(wrapped)
    y_base = base(x, t, text)
    assert torch.equal(wrapped(x, t, text, vace_context=vc, context_scale=0.0), y_base)
    assert torch.equal(wrapped(x, t, text), y_base)  # no vace_context: the clean / re-cache pass
    y_on = wrapped(x, t, text, vace_context=vc)
    assert (y_on - y_base).abs().max() > 1e-3
    for block in wrapped.vace_blocks:
        block.after_proj.weight.zero_()
        block.after_proj.bias.zero_()
    assert torch.equal(wrapped(x, t, text, vace_context=vc), y_base)


@torch.no_grad()
def test_hints_match_spec_math_and_are_injected_after_the_mapped_blocks():
    base, wrapped = vace_pair(layers=5, vace_layers=(0, 3))
    x, t, vc, text = inputs(wrapped)
    scale = 0.7
    # hints by hand (Wan2.1 VaceWanModel.forward_vace):
    # c = before_proj(vace_patch(vc)) + x_embedded; blocks over the chunk
    # only, RoPE from frame 0; hint_n = after_proj(c_n)
    xe = F.conv3d(x, base.patch_embedding.weight, base.patch_embedding.bias, stride=(1, 2, 2)).flatten(2).transpose(1, 2)
    c = F.conv3d(vc, wrapped.vace_patch_embedding.weight, wrapped.vace_patch_embedding.bias, stride=(1, 2, 2)).flatten(2).transpose(1, 2)
    grid = (CHUNK, 2, 3)
    e, e0 = base.embed_time(t, 1, CHUNK)
    local = base.local_attention(grid, 0)
    c = wrapped.vace_blocks[0].before_proj(c) + xe
    hints = []
    for n, block in enumerate(wrapped.vace_blocks):
        c = block(c, e0, text, local, n)
        hints.append(block.after_proj(c))
    ours = wrapped.compute_hints(x, t, text, vc)
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(ours, hints))
    # main stream by hand: x += scale * hint right AFTER main blocks 0 and 3 (start_frame 6)
    h = xe.clone()
    start = base.local_attention(grid, 6)
    for i, block in enumerate(base.blocks):
        h = block(h, e0, text, start, i)
        if i in (0, 3):
            h = h + scale * hints[(0, 3).index(i)]
    expected = base.unpatchify(base.head(h, e), grid)
    got = wrapped(x, t, text, None, 6, vace_context=vc, context_scale=scale)
    assert (got - expected).abs().max() < 1e-5
    assert text.kv_computations == 5 + 2  # main + VACE blocks each cached their text K/V once


@torch.no_grad()
def test_precomputed_hints_equal_vace_context_forward():
    _, wrapped = vace_pair()
    x, t, vc, text = inputs(wrapped)
    hints = wrapped.compute_hints(x, t, text, vc)
    assert len(hints) == 2 and hints[0].shape == (1, CHUNK * 6, wrapped.cfg.dim)
    assert torch.equal(wrapped(x, t, text, hints=hints, context_scale=1.3), wrapped(x, t, text, vace_context=vc, context_scale=1.3))
    with pytest.raises(ValueError, match="hints"):
        wrapped(x, t, text, hints=hints[:1])


@torch.no_grad()
def test_context_with_fewer_frames_is_zero_padded_and_bad_shapes_are_rejected():
    _, wrapped = vace_pair()
    x, t, vc, text = inputs(wrapped)
    one = vc[:, :, :1]  # e.g. a single reference-image latent for a 3-frame chunk
    tokens = wrapped._context_tokens(one, 1, (CHUNK, 2, 3))
    assert tokens.shape == (1, 18, wrapped.cfg.dim) and torch.equal(tokens[:, 6:], torch.zeros_like(tokens[:, 6:]))
    assert torch.isfinite(wrapped(x, t, text, vace_context=one)).all()
    with pytest.raises(ValueError, match="grid"):
        wrapped(x, t, text, vace_context=vc[..., :4])
    with pytest.raises(ValueError, match="vace_context"):
        wrapped(x, t, text, vace_context=vc[:, :16])


@pytest.mark.parametrize("policy", [SinkWindow(12, 3), SinkWindow(21, 0)], ids=["longlive", "global21"])
@torch.no_grad()
def test_one_wrapper_streams_under_different_cache_policies(policy):
    """Same wrapper object, no policy-specific code: streaming with per-chunk hints == a dense
    masked base forward with the same per-chunk hints injected."""
    base, wrapped = vace_pair()
    frames = 18
    x, t, vc, text = inputs(wrapped, frames)
    kv = wrapped.new_kv_cache(policy, latent_hw=LATENT_HW)
    outs, hints = [], []
    for c in range(frames // CHUNK):
        sl = slice(c * CHUNK, (c + 1) * CHUNK)
        outs.append(wrapped(x[:, :, sl], t[:, sl], text, kv, c * CHUNK, vace_context=vc[:, :, sl]))
        hints.append(wrapped.compute_hints(x[:, :, sl], t[:, sl], text, vc[:, :, sl]))
    residuals = {layer: torch.cat([h[n] for h in hints], dim=1) for n, layer in enumerate(wrapped.vace_layers)}
    mask = windowed_mask(frames, policy.window, policy.sink, 6)
    dense = base(x, t, text, attn_mask=mask, block_residuals=residuals)
    assert (torch.cat(outs, dim=2) - dense).abs().max() <= 1e-5
