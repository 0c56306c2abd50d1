"""Causal Wan2.1 DiT: exact public key layout (manifests written by hand from the public
checkpoint key list), RoPE
split, and the forward pass against a float64 re-implementation of Wan2.1's math."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vacelive.engine.config import WAN_1_3B, WAN_14B, tiny_config
from vacelive.engine.dit import CausalWanModel, RopeTable, VaceWanModel, keeps_fp32, rope_split
from support import read_manifest

pytestmark = pytest.mark.usefixtures("single_thread")


def shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("cfg,base_file,vace_file,n_base,n_vace", [
    (WAN_1_3B, "wan2.1_t2v_1.3b.txt", "wan2.1_vace_1.3b.txt", 825, 439),
    (WAN_14B, "wan2.1_t2v_14b.txt", "wan2.1_vace_14b.txt", 1095, 236),
])
def test_full_size_keys_and_shapes_match_public_manifests(cfg, base_file, vace_file, n_base, n_vace):
    base_manifest, vace_manifest = read_manifest(base_file), read_manifest(vace_file)
    assert (len(base_manifest), len(vace_manifest)) == (n_base, n_vace)
    with torch.device("meta"):
        base = CausalWanModel(cfg)
        wrapped = VaceWanModel(base)
    assert shapes(base) == base_manifest
    assert shapes(wrapped) == {**base_manifest, **vace_manifest}


def test_parameter_counts_match_spec():
    numel = lambda manifest: sum(math.prod(s) for s in manifest.values())
    assert numel(read_manifest("wan2.1_t2v_1.3b.txt")) == 1_418_996_800
    assert numel(read_manifest("wan2.1_vace_1.3b.txt")) == 734_975_232
    with torch.device("meta"):
        base = CausalWanModel(WAN_1_3B)
        wrapped = VaceWanModel(base)
    assert sum(p.numel() for p in base.parameters()) == 1_418_996_800
    assert sum(p.numel() for p in base.blocks[0].parameters()) == 46_440_704
    assert sum(p.numel() for n, p in wrapped.named_parameters() if n.startswith("vace_")) == 734_975_232


# ---- float64 re-implementation of Wan2.1 model.py / Self-Forcing causal_model.py, written independently

def spec_rope_freqs(d: int, n: int = 1024) -> torch.Tensor:
    def rope_params(max_len, dim):
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), 1.0 / torch.pow(10000, torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        return torch.polar(torch.ones_like(angles), angles)

    return torch.cat([rope_params(n, d - 4 * (d // 6)), rope_params(n, 2 * (d // 6)), rope_params(n, 2 * (d // 6))], dim=1)


def spec_rope_apply(x, grid, freqs, start_frame):
    """x [B, L, H, D] float64; reference causal_rope_apply (complex pairs, frame|row|col split)."""
    f, h, w = grid
    c = x.shape[-1] // 2
    ft, fh, fw = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    table = torch.cat([
        ft[start_frame:start_frame + f].view(f, 1, 1, -1).expand(f, h, w, -1),
        fh[:h].view(1, h, 1, -1).expand(f, h, w, -1),
        fw[:w].view(1, 1, w, -1).expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, 1, -1)
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(xc * table).flatten(3)


def spec_forward(model, x, t, t5, start_frame):
    cfg = model.cfg
    sd = {k: v.double() for k, v in model.state_dict().items()}
    lin = lambda z, p: F.linear(z, sd[p + ".weight"], sd[p + ".bias"])
    dim, heads = cfg.dim, cfg.num_heads
    hd = dim // heads

    u = F.conv3d(x.double(), sd["patch_embedding.weight"], sd["patch_embedding.bias"], stride=cfg.patch_size)
    B, _, Fr, h, w = u.shape
    xs = u.flatten(2).transpose(1, 2)

    half = cfg.freq_dim // 2
    sinusoid = torch.outer(t.flatten().double(), torch.pow(10000, -torch.arange(half, dtype=torch.float64).div(half)))
    emb = torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)
    e = lin(F.silu(lin(emb, "time_embedding.0")), "time_embedding.2")
    e0 = lin(F.silu(e), "time_projection.1").unflatten(1, (6, dim)).unflatten(0, (B, Fr))
    e = e.unflatten(0, (B, Fr))

    ctx = torch.cat([t5.double(), t5.new_zeros(B, cfg.text_len - t5.shape[1], cfg.text_dim).double()], dim=1)
    ctx = lin(F.gelu(lin(ctx, "text_embedding.0"), approximate="tanh"), "text_embedding.2")

    freqs = spec_rope_freqs(hd)
    rms = lambda z, p: z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + cfg.eps) * sd[p + ".weight"]
    ln = lambda z: F.layer_norm(z, (dim,), eps=cfg.eps)
    per_frame = lambda z: z.unflatten(1, (Fr, -1))

    def mha(q, k, v):
        s = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(hd)
        return torch.einsum("bhlm,bmhd->blhd", s.softmax(-1), v).flatten(2)

    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        m = (sd[p + "modulation"].unsqueeze(1) + e0).chunk(6, dim=2)  # each [B, F, 1, dim]
        y = (per_frame(ln(xs)) * (1 + m[1]) + m[0]).flatten(1, 2)
        q = rms(lin(y, p + "self_attn.q"), p + "self_attn.norm_q").unflatten(-1, (heads, hd))
        k = rms(lin(y, p + "self_attn.k"), p + "self_attn.norm_k").unflatten(-1, (heads, hd))
        v = lin(y, p + "self_attn.v").unflatten(-1, (heads, hd))
        q, k = spec_rope_apply(q, (Fr, h, w), freqs, start_frame), spec_rope_apply(k, (Fr, h, w), freqs, start_frame)
        y = lin(mha(q, k, v), p + "self_attn.o")
        xs = xs + (per_frame(y) * m[2]).flatten(1, 2)
        y = F.layer_norm(xs, (dim,), sd[p + "norm3.weight"], sd[p + "norm3.bias"], cfg.eps)
        q = rms(lin(y, p + "cross_attn.q"), p + "cross_attn.norm_q").unflatten(-1, (heads, hd))
        k = rms(lin(ctx, p + "cross_attn.k"), p + "cross_attn.norm_k").unflatten(-1, (heads, hd))
        v = lin(ctx, p + "cross_attn.v").unflatten(-1, (heads, hd))
        xs = xs + lin(mha(q, k, v), p + "cross_attn.o")
        y = (per_frame(ln(xs)) * (1 + m[4]) + m[3]).flatten(1, 2)
        y = lin(F.gelu(lin(y, p + "ffn.0"), approximate="tanh"), p + "ffn.2")
        xs = xs + (per_frame(y) * m[5]).flatten(1, 2)

    hm = (sd["head.modulation"].unsqueeze(1) + e.unsqueeze(2)).chunk(2, dim=2)
    out = lin((per_frame(ln(xs)) * (1 + hm[1]) + hm[0]).flatten(1, 2), "head.head")
    out = out.view(B, Fr, h, w, 1, 2, 2, cfg.out_dim)
    return torch.einsum("bfhwpqrc->bcfphqwr", out).reshape(B, cfg.out_dim, Fr, 2 * h, 2 * w)


def head128_config(layers=2):
    return tiny_config(dim=256, num_heads=2, num_layers=layers, ffn_dim=320, text_dim=48, text_len=20, freq_dim=64)


def test_rope_split_and_rotation_match_complex_reference():
    assert rope_split(128) == (22, 21, 21)
    assert rope_split(64) == (12, 10, 10)
    table = RopeTable(128)
    torch.manual_seed(0)
    grid, start = (3, 5, 7), 700
    x = torch.randn(2, 3 * 5 * 7, 4, 128)
    freqs = table.token_freqs(range(start, start + 3), 5, 7)
    ours = RopeTable.rotate(x, freqs)
    ref = spec_rope_apply(x.double(), grid, spec_rope_freqs(128), start)
    assert (ours.double() - ref).abs().max() < 2e-5
    # a frame offset must only move the temporal part: rotating rows/cols must not depend on it
    inv = RopeTable.rotate(ours, freqs, inverse=True)
    assert (inv - x).abs().max() < 1e-5


def test_forward_matches_spec_math_float64_reference():
    torch.manual_seed(0)
    cfg = head128_config()
    model = CausalWanModel(cfg).eval()
    x = torch.randn(1, 16, 3, 6, 8)
    t = torch.tensor([[1000.0, 937.5, 833.3333]])
    t5 = torch.randn(1, 11, cfg.text_dim)
    with torch.no_grad():
        ours = model(x, t, model.prepare_text(t5), start_frame=5)
        ref = spec_forward(model, x, t, t5, start_frame=5)
    assert ours.shape == (1, 16, 3, 6, 8) and ours.dtype == torch.float32
    assert (ours.double() - ref).abs().max() < 1e-4 * ref.abs().max()


def test_single_block_modulation_order_matches_spec():
    """One block against the reference math: catches swapped shift/scale/gate or a gated cross-attn."""
    torch.manual_seed(1)
    cfg = head128_config(layers=1)
    model = CausalWanModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # large modulation so any mix-up is visible
            if p.dim() == 3:
                p.mul_(20)
        x = torch.randn(2, 16, 2, 4, 4)
        t = torch.tensor([[10.0, 990.0], [500.0, 250.0]])
        t5 = torch.randn(2, 20, cfg.text_dim)
        ours = model(x, t, model.prepare_text(t5))
        ref = spec_forward(model, x, t, t5, start_frame=0)
        assert (ours.double() - ref).abs().max() < 1e-4 * ref.abs().max()
        # swapping shift and scale of block 0 must break the match (the test can fail)
        model.blocks[0].modulation[:, [0, 1]] = model.blocks[0].modulation[:, [1, 0]]
        swapped = model(x, t, model.prepare_text(t5))
        assert (swapped.double() - ref).abs().max() > 1e-2 * ref.abs().max()


def test_text_state_caches_cross_attention_kv_per_prompt():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = CausalWanModel(cfg).eval()
    x, t = torch.randn(1, 16, 3, 4, 4), torch.full((1, 3), 500.0)
    text = model.prepare_text(torch.randn(1, 7, cfg.text_dim))
    with torch.no_grad():
        y1 = model(x, t, text)
        assert text.kv_computations == cfg.num_layers
        y2 = model(x, t, text)
        assert text.kv_computations == cfg.num_layers  # reused, not recomputed
        assert torch.equal(y1, y2)
        other = model.prepare_text(torch.randn(1, 7, cfg.text_dim))  # new prompt = new state
        y3 = model(x, t, other)
        assert other.kv_computations == cfg.num_layers and not torch.allclose(y1, y3)
        model.bump_weights_version()  # e.g. a LoRA scale change
        model(x, t, text)
        assert text.kv_computations == 2 * cfg.num_layers


def test_fp32_params_survive_dtype_casts_and_bf16_runs():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = CausalWanModel(cfg).eval()
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.to(torch.bfloat16)
    pinned = [n for n, _ in model.named_parameters() if keeps_fp32(n)]
    assert "time_projection.1.weight" in pinned and "blocks.0.modulation" in pinned and "head.modulation" in pinned
    for n, p in model.named_parameters():
        if keeps_fp32(n):
            assert p.dtype == torch.float32 and torch.equal(p, ref[n]), n
        else:
            assert p.dtype == torch.bfloat16, n
    assert model.rope.cos.dtype == torch.float32 and model.sinusoid.inv_freq.dtype == torch.float32
    x, t = torch.randn(1, 16, 3, 4, 4), torch.full((1, 3), 937.5)
    t5 = torch.randn(1, 7, cfg.text_dim)
    with torch.no_grad():
        y16 = model(x, t, model.prepare_text(t5))
        model.float()
        y32 = model(x, t, model.prepare_text(t5))
    assert y16.dtype == torch.float32
    assert (y16 - y32).abs().max() < 0.05 * y32.abs().max()


def test_bad_inputs_raise_clear_errors():
    cfg = tiny_config()
    model = CausalWanModel(cfg)
    text = model.prepare_text(torch.randn(1, 3, cfg.text_dim))
    with pytest.raises(ValueError, match="text embeddings"):
        model.prepare_text(torch.randn(1, cfg.text_len + 1, cfg.text_dim))
    with pytest.raises(ValueError, match="latents"):
        model(torch.randn(1, 4, 3, 4, 4), torch.zeros(1, 3), text)
    with pytest.raises(ValueError, match="multiple of the patch"):
        model(torch.randn(1, 16, 3, 5, 4), torch.zeros(1, 3), text)
    with pytest.raises(ValueError, match="timesteps"):
        model(torch.randn(1, 16, 3, 4, 4), torch.zeros(1, 2), text)
    with pytest.raises(ValueError, match="VaceWanModel"):
        model(torch.randn(1, 16, 3, 4, 4), torch.zeros(1, 3), text, vace_context=torch.zeros(1))
