"""Rank 0's view of the pipelined DiT: a drop-in for CausalWanModel / VaceWanModel inside
StreamGenerator (same call signature), whose blocks are spread over the pipeline ranks.

Rank 0 embeds the latents, runs its own blocks, sends the residual stream to rank 1 and gets it
back from the last rank, then runs the head. Rank 0's KV cache PLANS every pass (slot policy,
RoPE positions) and the plan travels with the activations, so the workers' caches hold storage
only and can never disagree with rank 0 about which slots a pass writes or reads. A prompt's
text tokens travel once per prompt; the VACE hint stream travels down the ranks that hold hint
blocks, and each hint stays on the rank of the layer it feeds.

Message order is the only synchronisation: rank r handles rank r-1's messages in the order they
were sent, so the pipelined pass does exactly the single-process pass's operations in the same
order (bit for bit on the CPU). A worker that fails an operation forwards an error (with the
operation's sequence number) instead of its result; rank 0 raises it as the chunk's error and
the stream goes on. A worker that is gone or silent past the timeout raises PipelineDead.
"""
from __future__ import annotations

import torch
from torch import nn

from vacelive.engine.dit.kv_cache import KVCache
from vacelive.engine.parallel.shard import Shard
from vacelive.engine.parallel.wire import Link


class RemoteHints:
    """Handle for one chunk's VACE hints: each lives on the rank of the layer it feeds."""

    def __init__(self, serial: int, count: int):
        self.serial, self.count = serial, count

    def __len__(self) -> int:
        return self.count


def pass_hints(model, what: str, x, t, text, vace_context, vace_prefix, context_scale, hints,
               block_residuals, attn_mask, add_condition) -> bool:
    """The checks a parallel DiT's pass shares: no block_residuals / attn_mask, and hints that are
    this chunk's handle (computed here from vace_context when not given). True when the pass
    adds hints. `what` names the model in the errors."""
    if block_residuals or attn_mask is not None:
        raise ValueError(f"the {what} DiT takes no block_residuals / attn_mask")
    if context_scale != 0 and hints is None and vace_context is not None:
        hints = model.compute_hints(x, t, text, vace_context, vace_prefix, add_condition)
    use = hints is not None and context_scale != 0
    if use and (not isinstance(hints, RemoteHints) or hints.serial != model._hint_serial):
        raise ValueError(f"hints must be this chunk's handle from compute_hints of the {what} model")
    return use


class RootKVCache(KVCache):
    """Rank 0's cache: plans every pass; a RoPE mode switch is repeated on every rank."""

    announce = None  # set by PipelinedModel: fn(mode, slot_frame)

    def set_rope_mode(self, mode: str) -> None:
        before, slots = self.rope_mode, self.state.slot_frame
        super().set_rope_mode(mode)
        if self.rope_mode != before and self.announce is not None:
            self.announce(mode, slots)


class PipelinedModel:
    """The DiT as StreamGenerator sees it, with blocks on `placement.world` ranks."""

    def __init__(self, model: nn.Module, placement, link: Link):
        self.inner = model
        self.base = getattr(model, "base", model)
        self.cfg = self.base.cfg
        self.link = link
        self.shard = Shard(model, placement, 0)
        self.placement = placement
        self._seq = 0
        self._text = None  # the TextState the workers hold
        self._hint_serial = 0
        self.closed = False

    # ---- what StreamGenerator and its helpers read --------------------------------------------------
    @property
    def patch_embedding(self):
        return self.base.patch_embedding

    @property
    def weights_version(self) -> int:
        return self.base.weights_version

    @property
    def dtype(self):
        return self.base.dtype

    @property
    def rope(self):
        return self.base.rope

    def prepare_text(self, t5_embeds):
        return self.base.prepare_text(t5_embeds)

    def parameters(self):
        return self.inner.parameters()

    def new_kv_cache(self, policy, *, batch: int = 1, latent_hw, dtype=None, device=None, rope_mode="absolute",
                     origin: int = 0):
        if getattr(policy, "cache_class", KVCache) is not KVCache:
            raise ValueError(f"pipeline parallelism runs the plain sink + window caches; {policy!r} has its own "
                             f"cache class")
        dtype = dtype or self.base.dtype
        kv = self.shard.new_cache(policy, batch=batch, latent_hw=latent_hw, dtype=dtype,
                                  device=device or self.base.patch_embedding.weight.device, rope_mode=rope_mode,
                                  origin=origin, cls=RootKVCache)
        kv.announce = self._announce_rope
        self._down({"op": "cache", "policy": policy, "batch": batch, "latent_hw": tuple(latent_hw),
                    "dtype": str(dtype), "rope_mode": rope_mode, "origin": origin})
        return kv

    # ---- forward ------------------------------------------------------------------------------------
    def __call__(self, x, t, text, kv=None, start_frame: int = 0, *, vace_context=None, vace_prefix=None,
                 context_scale: float = 1.0, hints=None, block_residuals=None, attn_mask=None,
                 add_condition=None) -> torch.Tensor:
        return self._pass(x, t, text, kv, start_frame, vace_context=vace_context, vace_prefix=vace_prefix,
                          context_scale=context_scale, hints=hints, block_residuals=block_residuals,
                          attn_mask=attn_mask, add_condition=add_condition, reply=True)

    forward = __call__

    def context_pass(self, x, t, text, kv, start_frame: int = 0, *, add_condition=None) -> None:
        """A pass whose flow nobody reads (the clean pass, the KV re-cache): it writes every rank's
        K/V and returns once rank 0's blocks are done; the other ranks finish it while rank 0 goes
        on (decode, the next chunk's conditioning and its first blocks). Their messages are handled
        in order, so the next pass still sees these K/V: the result is unchanged."""
        self._pass(x, t, text, kv, start_frame, add_condition=add_condition, reply=False)

    def _pass(self, x, t, text, kv=None, start_frame: int = 0, *, vace_context=None, vace_prefix=None,
              context_scale: float = 1.0, hints=None, block_residuals=None, attn_mask=None,
              add_condition=None, reply: bool = True):
        use_hints = pass_hints(self, "pipelined", x, t, text, vace_context, vace_prefix, context_scale, hints,
                               block_residuals, attn_mask, add_condition)
        base = self.base
        tokens, grid = base.embed_video(x)
        tokens = base.add_token_condition(tokens, add_condition)
        batch, frames = x.shape[0], grid[0]
        e, e0 = base.embed_time(t, batch, frames)
        text.sync(base.weights_version)
        if text.context.shape[0] != batch:
            raise ValueError(f"text batch {text.context.shape[0]} != latent batch {batch}")
        self._sync_text(text)
        attn = kv.begin(start_frame, grid, batch) if kv is not None else base.local_attention(grid, start_frame)
        tokens = self.shard.run_blocks(tokens, e0, text, attn, hints=use_hints, context_scale=context_scale)
        seq = self._down({"op": "forward", "grid": tuple(grid), "start": start_frame,
                          "plan": attn.plan if kv is not None else None,
                          "hints": hints.serial if use_hints else None, "scale": float(context_scale),
                          "reply": reply},
                         [tokens, e0])
        if not reply:
            if kv is not None:
                kv.commit(attn)
            return None
        tokens = self._result(seq)
        out = base.head(tokens, e)
        if kv is not None:
            kv.commit(attn)
        return base.unpatchify(out, grid)

    def _result(self, seq: int) -> torch.Tensor:
        """The last rank's answer to message `seq`; worker errors for earlier messages are raised
        after it arrives (so the channel stays in step)."""
        errors = []
        while True:
            meta, tensors = self.link.recv(self.link.prev)
            if meta["op"] == "error":
                errors.append(meta["msg"])
                if meta["seq"] == seq:
                    break
                continue
            if meta["seq"] != seq:
                raise RuntimeError(f"pipeline out of step: expected the answer to message {seq}, got {meta['seq']}")
            break
        if errors:
            raise RuntimeError("pipeline rank failed: " + "; ".join(errors))
        return tensors[0]

    def _down(self, header: dict, tensors=()) -> int:
        if self.closed:
            raise RuntimeError("the pipeline is closed")
        self._seq += 1
        self.link.send(self.link.next, {**header, "seq": self._seq}, list(tensors))
        return self._seq

    def _sync_text(self, text) -> None:
        if text is not self._text:
            self._down({"op": "text", "version": text._version}, [text.context])
            self._text = text

    def _announce_rope(self, mode: str, slot_frame) -> None:
        self._down({"op": "rope", "mode": mode, "slots": tuple(slot_frame)})

    def close(self) -> None:
        """Tell every worker to exit (best effort: a dead pipeline is closed already)."""
        if not self.closed:
            try:
                self._down({"op": "stop"})
            finally:
                self.closed = True


class PipelinedVaceModel(PipelinedModel):
    """PipelinedModel of a VaceWanModel: compute_hints runs the hint blocks where their layers live."""

    @property
    def vace_layers(self):
        return self.inner.vace_layers

    @property
    def vace_in_dim(self):
        return self.inner.vace_in_dim

    def compute_hints(self, x, t, text, vace_context, vace_prefix=None, add_condition=None) -> RemoteHints:
        """VaceWanModel.compute_hints, with block n run on the rank of main layer vace_layers[n]."""
        inner, base = self.inner, self.base
        tokens, grid = base.embed_video(x)
        tokens = base.add_token_condition(tokens, add_condition)
        e0 = base.embed_time(t, x.shape[0], grid[0])[1]
        text.sync(base.weights_version)
        self._sync_text(text)
        skip = 0
        if vace_prefix is not None:
            tokens, grid, e0, skip = inner._with_prefix(vace_prefix, tokens, grid, e0)
        c = inner._context_tokens(vace_context, x.shape[0], grid, exact=vace_prefix is not None)
        attn = base.local_attention(grid, 0)
        self._hint_serial += 1
        serial = self._hint_serial
        c = self.shard.run_hints(c, tokens, e0, text, attn, skip, serial)
        carry = self.shard.vace_downstream
        self._down({"op": "hints", "serial": serial, "grid": tuple(grid), "skip": skip, "carry": carry},
                   [c, e0] if carry else [])
        return RemoteHints(serial, len(self.inner.vace_layers))


def pipelined(model: nn.Module, placement, link: Link) -> PipelinedModel:
    cls = PipelinedVaceModel if hasattr(model, "compute_hints") else PipelinedModel
    return cls(model, placement, link)
