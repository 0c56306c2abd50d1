"""Self- and cross-attention of the Wan2.1 block (WanSelfAttention / WanT2VCrossAttention in
https://github.com/Wan-Video/Wan2.1, wan/modules/model.py), the per-prompt cross-attention state
(TextState: the text tokens and each block's cached K/V) and the chunk-local attention context.

Layout: projections give [B, L, H, D] views (free reshapes of [B, L, dim]); SDPA receives
`.transpose(1, 2)` views [B, H, L, D] whose last dim is contiguous, which is what the flash /
cuDNN / efficient kernels want (they work in [B, L, H, D] internally), so no copies are made.
The KV cache stores [B, M, H, D] for the same reason.

Attention context protocol (what a block needs to run self-attention; implemented by
`LocalAttention` below and by the KV cache's per-forward `CachedAttention`):
    q_freqs        per-token RoPE rotations [L, 1, D/2, 2] (cos, sin) fp32 for the chunk's queries
    rotate_keys    True if the chunk's new keys must be rotated with q_freqs before
                   `keys_values` (False when the cache stores un-rotated keys)
    mask           None or an SDPA attn_mask for [L, M] (dense reference / training path)
    keys_values(layer, k, v) -> (K, V)  both [B, M, H, D], K already rotated
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from vacelive.engine.dit.sdpa_select import SdpaSelector, use_selector
from vacelive.engine.dit.sdpa_select import active as active_selector


class RMSNorm(nn.Module):
    """WanRMSNorm: normalise in fp32, cast back to the input dtype, then scale by `weight`."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for [B, L, H, D] inputs; returns [B, L, H*D]. Under
    `sdpa_context("auto")` the kernel is the one measured fastest for this shape (sdpa_select)."""
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    selector = None if torch.compiler.is_compiling() else active_selector()
    if selector is not None:
        out = selector.attention(q, k, v, mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


# The --sdpa setting: a backend of torch.nn.attention.SDPBackend by name. "auto": the fastest
# kernel per attention shape, measured once on CUDA (engine.dit.sdpa_select; PyTorch's default
# choice elsewhere); "default": PyTorch's own choice, nothing measured.
SDPA_BACKENDS = {"auto": None, "default": None, "flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}
_SELECTOR = None


def sdpa_selector():
    """The process's per-shape kernel choices for --sdpa auto (one table: the choice depends on
    the GPU and the shape only)."""
    global _SELECTOR
    if _SELECTOR is None:
        _SELECTOR = SdpaSelector()
    return _SELECTOR


def sdpa_context(name: str):
    """Context restricting scaled_dot_product_attention to one backend of SDPA_BACKENDS
    ("default": no restriction; "auto": per-shape measured choice)."""
    if name == "default":
        return contextlib.nullcontext()
    if name == "auto":
        return use_selector(sdpa_selector())
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[name])])


class _Projections(nn.Module):
    """The q/k/v/o Linears and the q/k RMSNorms both attentions of a Wan block have (the public
    key names `q`, `k`, `v`, `o`, `norm_q`, `norm_k`)."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)


class SelfAttention(_Projections):
    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, L, dim] -> q, k (RMS-normalised over the full dim, before the head split), v as [B, L, H, D]."""
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(-1, heads)
        k = self.norm_k(self.k(x)).unflatten(-1, heads)
        v = self.v(x).unflatten(-1, heads)
        return q, k, v


class CrossAttention(_Projections):
    """Attention over the (always 512, zero-padded, unmasked) text tokens; K/V cached per prompt."""

    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heads = (self.num_heads, -1)
        return self.norm_k(self.k(context)).unflatten(-1, heads), self.v(context).unflatten(-1, heads)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        return self.o(attend(q, k, v))


class TextState:
    """One prompt's conditioning: the embedded text tokens and, lazily, every attention block's
    cross-attention K/V. A new prompt = a new TextState (that IS the cross-attention cache reset).
    `kv_computations` counts K/V computations (a test hook: recomputation is observable)."""

    def __init__(self, context: torch.Tensor, weights_version: int = 0):
        self.context = context  # [B, text_len, dim], model dtype
        self.kv_computations = 0
        self._kv: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self._version = weights_version

    def sync(self, weights_version: int) -> None:
        """Drop cached K/V computed with other weights (LoRA merge / scale change, reload)."""
        if weights_version != self._version:
            self._kv.clear()
            self._version = weights_version

    def kv(self, cross_attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self._kv.get(cross_attn)
        if entry is None:
            entry = cross_attn.text_kv(self.context)
            self._kv[cross_attn] = entry
            self.kv_computations += 1
        return entry

    def clear(self) -> None:
        self._kv.clear()


class LocalAttention:
    """Attention context for a chunk that attends only to itself (kv=None): VACE hint blocks,
    the dense reference path (with an explicit mask) and cache-free runs."""

    rotate_keys = True

    def __init__(self, q_freqs: torch.Tensor, mask: torch.Tensor | None = None):
        self.q_freqs, self.mask = q_freqs, mask

    def keys_values(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return k, v
