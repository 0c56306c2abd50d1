"""Sequence parallelism (Ulysses, https://arxiv.org/abs/2309.14509) for one chunk: every rank
holds the whole DiT and runs every block on its share of the chunk's tokens; self-attention
trades the token split for a head split with two all-to-alls (q, k, v in; the output back), so
each rank attends the full sequence for num_heads / N heads and keeps the KV cache of THOSE heads
only. Text K/V, modulation, FFN, cross-attention, the head and the VACE hint stream are per token
and run on the token shard.

Token shards: tokens are ordered (frame, row, column); rank r holds, in every frame, the r-th of N
equal contiguous runs of that frame's tokens. Each shard therefore has every frame, so the
per-frame modulation (which views tokens as [frames, tokens per frame]) runs unchanged on it.
Needs (H/16)(W/16) % N == 0 and num_heads % N == 0 (Wan 1.3B: 12 heads -> N in 1, 2, 3, 4, 6).

Rank 0 drives (UlyssesModel, a drop-in for the DiT inside StreamGenerator, like the pipelined
model): it sends each pass's inputs (latents, timestep, plan of its KV cache, condition) to every
rank, all ranks compute, rank 0 gathers the head output. Same math as the single process; the
matmuls run on fewer rows, so the result equals it to fp32 round-off (not guaranteed bit for bit).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from vacelive.engine.dit.attention import TextState, attend
from vacelive.engine.dit.kv_cache import CacheState, KVCache
from vacelive.engine.parallel.root import RemoteHints, pass_hints
from vacelive.engine.parallel.wire import Link, PipelineDead


def check_split(cfg, width: int, height: int, world: int) -> None:
    _, ph, pw = cfg.patch_size
    tokens = (height // 8 // ph) * (width // 8 // pw)
    if cfg.num_heads % world:
        raise ValueError(f"sequence parallelism over {world} ranks needs num_heads ({cfg.num_heads}) divisible by it")
    if tokens % world:
        raise ValueError(f"sequence parallelism over {world} ranks needs the {tokens} tokens per frame divisible by it")


class SeqComm:
    """Token shard <-> head group exchanges of one rank (all_to_all_single on `group`)."""

    def __init__(self, rank: int, world: int, group=None):
        self.rank, self.world, self.group = rank, world, group

    def shard(self, t: torch.Tensor, frames: int, dim: int = 1) -> torch.Tensor:
        """[B, L, ...] in (frame, token) order -> this rank's [B, F * L/(F N), ...] (tokens on `dim`)."""
        return t.unflatten(dim, (frames, self.world, -1)).select(dim + 1, self.rank).flatten(dim, dim + 1)

    def unshard(self, parts, frames: int) -> torch.Tensor:
        """Every rank's shard (rank order) -> [B, L, ...] in (frame, token) order."""
        return torch.stack([p.unflatten(1, (frames, -1)) for p in parts], 2).flatten(1, 3)

    def _all_to_all(self, send: torch.Tensor) -> torch.Tensor:
        recv = torch.empty_like(send)
        try:
            dist.all_to_all_single(recv, send, group=self.group)
        except Exception as exc:  # noqa: BLE001 - a rank that is gone or failed mid-pass
            raise PipelineDead(f"sequence-parallel exchange failed on rank {self.rank} "
                               f"({type(exc).__name__}: {str(exc).strip()[:200]})") from exc
        return recv

    def seq_to_heads(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, Ls, H, D] (my tokens, all heads) -> [B, L, H/N, D] (all tokens in order, my heads)."""
        b, _, heads, d = x.shape
        n = self.world
        send = x.unflatten(2, (n, heads // n)).permute(2, 0, 1, 3, 4).contiguous()  # [N, B, Ls, h, D]
        recv = self._all_to_all(send)  # recv[j]: rank j's tokens, my heads
        return recv.unflatten(2, (frames, -1)).permute(1, 2, 0, 3, 4, 5).reshape(b, -1, heads // n, d)

    def heads_to_seq(self, y: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, L, h, D] (all tokens, my heads) -> [B, Ls, N*h, D] (my tokens, all heads)."""
        b, _, h, d = y.shape
        n = self.world
        send = y.unflatten(1, (frames, n, -1)).permute(2, 0, 1, 3, 4, 5).contiguous()  # [N, B, F, Ts, h, D]
        recv = self._all_to_all(send)  # recv[j]: my tokens, rank j's heads
        return recv.permute(1, 2, 3, 0, 4, 5).reshape(b, -1, n * h, d)


class SeqRunner:
    """One rank's sequence-parallel DiT computation (the same on rank 0 and on the workers)."""

    def __init__(self, model, comm: SeqComm):
        self.model, self.base, self.comm = model, getattr(model, "base", model), comm
        self.kv = None
        self.hints = None
        self.hint_serial = None

    def new_cache(self, policy, *, batch, latent_hw, dtype, device, rope_mode, origin=0, cls=KVCache):
        cfg = self.base.cfg
        _, ph, pw = cfg.patch_size
        self.kv = cls(policy, num_layers=cfg.num_layers, batch=batch, grid_hw=(latent_hw[0] // ph, latent_hw[1] // pw),
                      num_heads=cfg.num_heads // self.comm.world, head_dim=cfg.head_dim, rope=self.base.rope,
                      dtype=dtype, device=device, rope_mode=rope_mode, origin=origin)
        return self.kv

    def attention_for(self, plan, grid, start: int):
        if plan is None:
            return self.base.local_attention(grid, start)
        kv = self.kv
        _, h, w = grid
        q = kv.rope.token_freqs(plan.q_positions, h, w)
        k = None if plan.key_positions is None else kv.rope.token_freqs(plan.key_positions, h, w)
        return kv.attention_class(kv, plan, q, k)

    def block(self, block, x, e0, text, attn, q_freqs, layer: int, frames: int):
        """WanBlock.forward with the all-to-alls around self-attention."""
        comm = self.comm
        mods = block.modulations(e0)
        q, k, v = block.pre_attention(x, mods, q_freqs, attn.rotate_keys)
        q, k, v = (comm.seq_to_heads(t, frames) for t in (q, k, v))
        k, v = attn.keys_values(layer, k, v)
        y = attend(q, k, v, attn.mask)
        y = comm.heads_to_seq(y.unflatten(-1, (q.shape[2], -1)), frames).flatten(2)
        text_k, text_v = text.kv(block.cross_attn)
        return block.post_attention(x, y, mods, text_k, text_v)

    def hints_pass(self, x, t, text, vace_context, vace_prefix, add_condition, serial: int) -> None:
        inner, base, comm = self.model, self.base, self.comm
        tokens, grid = base.embed_video(x)
        tokens = base.add_token_condition(tokens, add_condition)
        e0 = base.embed_time(t, x.shape[0], grid[0])[1]
        skip = 0
        if vace_prefix is not None:
            tokens, grid, e0, skip = inner._with_prefix(vace_prefix, tokens, grid, e0)
        c = inner._context_tokens(vace_context, x.shape[0], grid, exact=vace_prefix is not None)
        attn = base.local_attention(grid, 0)
        frames = grid[0]
        tokens, c, qf = comm.shard(tokens, frames), comm.shard(c, frames), comm.shard(attn.q_freqs, frames, dim=0)
        skip = skip // comm.world  # the prefix frames' share of this shard
        hints = []
        for n, block in enumerate(inner.vace_blocks):
            if n == 0:
                c = block.before_proj(c) + tokens
            c = self.block(block, c, e0, text, attn, qf, n, frames)
            h = c[:, skip:] if skip else c
            hints.append(block.after_proj(h.to(block.after_proj.weight.dtype)))
        self.hints, self.hint_serial = dict(zip(inner.vace_layers, hints)), serial

    def forward_pass(self, x, t, text, attn, grid, *, hints: int | None, context_scale: float, add_condition):
        """This rank's head output [B, Ls, out] (rank 0 gathers them)."""
        base, comm = self.base, self.comm
        if hints is not None and self.hint_serial != hints:
            raise RuntimeError(f"rank {comm.rank}: VACE hint set {hints} was not computed here")
        tokens, _ = base.embed_video(x)
        tokens = base.add_token_condition(tokens, add_condition)
        e, e0 = base.embed_time(t, x.shape[0], grid[0])
        frames = grid[0]
        tokens, qf = comm.shard(tokens, frames), comm.shard(attn.q_freqs, frames, dim=0)
        residuals = self.hints if hints is not None else {}
        for i, block in enumerate(base.blocks):
            tokens = self.block(block, tokens, e0, text, attn, qf, i, frames)
            r = residuals.get(i)
            if r is not None:
                tokens = torch.add(tokens, r, alpha=context_scale)
        return base.head(tokens, e)


def _t(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float32).detach()


class UlyssesModel:
    """Rank 0's sequence-parallel DiT inside StreamGenerator (same call signature as the DiT)."""

    def __init__(self, model, link: Link, comm: SeqComm):
        self.inner, self.base, self.cfg = model, getattr(model, "base", model), getattr(model, "base", model).cfg
        self.link, self.runner = link, SeqRunner(model, comm)
        self._text = None
        self._hint_serial = 0
        self.closed = False
        self.placement = None
        if hasattr(model, "compute_hints"):
            self.compute_hints = self._compute_hints
            self.vace_layers, self.vace_in_dim = model.vace_layers, model.vace_in_dim

    patch_embedding = property(lambda self: self.base.patch_embedding)
    weights_version = property(lambda self: self.base.weights_version)
    dtype = property(lambda self: self.base.dtype)
    rope = property(lambda self: self.base.rope)

    def prepare_text(self, t5):
        return self.base.prepare_text(t5)

    def parameters(self):
        return self.inner.parameters()

    def _all(self, header, tensors=()) -> None:
        if self.closed:
            raise RuntimeError("the sequence-parallel group is closed")
        for r in range(1, self.link.world):
            self.link.send(r, header, list(tensors))

    def new_kv_cache(self, policy, *, batch=1, latent_hw, dtype=None, device=None, rope_mode="absolute", origin=0):
        from vacelive.engine.parallel.root import RootKVCache

        if getattr(policy, "cache_class", KVCache) is not KVCache:
            raise ValueError(f"sequence parallelism runs the plain sink + window caches; {policy!r} has its own")
        dtype = dtype or self.base.dtype
        kv = self.runner.new_cache(policy, batch=batch, latent_hw=latent_hw, dtype=dtype,
                                   device=device or self.base.patch_embedding.weight.device, rope_mode=rope_mode,
                                   origin=origin, cls=RootKVCache)
        kv.announce = lambda mode, slots: self._all({"op": "rope", "mode": mode, "slots": tuple(slots)})
        self._all({"op": "cache", "policy": policy, "batch": batch, "latent_hw": tuple(latent_hw),
                   "dtype": str(dtype), "rope_mode": rope_mode, "origin": origin})
        return kv

    def _sync_text(self, text) -> None:
        if text is not self._text:
            self._all({"op": "text", "version": text._version}, [text.context])
            self._text = text

    @staticmethod
    def _optional(*tensors):
        present = [t is not None for t in tensors]
        return present, [t for t in tensors if t is not None]

    def _compute_hints(self, x, t, text, vace_context, vace_prefix=None, add_condition=None) -> RemoteHints:
        text.sync(self.base.weights_version)
        self._sync_text(text)
        self._hint_serial += 1
        present, extra = self._optional(vace_prefix, add_condition)
        self._all({"op": "hints", "serial": self._hint_serial, "present": present}, [x, _t(t), vace_context, *extra])
        self.runner.hints_pass(x, t, text, vace_context, vace_prefix, add_condition, self._hint_serial)
        return RemoteHints(self._hint_serial, len(self.inner.vace_layers))

    def __call__(self, x, t, text, kv=None, start_frame=0, *, vace_context=None, vace_prefix=None, context_scale=1.0,
                 hints=None, block_residuals=None, attn_mask=None, add_condition=None):
        use = pass_hints(self, "sequence-parallel", x, t, text, vace_context, vace_prefix, context_scale, hints,
                         block_residuals, attn_mask, add_condition)
        base = self.base
        grid = base.token_grid(x)
        text.sync(base.weights_version)
        if text.context.shape[0] != x.shape[0]:
            raise ValueError(f"text batch {text.context.shape[0]} != latent batch {x.shape[0]}")
        self._sync_text(text)
        attn = kv.begin(start_frame, grid, x.shape[0]) if kv is not None else base.local_attention(grid, start_frame)
        present, extra = self._optional(add_condition)
        self._all({"op": "forward", "grid": grid, "start": start_frame, "plan": attn.plan if kv is not None else None,
                   "hints": hints.serial if use else None, "scale": float(context_scale), "present": present},
                  [x, _t(t), *extra])
        out = self.runner.forward_pass(x, t, text, attn, grid, hints=hints.serial if use else None,
                                       context_scale=context_scale, add_condition=add_condition)
        parts = [out]
        for r in range(1, self.link.world):
            meta, tensors = self.link.recv(r)
            if meta["op"] == "error":
                raise RuntimeError(meta["msg"])
            parts.append(tensors[0])
        if kv is not None:
            kv.commit(attn)
        return base.unpatchify(self.runner.comm.unshard(parts, grid[0]), grid)

    forward = __call__

    def close(self) -> None:
        if not self.closed:
            try:
                self._all({"op": "stop"})
            finally:
                self.closed = True


class SeqWorker:
    """Ranks >= 1 of the sequence-parallel group: repeat rank 0's passes on their shard."""

    def __init__(self, model, link: Link, comm: SeqComm):
        self.runner, self.link, self.text = SeqRunner(model, comm), link, None

    def serve(self) -> None:
        from vacelive.engine.parallel.worker import _DTYPES

        link, runner = self.link, self.runner
        while True:
            meta, ts = link.recv(0)
            op = meta["op"]
            if op == "stop":
                return
            if op == "ping":  # rank 0 is idle (KeepAlive)
                continue
            with torch.no_grad():
                if op == "cache":
                    runner.new_cache(meta["policy"], batch=meta["batch"], latent_hw=meta["latent_hw"],
                                     dtype=_DTYPES[meta["dtype"]], device=link.device, rope_mode=meta["rope_mode"],
                                     origin=meta["origin"])
                elif op == "text":
                    self.text = TextState(ts[0], meta["version"])
                elif op == "rope":
                    kv = runner.kv
                    kv.state = CacheState(tuple(meta["slots"]), kv.state.head, kv.state.protect_sink)
                    kv.set_rope_mode(meta["mode"])
                elif op == "hints":
                    x, t, ctx, *rest = ts
                    prefix, cond = (rest.pop(0) if p else None for p in meta["present"])
                    runner.hints_pass(x, t, self.text, ctx, prefix, cond, meta["serial"])
                elif op == "forward":
                    x, t, *rest = ts
                    cond = rest[0] if meta["present"][0] else None
                    grid = tuple(meta["grid"])
                    attn = runner.attention_for(meta["plan"], grid, meta["start"])
                    out = runner.forward_pass(x, t, self.text, attn, grid, hints=meta["hints"],
                                              context_scale=meta["scale"], add_condition=cond)
                    link.send(0, {"op": "result"}, [out])
                else:
                    raise PipelineDead(f"rank {link.rank}: unknown operation {op!r}")
