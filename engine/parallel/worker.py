"""A pipeline worker (rank >= 1): receive from rank r-1, run this rank's blocks, pass on.

Operations (rank 0 sends them; every rank handles them in order and forwards them down):
  cache    build this rank's KV cache (policy, resolution, dtype, RoPE mode)
  text     a new prompt's embedded text tokens (TextState; cross-attention K/V computed lazily)
  rope     repeat rank 0's RoPE mode switch on the stored keys
  hints    run this rank's VACE blocks on the hint stream, keep their hints
  forward  run this rank's blocks on the residual stream; the last rank returns it to rank 0
           (not for a context pass: the clean pass and the re-cache only write K/V)
  ping     rank 0 is idle (KeepAlive): forward it, nothing else
  stop     forward the stop and exit
A failed operation is answered with an "error" message carrying its sequence number (forwarded to
rank 0, which raises it for that chunk); the worker keeps serving.
"""
from __future__ import annotations

import logging

import torch

from vacelive.engine.dit.attention import TextState
from vacelive.engine.parallel.shard import Shard
from vacelive.engine.parallel.wire import Link, PipelineDead

log = logging.getLogger(__name__)

_DTYPES = {str(d): d for d in (torch.float32, torch.bfloat16, torch.float16)}


class Worker:
    def __init__(self, model, placement, link: Link):
        self.shard = Shard(model, placement, link.rank)
        self.link = link
        self.text = None
        self.last = link.rank == link.world - 1
        self.handled = 0

    def serve(self) -> None:
        """Handle messages until "stop"; PipelineDead (a neighbour is gone) propagates."""
        link = self.link
        while True:
            meta, tensors = link.recv(link.prev)
            op = meta["op"]
            if op == "stop":
                if not self.last:
                    link.send(link.next, meta)
                return
            if op == "error":
                self._pass_error(meta)
                continue
            if op == "ping":  # rank 0 is idle: keep every wait along the chain alive
                if not self.last:
                    link.send(link.next, meta)
                continue
            try:
                with torch.no_grad():
                    out = self.handle(meta, tensors)
            except PipelineDead:
                raise
            except Exception as exc:  # noqa: BLE001 - reported to rank 0 as this chunk's error
                log.exception("pipeline rank %d: %s failed", link.rank, op)
                self._pass_error({"op": "error", "seq": meta["seq"],
                                  "msg": f"rank {link.rank} {op}: {type(exc).__name__}: {exc}"})
                continue
            self.handled += 1
            if out is not None:
                link.send(out[0], out[1], out[2])

    def _pass_error(self, meta) -> None:
        self.link.send(0 if self.last else self.link.next, meta)

    def handle(self, meta, tensors):
        """One operation; returns (destination, header, tensors) to send, or None."""
        op, shard, link = meta["op"], self.shard, self.link
        down = None if self.last else link.next
        if op == "cache":
            shard.new_cache(meta["policy"], batch=meta["batch"], latent_hw=meta["latent_hw"],
                            dtype=_DTYPES[meta["dtype"]], device=link.device, rope_mode=meta["rope_mode"],
                            origin=meta["origin"])
            return None if down is None else (down, meta, [])
        if op == "text":
            self.text = TextState(tensors[0], meta["version"])
            return None if down is None else (down, meta, tensors)
        if op == "rope":
            shard.set_rope_mode(meta["mode"], meta["slots"])
            return None if down is None else (down, meta, [])
        if op == "hints":
            serial, grid, skip = meta["serial"], tuple(meta["grid"]), meta["skip"]
            if shard.vace:
                c, e0 = tensors
                attn = shard.base.local_attention(grid, 0)
                c = shard.run_hints(c, None, e0, self._text(), attn, skip, serial)
                tensors = [c, e0]
            else:
                shard.hint_serial = serial
            carry = meta["carry"] and shard.vace_downstream
            if down is None:
                return None
            return down, {**meta, "carry": carry}, tensors if carry else []
        if op == "forward":
            tokens, e0 = tensors
            grid = tuple(meta["grid"])
            shard.check_hints(meta["hints"])
            attn = shard.attention_for(meta["plan"], grid, meta["start"])
            tokens = shard.run_blocks(tokens, e0, self._text(), attn, hints=meta["hints"] is not None,
                                      context_scale=meta["scale"])
            if self.last:  # a context pass (reply False) ends here: its K/V are written
                return (0, {"op": "result", "seq": meta["seq"]}, [tokens]) if meta.get("reply", True) else None
            return down, meta, [tokens, e0]
        raise ValueError(f"unknown pipeline operation {op!r}")

    def _text(self) -> TextState:
        if self.text is None:
            raise RuntimeError(f"rank {self.link.rank} has no prompt tokens yet")
        return self.text
