"""RewardForcing's KV cache: un-roped keys, window-relative RoPE, EMA-merged sink.

Rule (YepicAI/Reward-Forcing wan/modules/causal_model.py, CausalWanSelfAttention; Scope's port
reward_forcing/modules/causal_model.py is identical), with local_attn_size 9, sink_size 3:
  * the cache holds 9 frames: 3 sink frames + the 6 most recent frames (incl. the chunk itself),
    keys stored WITHOUT RoPE; attention rotates them with window-relative frame positions (sink
    0, 1, 2, the rest 3.. in time order) and the chunk's queries get the positions of their own
    frames (the last ones of the window);
  * when a new chunk evicts frames from the rolling part (first forward of the chunk only; the
    later denoising passes and the clean pass rewrite the same frames), the evicted frames'
    K and V are merged into the sink before the chunk's own K/V are written:
        n evicted == sink:  sink[i] <- alpha * sink[i] + (1 - alpha) * evicted[i]   (alpha 0.999)
        otherwise:          sink[i] <- evicted[i] for i < min(n, sink)              (reference rule)
    evicted[i] = the i-th oldest evicted frame. With 3-frame chunks every eviction takes 3 frames
    (the EMA branch); the copy branch only happens after a chunk that overlaps the previous one
    (Scope's V2V first chunk) or with chunks of another size.
One deliberate difference: the reference concatenates all 3 sink frames even before they are
written, so a first chunk shorter than the sink would attend zero keys; only written frames are
attended here (RewardForcing's chunks are 3 frames, so its streams never hit that case).
The slot bookkeeping is SinkWindow's (frame-indexed slots, no data movement); only the merge is
new. It runs in the cache dtype exactly as the reference writes it: alpha * sink + (1 - alpha) * e.

Rollback without copies: the merge only reads K/V cached before the chunk, so its result does not
depend on the chunk's own inputs. When a chunk fails after merging in some blocks (whose evicted
slots it has then overwritten), the generator restores the cache state and the retried chunk, which
starts from that same state, skips the (block, sink frame) merges already applied and does the rest:
bit-identical to an uninterrupted stream, with no backup memory.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from vacelive.engine.dit.kv_cache import CachedAttention, CacheState, ChunkPlan, KVCache, SinkWindow

DEFAULT_ALPHA = 0.999  # compression_alpha of CausalWanSelfAttention


@dataclass(frozen=True)
class MergePlan(ChunkPlan):
    """A ChunkPlan plus the sink merges to apply before the chunk's writes."""

    merges: tuple[tuple[int, int], ...] = ()  # (evicted slot, sink slot), oldest evicted first
    alpha: float = DEFAULT_ALPHA  # sink <- alpha * sink + (1 - alpha) * evicted; 0.0 = plain copy


def evicted_frames(policy: SinkWindow, state: CacheState, plan: ChunkPlan, start: int) -> list[tuple[int, int]]:
    """(frame, slot) of every cached ring frame that a NEW frame of this chunk overwrites, oldest first."""
    out = []
    for i0, i1, s0 in plan.writes:
        for i in range(i0, i1):
            frame, slot = start + i, s0 + i - i0
            old = state.slot_frame[slot]
            if slot >= policy.sink and frame >= state.head and old is not None and old != frame:
                out.append((old, slot))
    return sorted(out)


class EmaSinkWindow(SinkWindow):
    """SinkWindow whose evictions merge into the sink (module doc). Use rope_mode "relative"."""

    def __init__(self, window: int = 9, sink: int = 3, alpha: float = DEFAULT_ALPHA):
        if sink < 1:
            raise ValueError("an EMA sink needs at least one sink frame")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in 0..1, got {alpha}")
        super().__init__(window, sink)
        self.alpha = float(alpha)

    def __repr__(self):
        return f"EmaSinkWindow(window={self.window}, sink={self.sink}, alpha={self.alpha})"

    @property
    def cache_class(self):
        return EmaSinkKVCache

    def plan(self, state: CacheState, start: int, num_frames: int, rope_mode: str) -> MergePlan:
        base = super().plan(state, start, num_frames, rope_mode)
        evicted = evicted_frames(self, state, base, start)
        n = min(len(evicted), self.sink)
        merges = tuple((evicted[i][1], i) for i in range(n))
        alpha = self.alpha if len(evicted) == self.sink else 0.0
        return MergePlan(**{f.name: getattr(base, f.name) for f in fields(ChunkPlan)}, merges=merges, alpha=alpha)


class EmaSinkAttention(CachedAttention):
    def keys_values(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(self.plan, "merges", ()):
            self.cache.merge_sink(layer, self.plan, self.before)
        return super().keys_values(layer, k, v)


class EmaSinkKVCache(KVCache):
    """KVCache that applies MergePlan merges, each (block, sink slot) once per chunk position
    (module doc: a retried chunk skips the merges its failed attempt already applied)."""

    attention_class = EmaSinkAttention

    def reset(self, origin: int = 0) -> None:
        super().reset(origin)
        # (state before the merging chunk, {(layer, sink slot)} merged from it)
        self._merged: tuple[CacheState | None, set[tuple[int, int]]] = (None, set())
        self.merges = 0  # sink frames merged since the reset (a counter for tests and describe)

    def begin(self, start_frame: int, grid, batch: int) -> EmaSinkAttention:
        before = self.state
        attn = super().begin(start_frame, grid, batch)
        attn.before = before
        return attn

    def merge_sink(self, layer: int, plan: MergePlan, before: CacheState) -> None:
        if self._merged[0] is not before:
            self._merged = (before, set())
        done = self._merged[1]
        ft = self.frame_tokens
        store = self.storage[layer]
        a = plan.alpha
        for src, dst in plan.merges:
            if (layer, dst) in done:
                continue  # applied by a failed attempt of this same chunk: the evicted slot is gone
            sink = store[:, :, dst * ft:(dst + 1) * ft]
            evicted = store[:, :, src * ft:(src + 1) * ft]
            if a == 0.0:
                sink.copy_(evicted)
            else:
                sink.copy_(a * sink + (1 - a) * evicted)
            done.add((layer, dst))
            if layer == 0:
                self.merges += 1
