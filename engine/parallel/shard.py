"""One rank's share of the DiT: its contiguous main blocks, the VACE hint blocks that feed them,
a KV cache of ITS layers only, and the hints it computed for the current chunk.

The math is exactly CausalWanModel.forward / VaceWanModel.compute_hints cut at rank boundaries:
the same block calls in the same order, the hint residual added right after its layer as
`torch.add(tokens, hint, alpha=context_scale)`. Blocks address the cache by their LOCAL layer
index (layer - first layer of the rank), so each rank's storage holds only its own layers.
"""
from __future__ import annotations

import torch
from torch import nn

from vacelive.engine.dit.kv_cache import ChunkPlan
from vacelive.engine.parallel.partition import Placement


class Shard:
    def __init__(self, model: nn.Module, placement: Placement, rank: int, *, drop_others: bool = True):
        self.base = getattr(model, "base", model)
        self.model = model
        self.placement, self.rank = placement, rank
        self.lo, self.hi = placement.ranges[rank]
        self.vace_layers = placement.vace_layers
        blocks = self.base.blocks
        self.blocks = [blocks[i] for i in range(self.lo, self.hi)]
        vace_blocks = getattr(model, "vace_blocks", None)
        self.vace = {n: vace_blocks[n] for n in placement.vace_blocks(rank)} if vace_blocks is not None else {}
        if drop_others:  # another rank runs them: free their weights here
            for i in range(len(blocks)):
                if not self.lo <= i < self.hi:
                    blocks[i] = nn.Identity()
            if vace_blocks is not None:
                for n in range(len(vace_blocks)):
                    if n not in self.vace:
                        vace_blocks[n] = nn.Identity()
        self.kv = None
        self.hints: dict[int, torch.Tensor] = {}  # layer -> this chunk's hint
        self.hint_serial: int | None = None
        # does a rank after this one hold a VACE block (the hint stream must travel on)?
        self.vace_downstream = any(placement.vace_blocks(r) for r in range(rank + 1, placement.world))

    # ---- KV cache of this rank's layers -----------------------------------------------------------
    def new_cache(self, policy, *, batch: int, latent_hw, dtype, device, rope_mode: str, origin: int = 0, cls=None):
        from vacelive.engine.dit.kv_cache import KVCache

        cfg = self.base.cfg
        _, ph, pw = cfg.patch_size
        cls = cls or getattr(policy, "cache_class", KVCache)
        self.kv = cls(policy, num_layers=self.hi - self.lo, batch=batch, grid_hw=(latent_hw[0] // ph, latent_hw[1] // pw),
                      num_heads=cfg.num_heads, head_dim=cfg.head_dim, rope=self.base.rope, dtype=dtype,
                      device=device, rope_mode=rope_mode, origin=origin)
        return self.kv

    def attention_for(self, plan: ChunkPlan | None, grid, start_frame: int):
        """The attention context rank 0's cache planned (KVCache.begin, minus the planning)."""
        if plan is None:
            return self.base.local_attention(grid, start_frame)
        kv = self.kv
        if kv is None:
            raise RuntimeError(f"rank {self.rank} has no KV cache yet")
        _, h, w = grid
        q = kv.rope.token_freqs(plan.q_positions, h, w)
        k = None if plan.key_positions is None else kv.rope.token_freqs(plan.key_positions, h, w)
        return kv.attention_class(kv, plan, q, k)

    def set_rope_mode(self, mode: str, slot_frame) -> None:
        """Re-rotate this rank's stored keys exactly as rank 0's cache did (same cached slots)."""
        from vacelive.engine.dit.kv_cache import CacheState

        kv = self.kv
        kv.state = CacheState(tuple(slot_frame), kv.state.head, kv.state.protect_sink)
        kv.set_rope_mode(mode)

    # ---- compute ---------------------------------------------------------------------------------
    def run_blocks(self, tokens, e0, text, attn, *, hints: bool, context_scale: float) -> torch.Tensor:
        for j, block in enumerate(self.blocks):
            tokens = block(tokens, e0, text, attn, j)
            if hints:
                r = self.hints.get(self.lo + j)
                if r is not None:
                    tokens = torch.add(tokens, r, alpha=context_scale)
        return tokens

    def run_hints(self, c, tokens, e0, text, attn, skip: int, serial: int) -> torch.Tensor:
        """This rank's VACE blocks on the hint stream c; keeps their hints for the chunk's passes."""
        self.hints = {}
        for n in sorted(self.vace):
            block = self.vace[n]
            if n == 0:
                c = block.before_proj(c) + tokens
            c = block(c, e0, text, attn, n)
            h = c[:, skip:] if skip else c
            self.hints[self.vace_layers[n]] = block.after_proj(h.to(block.after_proj.weight.dtype))
        self.hint_serial = serial
        return c

    def check_hints(self, serial: int | None) -> None:
        if serial is not None and self.vace and self.hint_serial != serial:
            raise RuntimeError(f"rank {self.rank}: the chunk's VACE hints (set {serial}) were not computed here "
                               f"(have set {self.hint_serial})")
