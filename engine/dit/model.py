"""Causal Wan2.1 DiT (Wan2.1 `wan/modules/model.py`; causal form as in
Self-Forcing `wan/modules/causal_model.py`): one model for every causal pipeline; they differ in the
KV-cache policy (kv_cache.py) and the schedule, not in weights.

State-dict keys and shapes are exactly the public checkpoints' (825 tensors for 1.3B). The RoPE
table and the sinusoid frequencies are non-persistent fp32 buffers computed once in float64.

fp32 parameters in a bf16 model: `time_embedding.*`, `time_projection.*`, every `modulation`
(blocks, VACE blocks, head) and `norm3.*` (the affine LayerNorm) stay fp32 whatever dtype the
model is cast to with `.to(dtype)`/`.half()`/`.bfloat16()` (see Fp32ParamsMixin); they are
~0.2 % of the parameters and feed the fp32 modulation math. The returned flow is fp32.

Base-model interface the VACE wrapper (vace.py) relies on, and nothing else:
    cfg                               WanConfig
    patch_embedding                   Conv3d(in_dim -> dim, k = s = patch_size)
    embed_video(x) -> (tokens, grid)  tokens [B, L, dim] fp32, grid (F, h, w)
    add_token_condition(tokens, c)    tokens + c after checking c is [B, L, dim] (None: unchanged)
    embed_time(t, batch, frames) -> (e [B,F,1,dim], e0 [B,F,6,dim])   fp32
    prepare_text(t5) -> TextState
    local_attention(grid, start_frame, mask=None) -> attention context for chunk-local attention
    blocks                            ModuleList; block(x, e0, text, attn, layer) -> x
    new_block() -> a fresh block of the same structure (used to build VACE blocks)
    forward(..., block_residuals={layer: tensor}, context_scale=s): x += s * residual after block
    forward(..., add_condition=c [B, L, dim]): added to the embedded tokens before the blocks
    weights_version                   int bumped on weight changes (invalidates TextState K/V)
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vacelive.engine.config import WanConfig
from vacelive.engine.dit.attention import LocalAttention, TextState
from vacelive.engine.dit.block import Head, WanBlock
from vacelive.engine.dit.rope import RopeTable, default_build_device

# Parameters kept in fp32 in a low-precision model (matched on state-dict names).
FP32_PARAMS = re.compile(r"(^|\.)(time_embedding|time_projection|norm3)\.|(^|\.)modulation$")


def keeps_fp32(name: str) -> bool:
    return FP32_PARAMS.search(name) is not None


class Fp32ParamsMixin:
    """`.to(dtype)` & co. change the dtype of every floating parameter except FP32_PARAMS, which
    only follow device moves (so they are never rounded through bf16)."""

    def _apply(self, fn, recurse=True):
        pinned = {id(p) for n, p in self.named_parameters() if keeps_fp32(n)}

        def keep_fp32(t):
            if id(t) in pinned and t.dtype == torch.float32:
                probe = fn(torch.empty(0, dtype=torch.float32, device=t.device))
                if probe.dtype != torch.float32:
                    return t.to(device=probe.device)
            return fn(t)

        return super()._apply(keep_fp32, recurse)


class Sinusoid(nn.Module):
    """Sinusoidal timestep features cat(cos, sin)(t * 10000^(-i/half)); fp32 buffer made in float64."""

    def __init__(self, freq_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self._build(default_build_device())

    def _build(self, device):
        half = self.freq_dim // 2
        inv = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device="cpu") / half)
        self.register_buffer("inv_freq", inv.float().to(device), persistent=False)

    def rebuild(self):
        d = self.inv_freq.device
        self._build(d if d.type != "meta" else torch.device("cpu"))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32 and self.inv_freq.device.type != "meta":
            self.rebuild()
        return self

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[..., None] * self.inv_freq
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


class CausalWanModel(Fp32ParamsMixin, nn.Module):
    """Causal Wan2.1 text-to-video DiT returning the flow prediction for one chunk."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        if dim % cfg.num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {cfg.num_heads}")
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList([self.new_block() for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        self.rope = RopeTable(cfg.head_dim, cfg.rope_max_positions)
        self.sinusoid = Sinusoid(cfg.freq_dim)
        self.weights_version = 0

    # ---- base-model interface (see module docstring) ------------------------------------------
    def new_block(self) -> WanBlock:
        return WanBlock(self.cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    def rebuild_buffers(self) -> None:
        """Recompute the non-persistent fp32 tables (needed after `to_empty()`)."""
        self.rope.rebuild()
        self.sinusoid.rebuild()

    def bump_weights_version(self) -> None:
        self.weights_version += 1

    def check_latents(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.cfg.in_dim:
            raise ValueError(f"latents must be [B, {self.cfg.in_dim}, F, H/8, W/8], got {tuple(x.shape)}")
        pt, ph, pw = self.cfg.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(f"latent size {tuple(x.shape[2:])} is not a multiple of the patch {self.cfg.patch_size}")

    def embed_video(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        self.check_latents(x)
        u = self.patch_embedding(x.to(self.patch_embedding.weight.dtype))
        grid = tuple(u.shape[2:])
        return u.flatten(2).transpose(1, 2).contiguous().float(), grid

    def add_token_condition(self, tokens: torch.Tensor, add_condition: torch.Tensor | None) -> torch.Tensor:
        """tokens + add_condition (fp32), after checking that the condition is [B, L, dim] for
        exactly these tokens; None returns the tokens untouched."""
        if add_condition is None:
            return tokens
        if not isinstance(add_condition, torch.Tensor) or tuple(add_condition.shape) != tuple(tokens.shape):
            got = tuple(add_condition.shape) if isinstance(add_condition, torch.Tensor) else type(add_condition).__name__
            b, n, c = tokens.shape
            raise ValueError(f"add_condition must be [B, L, C] = [{b}, {n}, {c}] (batch, this chunk's "
                             f"frames x (H/16) x (W/16) tokens, model dim), got {got}")
        return tokens + add_condition.to(device=tokens.device, dtype=tokens.dtype)

    def embed_time(self, t, batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """t: [B, F] per-frame timesteps (also accepts [B], a 0-d tensor or a float)."""
        t = self.timesteps(t, batch, frames)
        tp = self.time_projection[1]
        e = self.time_embedding_fp32(self.sinusoid(t.reshape(-1)))
        e0 = F.linear(F.silu(e), tp.weight.float(), tp.bias.float())
        dim = self.cfg.dim
        return e.view(batch, frames, 1, dim), e0.view(batch, frames, 6, dim)

    def timesteps(self, t, batch: int, frames: int) -> torch.Tensor:
        """t as [B, F] fp32 on the model's device (from [B, F], [B], a 0-d tensor or a float)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.patch_embedding.weight.device)
        if t.dim() == 0:
            t = t.expand(batch, frames)
        elif t.dim() == 1:
            t = t[:, None].expand(batch, frames)
        if tuple(t.shape) != (batch, frames):
            raise ValueError(f"timesteps must be [B, F] = [{batch}, {frames}], got {tuple(t.shape)}")
        return t

    def time_embedding_fp32(self, emb: torch.Tensor) -> torch.Tensor:
        l0, l2 = self.time_embedding[0], self.time_embedding[2]
        h = F.silu(F.linear(emb, l0.weight.float(), l0.bias.float()))
        return F.linear(h, l2.weight.float(), l2.bias.float())

    def prepare_text(self, t5_embeds: torch.Tensor) -> TextState:
        """umT5 outputs [B, L<=text_len, text_dim] -> TextState (zero-padded to text_len, embedded;
        padding tokens are not masked, exactly like the reference)."""
        cfg = self.cfg
        if t5_embeds.dim() != 3 or t5_embeds.shape[-1] != cfg.text_dim or t5_embeds.shape[1] > cfg.text_len:
            raise ValueError(f"text embeddings must be [B, <= {cfg.text_len}, {cfg.text_dim}], got {tuple(t5_embeds.shape)}")
        w = self.text_embedding[0].weight
        ctx = F.pad(t5_embeds.to(device=w.device, dtype=w.dtype), (0, 0, 0, cfg.text_len - t5_embeds.shape[1]))
        return TextState(self.text_embedding(ctx), self.weights_version)

    def local_attention(self, grid, start_frame: int = 0, mask: torch.Tensor | None = None) -> LocalAttention:
        f, h, w = grid
        return LocalAttention(self.rope.token_freqs(range(start_frame, start_frame + f), h, w), mask)

    def new_kv_cache(self, policy, *, batch: int = 1, latent_hw: tuple[int, int], dtype=None, device=None, rope_mode: str = "absolute", origin: int = 0):
        """A KV cache for latents of spatial size latent_hw = (H/8, W/8), sized from it."""
        from vacelive.engine.dit.kv_cache import KVCache

        _, ph, pw = self.cfg.patch_size
        if latent_hw[0] % ph or latent_hw[1] % pw:
            raise ValueError(f"latent size {latent_hw} is not a multiple of the patch {self.cfg.patch_size}")
        return getattr(policy, "cache_class", KVCache)(
            policy,
            num_layers=self.cfg.num_layers,
            batch=batch,
            grid_hw=(latent_hw[0] // ph, latent_hw[1] // pw),
            num_heads=self.cfg.num_heads,
            head_dim=self.cfg.head_dim,
            rope=self.rope,
            dtype=dtype or self.dtype,
            device=device or self.patch_embedding.weight.device,
            rope_mode=rope_mode,
            origin=origin,
        )

    # ---- forward --------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        t,
        text: TextState,
        kv=None,
        start_frame: int = 0,
        *,
        vace_context=None,
        context_scale: float = 1.0,
        hints=None,
        block_residuals: Mapping[int, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        add_condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow prediction [B, out_dim, F, H/8, W/8] (fp32) for latents x [B, in_dim, F, H/8, W/8].

        t: [B, F] per-frame timesteps; text: TextState from prepare_text; kv: a KV cache (None =
        the chunk attends only to itself, optionally with `attn_mask` [L, L]); start_frame: the
        chunk's first latent frame index in the stream; block_residuals: {layer: [B, L, dim]}
        added as `x + context_scale * r` after that main block (how VACE hints are injected);
        add_condition: [B, L, dim] per-token condition added to the patch-embedded tokens before
        the first block (UniAnimate-DiT's `x = add_condition + x`); None = no addition at all.
        """
        if vace_context is not None or hints is not None:
            raise ValueError("this base model has no VACE blocks: wrap it with VaceWanModel to use vace_context/hints")
        batch, grid = x.shape[0], self.token_grid(x)
        text.sync(self.weights_version)
        if text.context.shape[0] != batch:
            raise ValueError(f"text batch {text.context.shape[0]} != latent batch {batch}")
        if kv is not None:
            if attn_mask is not None:
                raise ValueError("attn_mask is only for the cache-free path (kv=None)")
            attn = kv.begin(start_frame, grid, batch)
        else:
            attn = self.local_attention(grid, start_frame, attn_mask)
        flow = self.forward_with(x, t, text, attn, block_residuals, context_scale, add_condition)
        if kv is not None:
            kv.commit(attn)
        return flow

    def token_grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        """(frames, h, w) of the patch tokens of latents x [B, C, F, H/8, W/8]."""
        self.check_latents(x)
        pt, ph, pw = self.cfg.patch_size
        return x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw

    def forward_with(self, x, t, text, attn, block_residuals=None, context_scale: float = 1.0,
                     add_condition=None) -> torch.Tensor:
        """The forward's tensor work for a given attention context (no cache bookkeeping, no
        Python state changes): what engine.dit.graphs captures as one CUDA graph."""
        tokens, grid = self.embed_video(x)
        tokens = self.add_token_condition(tokens, add_condition)
        e, e0 = self.embed_time(t, x.shape[0], grid[0])
        residuals = block_residuals or {}
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, e0, text, attn, i)
            r = residuals.get(i)
            if r is not None:
                tokens = torch.add(tokens, r, alpha=context_scale)
        out = self.head(tokens, e)
        return self.unpatchify(out, grid)

    def unpatchify(self, u: torch.Tensor, grid) -> torch.Tensor:
        """[B, L, pt*ph*pw*C] (channels fastest) -> [B, C, F*pt, h*ph, w*pw], fp32."""
        f, h, w = grid
        pt, ph, pw = self.cfg.patch_size
        c = self.cfg.out_dim
        u = u.float().view(u.shape[0], f, h, w, pt, ph, pw, c)
        return u.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(u.shape[0], c, f * pt, h * ph, w * pw)
