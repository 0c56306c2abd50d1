"""CUDA graphs of whole DiT forwards through the KV cache (`--cuda-graphs`).

Why: one forward of the 1.3B model is ~800 kernel launches and ~90 compiled-region calls. An
H200 host spends ~250 ms of Python and launch work per 5-forward chunk whatever the chunk's size
(docs/PERFORMANCE.md, the profile in section 12.4), so with short chunks (576x320, 1-latent
chunks) the GPU waits for the host. A graph replays a captured forward with one launch.

A graph bakes in every tensor address and every Python value its forward read. So each graph is
specialised on its `GraphKey` (the KV plan's slot writes and reads, the frame count, the RoPE
mode, which optional inputs are present; new weights drop every graph) and reads everything
else from static buffers, filled before each replay:
  latents x, the per-frame timesteps, the chunk's RoPE rotations (and the attended keys' in
  window-relative mode), each block's text K/V, the VACE hints (multiplied by context_scale
  there, so a live scale never needs a new graph) and the pose condition.
The graph writes the chunk's K/V straight into the KV cache slots of its plan, as the normal
forward does; the cache's Python bookkeeping (begin/commit) runs outside the graph, unchanged.

A prompt cut's re-cache (engine.recache) is a context pass like the clean pass and goes through
the same graphs: "newest" re-caches exactly the previous chunk's clean-pass slots, so it replays
that graph. Measured on an H200 at 832x480: the re-cache run without a graph took 136-228 ms in
the first cut after a reset (57 ms later), graphed 56-79 ms every time.

The VACE hint stream (`hints`, the 15 hint blocks over the chunk alone) is graphed the same way,
keyed on its input shapes (the chunk, the reference prefix, the pose condition): its inputs are
the latents, the timesteps, the VACE context and the prefix; its outputs (one tensor per hint
block) are copied into the forward graphs' hint buffers.

The first forward of a key runs normally (its result is that call's result; it also makes
every lazy choice: kernels, SDPA selections, compiled graphs), then the same forward is captured
(torch.cuda.graph records on its own stream; nothing runs). Later forwards of the key replay.
All graphs share one memory pool, so one graph's scratch memory may overlap another's output:
replays are sequential on one stream, and each output is used up before any other graph replays
(a forward's flow by the step's update, the hint stream's by the copy into the forward graphs'
hint buffers).

Replays are paced (InFlight): before a replay the host waits, in an event synchronize that
releases the GIL, until the previous replay has finished. Unpaced, the host queued a whole chunk
of forwards ahead, and other threads of the process ran late while it did: on an H200 at
832x480 the output pacer's ticks came up to 50 ms late (follow-mode jitter p99 49 ms, 26
stalls in 12 s; two in flight: 9.2 ms). With one in flight: 3.6 ms and no stall, and the same
throughput (576x320: 122 fps), because a forward is far longer than the host's launch of the next.

Only the plain KVCache is graphed; pipelines whose cache applies per-chunk Python state (Reward
Forcing's sink merges, Krea's bias, MemFlow's bank) and a model split over GPUs take the normal
path. A capture that fails (an operation that cannot be captured) is logged once and that key
takes the normal path from then on: the show goes on.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import torch

from vacelive.engine.dit.kv_cache import CachedAttention, KVCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphKey:
    writes: tuple  # ChunkPlan.writes: the slots the graph writes
    attend: tuple  # ChunkPlan.attend: the slot runs it reads
    frames: int
    rotate_keys: bool  # absolute RoPE (keys rotated on write) vs window-relative (rotated on read)
    hints: bool
    condition: bool
    dtype: torch.dtype


class StaticText:
    """Each block's cross-attention K/V in fixed buffers: what a graph reads instead of a
    TextState (same `kv(cross_attn)` interface). `load` copies a prompt's K/V in."""

    def __init__(self) -> None:
        self.buffers: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self.source: Any = None  # the TextState last loaded (kept alive: its id stays unique)
        self.version = -1
        self.context = None

    def load(self, text, cross_attns, version: int) -> None:
        if text is self.source and version == self.version:
            return
        for ca in cross_attns:
            k, v = text.kv(ca)
            buf = self.buffers.get(ca)
            if buf is None or buf[0].shape != k.shape or buf[0].dtype != k.dtype:
                self.buffers[ca] = (k.clone(), v.clone())
            else:
                buf[0].copy_(k)
                buf[1].copy_(v)
        self.source, self.version, self.context = text, version, text.context

    def kv(self, cross_attn):
        return self.buffers[cross_attn]

    def sync(self, version: int) -> None:
        pass


class _Inputs:
    """The static input tensors of every graph of one shape (frames, RoPE mode, optional inputs):
    graphs replay one at a time and each is filled right before it, so they can share them."""

    def __init__(self, attn: CachedAttention, x, t, hints, condition):
        self.x = x.clone()
        self.t = t.contiguous().clone()
        self.q = attn.q_freqs.clone()
        self.k = None if attn.k_freqs is None else attn.k_freqs.clone()
        self.hints = None if hints is None else [h.clone() for h in hints]
        self.condition = None if condition is None else condition.clone()
        self.hint_source: Any = None  # the hints last copied in (kept alive: its id stays unique)
        self.hint_scale: float | None = None

    def fill(self, attn: CachedAttention, x, t, hints, scale: float, condition) -> None:
        self.x.copy_(x)
        self.t.copy_(t)
        self.q.copy_(attn.q_freqs)
        if self.k is not None:
            self.k.copy_(attn.k_freqs)
        if hints is not None and (hints is not self.hint_source or scale != self.hint_scale):
            for dst, h in zip(self.hints, hints):  # with hint reuse: once per chunk
                torch.mul(h, scale, out=dst)
            self.hint_source, self.hint_scale = hints, scale
        if condition is not None:
            self.condition.copy_(condition)


class _Graph:
    """One captured forward: its inputs, its attention context over them, its replay and output."""

    def __init__(self, inputs: _Inputs, attn: CachedAttention):
        self.inputs = inputs
        self.attn = CachedAttention(attn.cache, attn.plan, inputs.q, inputs.k)
        self.replay: Callable[[], Any] | None = None
        self.out: torch.Tensor | None = None


class _HintGraph:
    """The VACE hint stream of one input shape: static inputs, replay, outputs."""

    def __init__(self, x, t, context, prefix, condition):
        self.x, self.t, self.context = x.clone(), t.contiguous().clone(), context.clone()
        self.prefix = None if prefix is None else prefix.clone()
        self.condition = None if condition is None else condition.clone()
        self.replay: Callable[[], Any] | None = None
        self.out: list[torch.Tensor] | None = None

    def fill(self, x, t, context, prefix, condition) -> None:
        self.x.copy_(x)
        self.t.copy_(t)
        self.context.copy_(context)
        if prefix is not None:
            self.prefix.copy_(prefix)
        if condition is not None:
            self.condition.copy_(condition)

    def run(self, model, text) -> list[torch.Tensor]:
        return model.compute_hints(self.x, self.t, text, self.context, self.prefix, self.condition)


class InFlight:
    """At most `limit` graph replays queued on the GPU: before a replay, wait for the oldest
    one past the limit (an event synchronize, which releases the GIL); 0 = no limit.
    `event` makes the completion markers (torch.cuda.Event; tests inject a recorder)."""

    def __init__(self, limit: int, event: Callable[[], Any] | None = None):
        self.limit = limit
        self._event = event or torch.cuda.Event
        self._queued: deque = deque()

    def before(self) -> None:
        while self.limit > 0 and len(self._queued) >= self.limit:
            self._queued.popleft().synchronize()

    def after(self) -> None:
        if self.limit > 0:
            ev = self._event()
            ev.record()
            self._queued.append(ev)


class ForwardGraphs:
    """Graphed forwards of one model and one KV cache (module docstring).

    `capture` is injectable so CPU tests can check everything but the CUDA graph itself:
    capture(fn) -> (replay callable, static output); by default fn is recorded in a
    torch.cuda.CUDAGraph. `in_flight` paces the replays (InFlight; module docstring)."""

    replays_in_flight = 1  # the default InFlight limit (module docstring)

    def __init__(self, model, kv: KVCache, *, capture: Callable | None = None, in_flight: InFlight | None = None):
        self.model, self.kv = model, kv
        self.base = getattr(model, "base", model)
        self.vace_layers = tuple(getattr(model, "vace_layers", ()))
        # every block that reads text K/V: the main blocks and the VACE hint blocks
        self.cross_attns = [b.cross_attn for b in self.base.blocks] + \
            [b.cross_attn for b in getattr(model, "vace_blocks", ())]
        self.text = StaticText()
        self._capture = capture or self._cuda_capture
        self._pool = None
        self.graphs: dict[GraphKey, _Graph | None] = {}  # None: capture failed, normal path
        self.inputs: dict[tuple, _Inputs] = {}
        self.hint_graphs: dict[tuple, _HintGraph | None] = {}  # None: capture failed
        self._version: int | None = None
        self.captures = self.replays = self.fallbacks = 0
        # injected captures (CPU tests) replay no CUDA work: nothing to pace unless asked
        self.in_flight = in_flight or InFlight(self.replays_in_flight if capture is None else 0)

    @staticmethod
    def supported(model, kv) -> str | None:
        """None when forwards of this model and cache can be graphed, else why not."""
        if not torch.cuda.is_available():
            return "CUDA graphs need a CUDA device"
        if type(kv) is not KVCache or kv.attention_class is not CachedAttention:
            return "this pipeline's KV cache applies per-chunk Python state (not graphable)"
        if hasattr(model, "context_pass"):
            return "a DiT split over several GPUs is not graphed"
        if kv.storage.device.type != "cuda":
            return "the KV cache is not on a CUDA device"
        return None

    def clear(self) -> None:
        """Forget every graph (weights, compile or FP8 switches changed what a forward runs)."""
        self.graphs.clear()
        self.inputs.clear()
        self.hint_graphs.clear()
        self.text = StaticText()
        self._pool = None

    # ---- the forward ----------------------------------------------------------------------------
    def __call__(self, x, t, text, start: int, *, hints=None, context_scale: float = 1.0,
                 add_condition=None) -> torch.Tensor:
        """The flow of model(x, t, text, kv, start, hints=..., context_scale=..., add_condition=...)."""
        base, kv = self.base, self.kv
        use_hints = hints is not None and context_scale != 0 and bool(self.vace_layers)
        if use_hints and len(hints) != len(self.vace_layers):
            raise ValueError(f"got {len(hints)} hints for {len(self.vace_layers)} VACE blocks")
        grid = base.token_grid(x)
        batch = x.shape[0]
        self._check_version()
        text.sync(base.weights_version)
        t = base.timesteps(t, batch, grid[0])
        attn = kv.begin(start, grid, batch)
        key = GraphKey(attn.plan.writes, attn.plan.attend, grid[0], attn.rotate_keys, use_hints,
                       add_condition is not None, x.dtype)
        entry = self.graphs.get(key, False)
        if entry is None:  # capture failed once: the normal path
            self.fallbacks += 1
            return self.model(x, t, text, kv, start, hints=hints, context_scale=context_scale,
                              add_condition=add_condition)
        hints = hints if use_hints else None
        self.text.load(text, self.cross_attns, base.weights_version)
        keys = None if attn.k_freqs is None else tuple(attn.k_freqs.shape)  # window-relative RoPE
        shape = (grid[0], keys, use_hints, add_condition is not None, x.dtype)
        inputs = self.inputs.get(shape)
        if inputs is None:
            inputs = self.inputs[shape] = _Inputs(attn, x, t, hints, add_condition)
        inputs.fill(attn, x, t, hints, context_scale, add_condition)
        if entry is False:
            return self._first(key, _Graph(inputs, attn), attn)
        self._replay(entry)
        kv.commit(attn)
        return entry.out

    def _check_version(self) -> None:
        if self.base.weights_version != self._version:  # new weights: every graph is stale
            self.clear()
            self._version = self.base.weights_version

    def hints(self, x, t, text, vace_context, vace_prefix=None, add_condition=None) -> list[torch.Tensor]:
        """model.compute_hints(x, t, text, vace_context, vace_prefix, add_condition), graphed."""
        model, base = self.model, self.base
        self._check_version()
        t = base.timesteps(t, x.shape[0], base.token_grid(x)[0])
        key = (tuple(x.shape), tuple(vace_context.shape), None if vace_prefix is None else tuple(vace_prefix.shape),
               None if add_condition is None else tuple(add_condition.shape), x.dtype)
        entry = self.hint_graphs.get(key, False)
        if entry is None:
            self.fallbacks += 1
            return model.compute_hints(x, t, text, vace_context, vace_prefix, add_condition)
        text.sync(base.weights_version)
        self.text.load(text, self.cross_attns, base.weights_version)
        if entry is False:
            g = _HintGraph(x, t, vace_context, vace_prefix, add_condition)
            out = g.run(model, self.text)  # this call's hints (and every lazy choice)
            try:
                g.replay, g.out = self._capture(lambda: g.run(model, self.text))
                self.hint_graphs[key] = g
                self.captures += 1
            except Exception as exc:
                self.hint_graphs[key] = None
                log.warning("CUDA graphs: could not capture the VACE hint stream (%s: %s); it runs without a graph",
                            type(exc).__name__, str(exc).splitlines()[0][:200])
            return out
        entry.fill(x, t, vace_context, vace_prefix, add_condition)
        self._replay(entry)
        return list(entry.out)  # a new list: the forward graphs copy hints when the list changes

    def _replay(self, entry) -> None:
        self.in_flight.before()
        entry.replay()
        self.in_flight.after()
        self.replays += 1

    def _body(self, g: _Graph) -> torch.Tensor:
        i = g.inputs
        residuals = None if i.hints is None else dict(zip(self.vace_layers, i.hints))
        return self.base.forward_with(i.x, i.t, self.text, g.attn, residuals, 1.0, i.condition)

    def _first(self, key: GraphKey, g: _Graph, attn) -> torch.Tensor:
        out = self._body(g)  # the real forward of this call (writes the cache slots)
        self.kv.commit(attn)
        try:
            g.replay, g.out = self._capture(lambda: self._body(g))
            self.graphs[key] = g
            self.captures += 1
        except Exception as exc:  # an operation that cannot be captured: normal path for this key
            self.graphs[key] = None
            log.warning("CUDA graphs: could not capture a %d-frame forward (%s: %s); it runs without a graph",
                        key.frames, type(exc).__name__, str(exc).splitlines()[0][:200])
        return out

    # ---- CUDA -----------------------------------------------------------------------------------
    def _cuda_capture(self, fn: Callable[[], torch.Tensor]):
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: the pacer's output copies and the annotator thread keep using CUDA on
        # their own streams while this thread captures (the default "global" mode would fail them)
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            out = fn()
        return graph.replay, out

    def describe(self) -> dict[str, int]:
        return {"graphs": sum(g is not None for g in self.graphs.values()), "captures": self.captures,
                "replays": self.replays, "fallbacks": self.fallbacks,
                "failed": sum(g is None for g in self.graphs.values())}


__all__ = ["ForwardGraphs", "GraphKey", "StaticText"]
