"""MemFlow: LongLive's sink + window cache plus a per-block memory bank of a few latent frames,
kept by text-query saliency.

Rule (KlingTeam/MemFlow wan/modules/causal_model.py: CausalWanSelfAttention.forward,
_apply_cache_updates, _apply_cache_updates_before, compress_kv_bank; pipeline/causal_inference.py
flags; configs/inference.yaml bank_size B = 3, record_interval R = 3). Per DiT pass over frames
[s, e) of the stream (3-frame chunks, c = s // 3 the chunk index), all sizes in frames here
(the reference counts tokens, frame_seqlen per frame):
  * bank index bookkeeping (same for every block):
        end_bank   = ((e // 3 - 1) // R + 1)              frames the bank has recorded up to chunk c
        local_end  = bank.local_end + end_bank - bank.global_end
        local_start = local_end - (e - s) / 3
  * attended bank frames: [0, min(local_start if recording else local_end, B)) where a pass
    records when c % R == 0 (never in a re-cache pass); keys = sink + bank + local window.
  * after the pass, when the bank is updated (every pass except a re-cache) and the pass is not
    a recompute (LongLive's: e <= cache head and s > 0): bank.global_end = end_bank,
    bank.local_end = local_end; and k_new/v_new <- the pass's first frame of K/V (RoPE'd K),
    on every updating pass (the last pass of a chunk, the clean pass, wins).
  * before the first denoising pass of a chunk (q_bank) and before a re-cache pass: with
    w = bank.local_end, if w >= 1: if w <= B the slot [w - 1, w) <- k_new/v_new, else the bank
    is compressed: score of every bank frame = mean over its tokens, over heads, over the 512
    text tokens of (text_k . bank_k) / sqrt(D) with the block's cross-attention text keys;
    the top B - 1 frames (in score order, torch.topk) are kept, k_new appended.
  So slot j holds the first frame of chunk 3j + 2 (the newest chunk before slot j + 1 opens),
  and from chunk 10 on every chunk's first frame is compressed in.
Flags used: causal_inference.py's (update_bank on every pass, q_bank on the first denoising
step), also for prompt switches; the re-cache pass uses interactive_causal_inference.py's
(q_bank, no bank update, is_recache).

Live values (ChunkRequest.bank_size / record_interval): a change takes effect at the next
chunk and empties the memory (the index arithmetic above assumes a fixed R and B); bank_size 0
turns the memory off. Window-relative RoPE (after 1024 latent frames with rope "auto") cannot
place the bank's absolutely rotated keys: the memory is emptied and stays off in that mode
(notice). A failed chunk empties the memory too (its bank writes cannot be undone cheaply).
"""
from __future__ import annotations

from typing import Any

import torch

from vacelive.engine.dit.kv_cache import CachedAttention

BANK_RANGE = (0, 6)
INTERVAL_RANGE = (1, 12)
CHUNK = 3  # the reference's hard-coded frames per chunk in its bank arithmetic


def compress_kv_bank(hist_k, hist_v, new_k, new_v, text_k, tokens_per_frame: int, budget: int):
    """MemFlow's compress_kv_bank: keep the `budget - new` most text-salient frames of the bank
    (in saliency order) and append the new frames. hist_* [B, L, H, D], new_* [B, Ln, H, D],
    text_k [B, Lt, H, D]. Same operation order and dtypes as the reference."""
    b, l_hist, h, d = hist_k.shape
    n_hist, n_new = l_hist // tokens_per_frame, new_k.shape[1] // tokens_per_frame
    if l_hist % tokens_per_frame or new_k.shape[1] % tokens_per_frame:
        raise ValueError("bank lengths must be whole frames")
    q = text_k.permute(0, 2, 1, 3).reshape(b * h, -1, d)
    k = hist_k.permute(0, 2, 1, 3).reshape(b * h, l_hist, d)
    scores = torch.bmm(q, k.transpose(1, 2)) * (d ** -0.5)
    per_frame = scores.mean(dim=1).view(b, h, l_hist).mean(dim=1).view(b, n_hist, tokens_per_frame).mean(dim=2)
    keep = min(budget - n_new, n_hist)
    _, idx = torch.topk(per_frame, k=keep, dim=1)
    index = idx.view(b, keep, 1, 1, 1).expand(-1, -1, tokens_per_frame, h, d)
    sel_k = torch.gather(hist_k.view(b, n_hist, tokens_per_frame, h, d), 1, index)
    sel_v = torch.gather(hist_v.view(b, n_hist, tokens_per_frame, h, d), 1, index)
    out_k = torch.cat([sel_k, new_k.view(b, n_new, tokens_per_frame, h, d)], 1).reshape(b, -1, h, d)
    out_v = torch.cat([sel_v, new_v.view(b, n_new, tokens_per_frame, h, d)], 1).reshape(b, -1, h, d)
    return out_k, out_v


class MemoryBank:
    """The bank storage and its index bookkeeping (module doc), for every block at once.
    Storage [layers, 2, B, size * ft, H, D]; k_new/v_new [layers, 2, B, ft, H, D]."""

    def __init__(self, size: int, interval: int, *, num_layers: int, batch: int, frame_tokens: int,
                 num_heads: int, head_dim: int, dtype, device):
        self.ft = frame_tokens
        self.shape = (num_layers, 2, batch, frame_tokens, num_heads, head_dim)
        self.dtype, self.device = dtype, device
        self.new = torch.zeros(self.shape, dtype=dtype, device=device)
        self.storage = None
        self.configure(size, interval)

    def configure(self, size: int, interval: int) -> None:
        """(Re)size the bank; empties the memory."""
        self.size, self.interval = size, interval
        if size:
            shape = list(self.shape)
            shape[3] = size * self.ft
            if self.storage is None or tuple(self.storage.shape) != tuple(shape):
                self.storage = torch.zeros(shape, dtype=self.dtype, device=self.device)
        else:
            self.storage = None
        self.reset()

    def reset(self) -> None:
        self.global_end = self.local_end = 0  # frames (the reference's token indices / ft)
        self.attend = 0  # bank frames the current pass attends
        self.record = False  # whether the current pass refreshes k_new/v_new
        self.next_kind = "denoise"  # set by the generator before a pass: "first" / "denoise" / "clean" / "recache"
        self.compressions = 0

    @property
    def nbytes(self) -> int:
        n = self.new.numel() * self.new.element_size()
        return n + (self.storage.numel() * self.storage.element_size() if self.storage is not None else 0)

    def begin_pass(self, start: int, frames: int, head: int, text_keys) -> None:
        """Bookkeeping of one DiT pass over stream frames [start, start + frames) with `head`
        frames cached before it; `text_keys(layer)` gives a block's text K [B, 512, H, D]."""
        kind, self.next_kind = self.next_kind, "denoise"
        if not self.size:
            self.attend, self.record = 0, False
            return
        recache = kind == "recache"
        if kind in ("first", "recache"):
            self._before(text_keys)
        end = start + frames
        end_bank = (end // CHUNK - 1) // self.interval + 1
        local_end = self.local_end + end_bank - self.global_end
        local_start = local_end - frames / CHUNK
        recording = not recache and (start // CHUNK) % self.interval == 0
        self.attend = max(0, min(int(local_start) if recording else local_end, self.size))
        self.record = not recache
        recompute = end <= head and start > 0
        if self.record and not recompute:
            self.global_end, self.local_end = end_bank, local_end

    def _before(self, text_keys) -> None:
        w = self.local_end
        if w < 1:
            return
        if w <= self.size:
            self.storage[:, :, :, (w - 1) * self.ft:w * self.ft].copy_(self.new)
            return
        for layer in range(self.storage.shape[0]):
            bank, new = self.storage[layer], self.new[layer]
            k, v = compress_kv_bank(bank[0], bank[1], new[0], new[1], text_keys(layer), self.ft, self.size)
            bank[0].copy_(k)
            bank[1].copy_(v)
        self.compressions += 1


class BankAttention(CachedAttention):
    """CachedAttention that also attends the memory bank and records the pass's first frame."""

    def __init__(self, cache, plan, q_freqs, k_freqs):
        super().__init__(cache, plan, q_freqs, k_freqs)
        bank: MemoryBank = cache.memory
        if cache.rope_mode != "absolute" or not bank.size:
            self.bank = None
            return
        self.bank = bank
        start = plan.q_positions[0] + cache.origin
        cache.memory_hook(bank, start, len(plan.q_positions), cache.head)

    def keys_values(self, layer, k, v):
        K, V = super().keys_values(layer, k, v)
        bank = self.bank
        if bank is None:
            return K, V
        ft = bank.ft
        if bank.record:
            bank.new[layer, 0].copy_(k[:, :ft])
            bank.new[layer, 1].copy_(v[:, :ft])
        n = bank.attend * ft
        if n:
            K = torch.cat([K, bank.storage[layer, 0, :, :n]], dim=1)
            V = torch.cat([V, bank.storage[layer, 1, :, :n]], dim=1)
        return K, V


class MemFlowBank:
    """The MemFlow stream rule, driven by the generator (engine.policies.stream_policy)."""

    clean_pass = True

    def __init__(self, generator):
        self.gen = generator
        cache = generator.recipe.cache
        kv = generator.kv
        storage = kv.storage
        self.bank = MemoryBank(cache.bank_frames, cache.record_interval, num_layers=storage.shape[0],
                               batch=storage.shape[2], frame_tokens=kv.frame_tokens, num_heads=storage.shape[4],
                               head_dim=storage.shape[5], dtype=storage.dtype, device=storage.device)
        kv.attention_class = BankAttention
        kv.memory = self.bank
        kv.memory_hook = self._begin_pass
        self._relative_notice = False

    def _begin_pass(self, bank: MemoryBank, start: int, frames: int, head: int) -> None:
        model, text = self.gen.model, self.gen.text
        bank.begin_pass(start, frames, head, lambda layer: text.kv(model.blocks[layer].cross_attn)[0])

    # ---- generator hooks ----------------------------------------------------------------------
    def apply_request(self, request, notices: list[str]) -> None:
        size = _int_in(request, "bank_size", self.bank.size, BANK_RANGE, notices)
        interval = _int_in(request, "record_interval", self.bank.interval, INTERVAL_RANGE, notices)
        if (size, interval) != (self.bank.size, self.bank.interval):
            self.bank.configure(size, interval)
            notices.append(f"MemFlow memory bank: {size} frames, a slot every {interval} chunks (memory emptied)")
        if self.gen.kv.rope_mode != "absolute" and self.bank.size:
            if not self._relative_notice:
                notices.append("MemFlow memory bank off: window-relative RoPE cannot place its keys "
                               "(after 1024 latent frames, or rope 'relative'); reset to restore it")
                self._relative_notice = True
            if self.bank.global_end:
                self.bank.reset()

    def chunk_start(self, plan) -> int:
        return self.gen.frame

    def before_pass(self, kind: str, step: int = 0) -> None:
        self.bank.next_kind = "first" if kind == "denoise" and step == 0 else kind

    def after_chunk(self, x0, decoded) -> None:
        pass

    def reset(self) -> None:
        self.bank.reset()
        self._relative_notice = False

    def snapshot(self) -> Any:
        return self.bank.global_end, self.bank.local_end, self.bank.compressions

    def restore(self, saved: Any) -> None:
        # The failed chunk may have written or compressed the bank in place: start it empty.
        self.bank.reset()

    def describe(self) -> dict[str, Any]:
        return {"bank_size": self.bank.size, "record_interval": self.bank.interval,
                "bank_frames_filled": min(self.bank.local_end, self.bank.size),
                "bank_mb": round(self.bank.nbytes / 2**20, 1)}


def _int_in(request, name: str, current: int, bounds: tuple[int, int], notices: list[str]) -> int:
    value = getattr(request, name, current)
    try:
        v = int(round(float(value)))
    except (TypeError, ValueError, OverflowError):
        notices.append(f"{name} {value!r} is not a number: keeping {current}")
        return current
    fixed = min(max(v, bounds[0]), bounds[1])
    if fixed != v:
        notices.append(f"{name} {value!r} out of range {bounds[0]}..{bounds[1]}: using {fixed}")
    return fixed
