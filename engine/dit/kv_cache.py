"""Self-attention KV cache: static storage + a small slot POLICY (cache layout of
Self-Forcing `wan/modules/causal_model.py`; LongLive 1.0 frame sink + short window).

Storage is one preallocated tensor per cache, [layers, 2 (K|V), B, slots * frame_tokens, H, D],
sized from the ACTUAL resolution (frame_tokens = (H/16) * (W/16)). It never grows and is never
copied: writes go straight into slots, attention reads slice views of it.

Slots hold whole latent frames and are FRAME-INDEXED (frame indices relative to the cache's
`origin`, i.e. the stream start): SinkWindow puts frame f < sink in slot f (never evicted) and
any later frame in slot `sink + (f - sink) % (window - sink)`. Hence the 4 denoising passes and
the clean pass of one chunk overwrite the same slots, eviction is implicit (the ring slot of
frame f - (window - sink) is reused), and a re-cache of past frames (prompt switch) rewrites
exactly their slots. Re-caching the last 12 frames after a late prompt switch therefore keeps the
old prompt's sink K/V automatically (frames >= sink never map to sink slots) — LongLive's
global_sink behaviour. `protect_sink = True` also keeps sink slots that already hold K/V when a
re-cache covers frames < sink (an early switch; LongLive rewrites them there, which is the
default here). Attention has no mask inside the window (RoPE carries
position; order of keys is irrelevant), so it reads the valid slots in slot order: a prefix
until the ring is full, then everything. At steady state a LongLive chunk sees 3 sink + 9 recent
frames including itself = 12 frames, exactly like the reference's rolling buffer.

RoPE modes
  "absolute"  (reference) keys are stored rotated with their frame index since the stream start;
              queries use theirs. Zero overhead. Limited to the table (1024 latent frames).
  "relative"  keys are stored UN-rotated and rotated at attention time with window-relative
              positions: sink frames 0..s-1, ring frames s, s+1, ... in time order; the chunk's
              queries get the positions of their own frames. Positions stay < window forever.
              Cost: one rotation of the attended K per block per forward (read K, write a
              rotated temp; ~3 elementwise passes over the window's keys). A cheaper variant
              (ring keys stored rotated with a periodically re-based frame index, only the sink
              re-rotated per chunk) is possible without changing the semantics.
  set_rope_mode() switches at any time keeping all cached state: absolute -> relative
  un-rotates the stored keys once with their absolute positions (one pass over the valid K,
  layer by layer; exact up to one rounding of the stored dtype); relative -> absolute rotates
  them (only while every cached frame is inside the table).

Interfaces (so new policies need no model change)
  1. Model-facing, implemented by KVCache (and by any future cache class):
       attn = kv.begin(start_frame, grid, batch)   once per forward, before the blocks
       attn.q_freqs, attn.rotate_keys, attn.mask              (attention context, attention.py)
       K, V = attn.keys_values(layer, k, v)        per block: store the chunk's k/v, return what
                                                   to attend ([B, M, H, D], K rotated)
       kv.commit(attn)                             after the last block: bookkeeping
  2. Policy-facing, used by KVCache (pure Python, no tensors, unit-testable):
       policy.num_slots: int
       policy.plan(state: CacheState, start: int, num_frames: int, rope_mode: str) -> ChunkPlan
     ChunkPlan says which chunk frames go to which slots (`writes`), which slots to attend and in
     which order (`attend`), the RoPE frame positions of the queries (`q_positions`) and, in
     relative mode, of the attended keys (`key_positions`), and the state after the chunk.
  Pipeline policies (engine.policies): StreamDiffusionV2 (1-frame chunks, 3 sink + rolling,
  attend all) is SinkWindow(window=6, sink=3) fed 1-frame chunks. RewardForcing (un-roped keys +
  EMA merge of evicted frames into the sink) = rope_mode "relative" + EmaSinkWindow, whose plans
  carry (evicted slot -> sink slot) merges that its KVCache subclass (a policy's `cache_class`,
  `attention_class`) applies in keys_values before the writes. Krea (recompute the cache from context frames each chunk, clamped RoPE
  start) = the generator resets the cache and runs a context pass with start_frame clamped; its
  attention bias on cached frames would be a per-slot additive bias returned as `attn.mask`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from vacelive.engine.dit.rope import RopeTable, position_runs

ROPE_MODES = ("absolute", "relative")


@dataclass(frozen=True)
class CacheState:
    slot_frame: tuple[int | None, ...]  # origin-relative frame held by each slot (None = empty)
    head: int  # one past the newest frame ever written
    protect_sink: bool = False


@dataclass(frozen=True)
class ChunkPlan:
    writes: tuple[tuple[int, int, int], ...]  # (first chunk frame, end chunk frame, first slot)
    attend: tuple[tuple[int, int], ...]  # slot runs [a, b) read for attention, in this order
    q_positions: tuple[int, ...]  # RoPE frame position of every chunk frame
    key_positions: tuple[int, ...] | None  # relative mode: RoPE position of every attended slot
    state: CacheState  # state after the chunk


class CachePolicy(Protocol):
    num_slots: int

    def plan(self, state: CacheState, start: int, num_frames: int, rope_mode: str) -> ChunkPlan: ...


def _runs2(pairs: Sequence[tuple[int, int]]) -> tuple[tuple[int, int, int], ...]:
    """(chunk frame, slot) pairs -> runs where both advance by one: (frame0, frame_end, slot0)."""
    runs: list[list[int]] = []
    for i, s in pairs:
        if runs and runs[-1][1] == i and runs[-1][2] + (i - runs[-1][0]) == s:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1, s])
    return tuple(tuple(r) for r in runs)


class SinkWindow:
    """`sink` frames kept forever + a ring of `window - sink` most recent frames (LongLive:
    SinkWindow(12, 3); Self-Forcing "global 21 frames": SinkWindow(21, 0))."""

    def __init__(self, window: int = 12, sink: int = 3):
        if not (0 <= sink < window):
            raise ValueError(f"need 0 <= sink < window, got sink={sink}, window={window}")
        self.window, self.sink = window, sink
        self.num_slots = window

    def __repr__(self):
        return f"SinkWindow(window={self.window}, sink={self.sink})"

    def slot_of(self, frame: int) -> int:
        return frame if frame < self.sink else self.sink + (frame - self.sink) % (self.window - self.sink)

    def plan(self, state: CacheState, start: int, num_frames: int, rope_mode: str) -> ChunkPlan:
        sink, ring = self.sink, self.window - self.sink
        end = start + num_frames
        slots = list(state.slot_frame)
        kept: list[tuple[int, int]] = []
        for i, f in enumerate(range(start, end)):
            if f < sink:
                if state.protect_sink and slots[f] is not None:
                    continue
            elif f < end - ring:
                continue  # its ring slot is rewritten by a later frame of this same chunk
            kept.append((i, self.slot_of(f)))
        for i, s in kept:
            slots[s] = start + i
        new_state = CacheState(tuple(slots), max(state.head, end), state.protect_sink)
        attend = tuple(position_runs([s for s, f in enumerate(slots) if f is not None]))

        if rope_mode == "absolute":
            q_pos = tuple(range(start, end))
            key_pos = None
        else:
            pos_of_slot = self._relative_positions(slots)
            pos_of_frame = {slots[s]: p for s, p in pos_of_slot.items()}
            first_kept = min((f for f in range(max(start, sink), end) if f in pos_of_frame), default=None)
            q = []
            for f in range(start, end):
                if f in pos_of_frame:
                    q.append(pos_of_frame[f])
                elif f < sink:
                    q.append(f)
                else:  # dropped ring frame (chunk longer than the ring): extrapolate backwards
                    q.append(max(0, pos_of_frame[first_kept] - (first_kept - f)))
            q_pos = tuple(q)
            key_pos = tuple(pos_of_slot[s] for a, b in attend for s in range(a, b))
        return ChunkPlan(tuple(_runs2(kept)), attend, q_pos, key_pos, new_state)

    def _relative_positions(self, slots) -> dict[int, int]:
        """slot -> window-relative frame position: sinks 0..s-1, ring frames s.. in time order."""
        pos = {s: s for s in range(self.sink) if slots[s] is not None}
        ring = sorted((slots[s], s) for s in range(self.sink, self.window) if slots[s] is not None)
        for rank, (_, s) in enumerate(ring):
            pos[s] = self.sink + rank
        return pos


class CachedAttention:
    """Attention context of one forward through a KVCache (see attention.py for the protocol)."""

    mask = None

    def __init__(self, cache: "KVCache", plan: ChunkPlan, q_freqs, k_freqs):
        self.cache, self.plan = cache, plan
        self.q_freqs, self.k_freqs = q_freqs, k_freqs
        self.rotate_keys = k_freqs is None

    def keys_values(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ft = self.cache.frame_tokens
        ks, vs = self.cache.storage[layer, 0], self.cache.storage[layer, 1]
        for i0, i1, s0 in self.plan.writes:
            dst = slice(s0 * ft, (s0 + i1 - i0) * ft)
            src = slice(i0 * ft, i1 * ft)
            ks[:, dst].copy_(k[:, src])
            vs[:, dst].copy_(v[:, src])
        K, V = self.cache.gather(ks, self.plan.attend), self.cache.gather(vs, self.plan.attend)
        if self.k_freqs is not None:
            K = RopeTable.rotate(K, self.k_freqs)
        return K, V


class KVCache:
    """Preallocated per-block K/V for one stream, driven by a slot policy (module docstring)."""

    attention_class = CachedAttention  # a subclass may return its own attention context

    def __init__(self, policy: CachePolicy, *, num_layers: int, batch: int, grid_hw: tuple[int, int], num_heads: int,
                 head_dim: int, rope: RopeTable, dtype=torch.bfloat16, device=None, rope_mode: str = "absolute", origin: int = 0):
        if rope_mode not in ROPE_MODES:
            raise ValueError(f"rope_mode must be one of {ROPE_MODES}, got {rope_mode!r}")
        self.policy = policy
        self.grid_hw = tuple(grid_hw)
        self.frame_tokens = grid_hw[0] * grid_hw[1]
        self.rope = rope
        self.rope_mode = rope_mode
        self.protect_sink = False
        self.storage = torch.zeros(num_layers, 2, batch, policy.num_slots * self.frame_tokens, num_heads, head_dim, dtype=dtype, device=device)
        self.reset(origin)

    def reset(self, origin: int = 0) -> None:
        """Forget every cached frame (storage is kept; empty slots are never attended)."""
        self.origin = origin
        self.state = CacheState((None,) * self.policy.num_slots, 0)

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    @property
    def head(self) -> int:
        """Absolute frame index one past the newest cached frame."""
        return self.origin + self.state.head

    def window_frames(self) -> list[int]:
        """Absolute frame indices currently cached, in time order."""
        return sorted(self.origin + f for f in self.state.slot_frame if f is not None)

    def gather(self, store: torch.Tensor, runs) -> torch.Tensor:
        ft = self.frame_tokens
        if len(runs) == 1:
            a, b = runs[0]
            return store[:, a * ft:b * ft]
        return torch.cat([store[:, a * ft:b * ft] for a, b in runs], dim=1)

    def begin(self, start_frame: int, grid, batch: int) -> CachedAttention:
        f, h, w = grid
        if (h, w) != self.grid_hw:
            raise ValueError(f"chunk token grid {h}x{w} != cache grid {self.grid_hw[0]}x{self.grid_hw[1]}: new resolution needs a new KV cache")
        if batch != self.storage.shape[2]:
            raise ValueError(f"batch {batch} != KV cache batch {self.storage.shape[2]}")
        start = start_frame - self.origin
        if start < 0:
            raise ValueError(f"start_frame {start_frame} is before the cache origin {self.origin}")
        state = CacheState(self.state.slot_frame, self.state.head, self.protect_sink)
        plan = self.policy.plan(state, start, f, self.rope_mode)
        q_freqs = self.rope.token_freqs(plan.q_positions, h, w)
        k_freqs = None if plan.key_positions is None else self.rope.token_freqs(plan.key_positions, h, w)
        return self.attention_class(self, plan, q_freqs, k_freqs)

    def commit(self, attn: CachedAttention) -> None:
        self.state = attn.plan.state

    def restore(self, state: CacheState, origin: int) -> None:
        """Go back to a state saved before a chunk that failed (the generator's rollback)."""
        self.state, self.origin = state, origin

    def set_rope_mode(self, mode: str) -> None:
        """Switch RoPE mode keeping every cached frame (see module docstring for the cost)."""
        if mode not in ROPE_MODES:
            raise ValueError(f"rope_mode must be one of {ROPE_MODES}, got {mode!r}")
        if mode == self.rope_mode:
            return
        h, w = self.grid_hw
        ft = self.frame_tokens
        slots = self.state.slot_frame
        runs = position_runs([s for s, f in enumerate(slots) if f is not None])
        # Build every table first so an out-of-table error leaves the cache untouched.
        tables = [(a, b, self.rope.token_freqs([slots[s] for s in range(a, b)], h, w)) for a, b in runs]
        inverse = mode == "relative"
        for layer in range(self.storage.shape[0]):
            keys = self.storage[layer, 0]
            for a, b, freqs in tables:
                view = keys[:, a * ft:b * ft]
                view.copy_(RopeTable.rotate(view, freqs, inverse=inverse))
        self.rope_mode = mode
