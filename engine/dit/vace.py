"""VACE by composition (Wan2.1 `wan/modules/vace_model.py`; composition as in
Daydream Scope's `CausalVaceWanModel`): ONE wrapper for any causal base.

`VaceWanModel(base)` keeps the base model outside its module tree and registers the base's
children on itself, so parameters are shared (not copied), the state dict is exactly the public
full VACE layout (825 bare base keys + `vace_blocks.N.*` + `vace_patch_embedding.*` = 1264 for
1.3B) and PEFT/LoRA names `blocks.N.*` resolve on either object. It relies only on the base
interface listed in model.py (embed_video, embed_time, prepare_text, local_attention, blocks,
new_block, forward(block_residuals=...)) — nothing per pipeline or per cache policy.

Hint math (exactly `VaceWanModel.forward_vace`): c = vace_patch_embedding(vace_context) tokens;
at VACE block 0 c = before_proj(c) + x_embedded (the main tokens right after patch_embedding);
every VACE block is a full attention block run with the same e0 and text; hint_n = after_proj(c). Hints are computed
over the current chunk only (no KV cache, RoPE from frame 0). hint_n is added as
x + hint_n * context_scale right AFTER main block vace_layers[n].

vace_context tokens are zero-padded or truncated to the chunk's token count (what the streaming
reference does with its padded/sliced context, e.g. one reference-image latent frame with a
3-frame chunk); its spatial size must match the latents.

Reference prefix (`vace_prefix`, docs/vace.md): reference images live in conditioning space only.
The hint stream then runs over P prefix frames + the chunk's F frames, exactly the original's
layout `[refs | video]`: vace_context has P + F frames, the prefix "x" is the clean reference
latents [B, 16, P, h, w] embedded with the main patch_embedding, RoPE frame positions are 0..P-1
for the references and P..P+F-1 for the chunk, and the prefix frames carry timestep 0 (clean
frames at t = 0, the same convention as the causal model's KV-cache context). Only the chunk's
tokens' hints are injected; the denoised latents never contain references. P = 0 (None) is
exactly the path without a prefix.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vacelive.engine.dit.attention import TextState
from vacelive.engine.dit.model import Fp32ParamsMixin

VACE_PREFIXES = ("vace_blocks.", "vace_patch_embedding.")
# Timestep of the reference-prefix frames: they are clean latents, so they are labelled clean.
PREFIX_TIMESTEP = 0.0


class VaceWanModel(Fp32ParamsMixin, nn.Module):
    def __init__(self, base_model: nn.Module, vace_layers: Sequence[int] | None = None, vace_in_dim: int | None = None):
        super().__init__()
        object.__setattr__(self, "base", base_model)  # not a submodule: its children are ours
        for name, child in base_model.named_children():
            self._modules[name] = child  # (add_module would see the name through __getattr__)
        cfg = base_model.cfg
        layers = tuple(cfg.vace_layers if vace_layers is None else vace_layers)
        if not layers or layers[0] != 0 or list(layers) != sorted(set(layers)) or layers[-1] >= cfg.num_layers:
            raise ValueError(f"vace_layers must be increasing, start at 0 and be < {cfg.num_layers}; got {layers}")
        self.vace_layers = layers
        self.vace_in_dim = cfg.vace_in_dim if vace_in_dim is None else vace_in_dim
        dim = cfg.dim
        self.vace_blocks = nn.ModuleList()
        for n in range(len(layers)):
            block = base_model.new_block()
            if n == 0:
                block.before_proj = nn.Linear(dim, dim)
                nn.init.zeros_(block.before_proj.weight)
                nn.init.zeros_(block.before_proj.bias)
            block.after_proj = nn.Linear(dim, dim)
            nn.init.zeros_(block.after_proj.weight)
            nn.init.zeros_(block.after_proj.bias)
            self.vace_blocks.append(block)
        self.vace_patch_embedding = nn.Conv3d(self.vace_in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["base"], name)

    # weights_version lives on the base so both objects invalidate the same TextStates.
    @property
    def weights_version(self) -> int:
        return self.base.weights_version

    def bump_weights_version(self) -> None:
        self.base.bump_weights_version()

    def prepare_text(self, t5_embeds: torch.Tensor) -> TextState:
        return self.base.prepare_text(t5_embeds)

    def new_kv_cache(self, policy, **kwargs):
        return self.base.new_kv_cache(policy, **kwargs)

    def compute_hints(self, x: torch.Tensor, t, text: TextState, vace_context: torch.Tensor,
                      vace_prefix: torch.Tensor | None = None,
                      add_condition: torch.Tensor | None = None) -> list[torch.Tensor]:
        """One hint [B, L, dim] per VACE block for this chunk's L tokens (reusable across
        denoising steps). vace_prefix [B, 16, P, h, w]: clean reference latents run in front of
        the chunk (vace_context then has P + F frames); their hints are computed but not returned.
        add_condition [B, L, dim]: the chunk's token condition; the hint stream starts from the
        same embedded tokens as the main blocks (x_embedded includes it)."""
        base = self.base
        tokens, grid = base.embed_video(x)
        tokens = base.add_token_condition(tokens, add_condition)
        e0 = base.embed_time(t, x.shape[0], grid[0])[1]
        text.sync(base.weights_version)
        skip = 0
        if vace_prefix is not None:
            tokens, grid, e0, skip = self._with_prefix(vace_prefix, tokens, grid, e0)
        c = self._context_tokens(vace_context, x.shape[0], grid, exact=vace_prefix is not None)
        attn = base.local_attention(grid, 0)
        hints = []
        for n, block in enumerate(self.vace_blocks):
            if n == 0:
                c = block.before_proj(c) + tokens
            c = block(c, e0, text, attn, n)
            h = c[:, skip:] if skip else c
            hints.append(block.after_proj(h.to(block.after_proj.weight.dtype)))
        return hints

    def _with_prefix(self, prefix: torch.Tensor, tokens: torch.Tensor, grid, e0: torch.Tensor):
        """Prepend the reference frames: tokens, grid, per-frame e0 over P + F frames, and the
        number of prefix tokens to drop from the hints."""
        base = self.base
        batch = tokens.shape[0]
        if prefix.dim() != 5 or prefix.shape[0] != batch or prefix.shape[1] != base.cfg.in_dim or prefix.shape[2] == 0:
            raise ValueError(f"vace_prefix must be [{batch}, {base.cfg.in_dim}, P>0, H/8, W/8], got {tuple(prefix.shape)}")
        p_tokens, p_grid = base.embed_video(prefix)
        if tuple(p_grid[1:]) != tuple(grid[1:]):
            raise ValueError(f"vace_prefix token grid {tuple(p_grid[1:])} != latent token grid {tuple(grid[1:])}")
        # a device-side fill, not a host scalar: nothing is copied from the host (CUDA graphs)
        p_t = torch.full((batch, p_grid[0]), PREFIX_TIMESTEP, dtype=torch.float32, device=p_tokens.device)
        p_e0 = base.embed_time(p_t, batch, p_grid[0])[1]
        full = (p_grid[0] + grid[0], grid[1], grid[2])
        return torch.cat([p_tokens, tokens], 1), full, torch.cat([p_e0, e0], 1), p_tokens.shape[1]

    def _context_tokens(self, vace_context: torch.Tensor, batch: int, grid, exact: bool = False) -> torch.Tensor:
        emb = self.vace_patch_embedding
        if vace_context.dim() != 5 or vace_context.shape[0] != batch or vace_context.shape[1] != self.vace_in_dim:
            raise ValueError(f"vace_context must be [{batch}, {self.vace_in_dim}, F, H/8, W/8], got {tuple(vace_context.shape)}")
        c = emb(vace_context.to(emb.weight.dtype))
        if tuple(c.shape[3:]) != tuple(grid[1:]):
            raise ValueError(f"vace_context token grid {tuple(c.shape[3:])} != latent token grid {tuple(grid[1:])}")
        if exact and c.shape[2] != grid[0]:
            raise ValueError(f"vace_context has {c.shape[2]} frames; with a reference prefix it needs prefix + chunk = {grid[0]}")
        c = c.flatten(2).transpose(1, 2).contiguous()
        length = grid[0] * grid[1] * grid[2]
        if c.shape[1] > length:
            c = c[:, :length]
        elif c.shape[1] < length:
            c = F.pad(c, (0, 0, 0, length - c.shape[1]))
        return c

    def forward(self, x, t, text: TextState, kv=None, start_frame: int = 0, *, vace_context=None,
                vace_prefix: torch.Tensor | None = None,
                context_scale: float = 1.0, hints: Sequence[torch.Tensor] | None = None,
                block_residuals: Mapping[int, torch.Tensor] | None = None, attn_mask=None,
                add_condition: torch.Tensor | None = None) -> torch.Tensor:
        """Base forward plus VACE hints. vace_context=None and hints=None ⇒ exactly the base
        forward (the clean and re-cache passes). context_scale == 0 skips the hint stream.
        vace_prefix: reference latents for the hint stream (see compute_hints); add_condition:
        the per-token condition, passed to the base (and to the hint stream when it runs here)."""
        residuals = dict(block_residuals or {})
        if context_scale != 0 and (hints is not None or vace_context is not None):
            if hints is None:
                hints = self.compute_hints(x, t, text, vace_context, vace_prefix, add_condition)
            if len(hints) != len(self.vace_layers):
                raise ValueError(f"got {len(hints)} hints for {len(self.vace_layers)} VACE blocks")
            for layer, hint in zip(self.vace_layers, hints):
                residuals[layer] = hint if layer not in residuals else residuals[layer] + hint
        return self.base.forward(x, t, text, kv, start_frame, context_scale=context_scale,
                                 block_residuals=residuals or None, attn_mask=attn_mask,
                                 add_condition=add_condition)
