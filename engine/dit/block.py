"""The Wan2.1 attention block and output head with per-frame modulation (Wan2.1
`WanAttentionBlock`; per-frame timesteps as in Self-Forcing `wan/modules/causal_model.py`).

Precision (as upstream Wan under fp32 autocast): the residual stream x is fp32; LayerNorms,
modulation (shift/scale) and gating are computed in fp32; only the Linear/attention inputs are
cast to the weight dtype (bf16 in production). `modulation` parameters stay fp32 in a bf16 model
(see model.FP32_PARAMS).

Block math with m = modulation + e0 chunked into (shift_msa, scale_msa, gate_msa, shift_mlp,
scale_mlp, gate_mlp), each per latent frame:
    x = x + SelfAttn(LN1(x)(1 + scale_msa) + shift_msa) * gate_msa
    x = x + CrossAttn(LN3(x), text)                      (affine LN3, no modulation, no gate)
    x = x + FFN(LN2(x)(1 + scale_mlp) + shift_mlp) * gate_mlp
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vacelive.engine.config import WanConfig
from vacelive.engine.dit.attention import CrossAttention, SelfAttention, attend
from vacelive.engine.dit.rope import RopeTable


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """LN(x) * (1 + scale) + shift per frame, in fp32. x [B, L, dim]; shift/scale [B, F, 1, dim]."""
    xn = F.layer_norm(x.float(), (x.shape[-1],), eps=eps).unflatten(1, (shift.shape[1], -1))
    return torch.addcmul(shift, xn, 1 + scale).flatten(1, 2).to(dtype)


def gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + y * gate per frame, in fp32. x [B, L, dim] fp32; y [B, L, dim]; gate [B, F, 1, dim]."""
    frames = (gate.shape[1], -1)
    return torch.addcmul(x.unflatten(1, frames), y.unflatten(1, frames), gate).flatten(1, 2)


class WanBlock(nn.Module):
    """One DiT block. Keys: modulation, self_attn.*, norm3.*, cross_attn.*, ffn.{0,2}.*"""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        dim = cfg.dim
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))

    @property
    def compute_dtype(self) -> torch.dtype:
        # norm_q is never LoRA-wrapped nor pinned to fp32: it always has the model's dtype.
        return self.self_attn.norm_q.weight.dtype

    def forward(self, x, e0, text, attn, layer: int = 0) -> torch.Tensor:
        """x [B, L, dim] (fp32 residual), e0 [B, F, 6, dim] fp32, text: TextState, attn: attention
        context (see attention.py), layer: index used by the KV cache."""
        mods = self.modulations(e0)
        q, k, v = self.pre_attention(x, mods, attn.q_freqs, attn.rotate_keys)
        k, v = attn.keys_values(layer, k, v)
        y = attend(q, k, v, attn.mask)
        text_k, text_v = text.kv(self.cross_attn)
        return self.post_attention(x, y, mods, text_k, text_v)

    # The two pure tensor functions below hold all the math between cache accesses; they are the
    # units to torch.compile / CUDA-graph (no Python-side state, no data-dependent control flow).
    def modulations(self, e0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.modulation.float().unsqueeze(1) + e0  # [B, F, 6, dim]
        return m.unsqueeze(3).unbind(2)  # six [B, F, 1, dim]

    def pre_attention(self, x, mods, q_freqs, rotate_keys: bool):
        shift, scale = mods[0], mods[1]
        q, k, v = self.self_attn.qkv(modulate(x, shift, scale, self.eps, self.compute_dtype))
        q = RopeTable.rotate(q, q_freqs)
        if rotate_keys:
            k = RopeTable.rotate(k, q_freqs)
        return q, k, v

    def post_attention(self, x, y, mods, text_k, text_v):
        dtype = self.compute_dtype
        x = gated_add(x, self.self_attn.o(y), mods[2])
        n3 = self.norm3
        xn = F.layer_norm(x.float(), (x.shape[-1],), n3.weight.float(), n3.bias.float(), n3.eps)
        x = x + self.cross_attn(xn.to(dtype), text_k, text_v)
        return gated_add(x, self.ffn(modulate(x, mods[3], mods[4], self.eps, dtype)), mods[5])


class Head(nn.Module):
    """Output head: head(LN(x)(1 + scale) + shift) with (shift, scale) = head.modulation + e (per frame)."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.eps = cfg.eps
        out = cfg.out_dim
        for p in cfg.patch_size:
            out *= p
        self.head = nn.Linear(cfg.dim, out)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim] fp32; e [B, F, 1, dim] fp32 (time embedding before the projection)."""
        shift, scale = (self.modulation.float().unsqueeze(1) + e).unsqueeze(3).unbind(2)
        return self.head(modulate(x, shift, scale, self.eps, self.head.weight.dtype))
