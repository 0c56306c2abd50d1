"""MemFlow's memory bank against a literal reimplementation of the reference's bookkeeping (token
indices, _apply_cache_updates, _apply_cache_updates_before, the causal_inference.py flags and the
interactive re-cache flags) and compress_kv_bank against a loop over frames."""
from __future__ import annotations

import math

import pytest
import torch

from vacelive.engine.policies.memflow import MemoryBank, compress_kv_bank

H, D = 2, 4


def plain_compress(hist_k, hist_v, new_k, new_v, text_k, ft, budget):
    """Score every bank frame with explicit loops (float64), keep the best budget - 1 in score
    order, append the new frame."""
    frames = hist_k.shape[1] // ft
    scores = []
    for j in range(frames):
        total = 0.0
        for h in range(H):
            for t in range(text_k.shape[1]):
                for tok in range(j * ft, (j + 1) * ft):
                    total += float((text_k[0, t, h].double() * hist_k[0, tok, h].double()).sum()) / math.sqrt(D)
        scores.append(total / (H * text_k.shape[1] * ft))
    keep = sorted(range(frames), key=lambda j: -scores[j])[:budget - new_k.shape[1] // ft]
    ks = [hist_k[:, j * ft:(j + 1) * ft] for j in keep] + [new_k]
    vs = [hist_v[:, j * ft:(j + 1) * ft] for j in keep] + [new_v]
    return torch.cat(ks, 1), torch.cat(vs, 1), keep


def test_compress_keeps_the_most_text_salient_frames_in_score_order():
    g = torch.Generator().manual_seed(0)
    ft = 3
    for trial in range(5):
        hist_k = torch.randn(1, 3 * ft, H, D, generator=g)
        hist_v = torch.randn(1, 3 * ft, H, D, generator=g)
        new_k, new_v = torch.randn(1, ft, H, D, generator=g), torch.randn(1, ft, H, D, generator=g)
        text_k = torch.randn(1, 5, H, D, generator=g) + 0.5
        k, v = compress_kv_bank(hist_k, hist_v, new_k, new_v, text_k, ft, 3)
        pk, pv, keep = plain_compress(hist_k, hist_v, new_k, new_v, text_k, ft, 3)
        assert torch.allclose(k, pk) and torch.allclose(v, pv), (trial, keep)
    # an order that is not the slot order is kept as the reference's topk gives it
    hist_k = torch.zeros(1, 3 * ft, H, D)
    hist_k[:, 2 * ft:] = 1.0  # frame 2 most salient, then frame 0, then frame 1
    hist_k[:, 0:ft] = 0.5
    hist_v = torch.arange(3.0).repeat_interleave(ft).view(1, 3 * ft, 1, 1).expand(1, 3 * ft, H, D)
    k, v = compress_kv_bank(hist_k, hist_v, torch.zeros(1, ft, H, D), torch.full((1, ft, H, D), 9.0),
                            torch.ones(1, 4, H, D), ft, 3)
    assert v[0, ::ft, 0, 0].tolist() == [2.0, 0.0, 9.0]


class ReferenceBank:
    """One block of MemFlow's bank, written like the reference (token indices)."""

    def __init__(self, size, interval, ft):
        self.ft, self.interval = ft, interval
        self.k = torch.zeros(1, size * ft, H, D)
        self.v = torch.zeros(1, size * ft, H, D)
        self.k_new = torch.zeros(1, ft, H, D)
        self.v_new = torch.zeros(1, ft, H, D)
        self.global_end = self.local_end = 0  # bank indices
        self.cache_global_end = 0  # the KV cache's global_end_index

    def before(self, text_k):  # _apply_cache_updates_before
        w = self.local_end
        if w >= self.ft:
            if w <= self.k.shape[1]:
                self.k[:, w - self.ft:w] = self.k_new
                self.v[:, w - self.ft:w] = self.v_new
            else:
                self.k, self.v, _ = plain_compress(self.k, self.v, self.k_new, self.v_new, text_k, self.ft,
                                                   self.k.shape[1] // self.ft)

    def forward(self, start_frame, frames, k, v, text_k, update_bank, q_bank, is_recache):
        ft = self.ft
        if q_bank:
            self.before(text_k)
        current_start = start_frame * ft
        current_end = current_start + frames * ft
        current_end_bank = ((current_end // (ft * 3) - 1) // self.interval + 1) * ft
        is_recompute = current_end <= self.cache_global_end and current_start > 0
        local_end_bank = self.local_end + current_end_bank - self.global_end
        local_start_bank = local_end_bank - (frames * ft) // 3
        is_update_bank = False if is_recache else (current_start // (3 * ft)) % self.interval == 0
        n = min(local_start_bank if is_update_bank else local_end_bank, self.k.shape[1])
        attended = self.k[:, :n].clone(), self.v[:, :n].clone()
        # _apply_cache_updates (the write branch always runs for these passes)
        if update_bank:
            self.k_new, self.v_new = k[:, :ft].clone(), v[:, :ft].clone()
        if not is_recompute:
            self.cache_global_end = current_end
            if update_bank:
                self.global_end, self.local_end = current_end_bank, local_end_bank
        return attended


def passes(chunks, cut_at):
    """(kind, start frame, frames) of a stream: 4 denoising passes + the clean pass per chunk, and
    LongLive's re-cache of the last 12 frames before chunk `cut_at`."""
    out = []
    for c in range(chunks):
        s = 3 * c
        if c == cut_at:
            n = min(12, s)
            out.append(("recache", s - n, n))
        out += [("first", s, 3), ("denoise", s, 3), ("denoise", s, 3), ("denoise", s, 3), ("clean", s, 3)]
    return out


@pytest.mark.parametrize("size, interval", [(3, 3), (2, 1), (3, 2)])
def test_bank_bookkeeping_matches_the_reference_pass_by_pass(size, interval):
    ft, layers = 2, 2
    g = torch.Generator().manual_seed(size * 10 + interval)
    text = [torch.randn(1, 6, H, D, generator=g) for _ in range(layers)]
    bank = MemoryBank(size, interval, num_layers=layers, batch=1, frame_tokens=ft, num_heads=H, head_dim=D,
                      dtype=torch.float32, device="cpu")
    refs = [ReferenceBank(size, interval, ft) for _ in range(layers)]
    head = 0
    compressed = False
    for i, (kind, start, frames) in enumerate(passes(16, cut_at=11)):
        bank.next_kind = kind
        bank.begin_pass(start, frames, head, lambda layer: text[layer])
        for layer in range(layers):
            k = torch.randn(1, frames * ft, H, D, generator=g)
            v = torch.randn(1, frames * ft, H, D, generator=g)
            ref = refs[layer]
            want_k, want_v = ref.forward(start, frames, k, v, text[layer], update_bank=kind != "recache",
                                         q_bank=kind in ("first", "recache"), is_recache=kind == "recache")
            got_k = bank.storage[layer, 0, :, :bank.attend * ft]
            got_v = bank.storage[layer, 1, :, :bank.attend * ft]
            assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v), (i, kind, start, layer)
            if bank.record:  # what BankAttention does with the pass's own K/V
                bank.new[layer, 0].copy_(k[:, :ft])
                bank.new[layer, 1].copy_(v[:, :ft])
        head = max(head, start + frames)
        compressed |= bank.compressions > 0
        assert (bank.global_end * ft, bank.local_end * ft) == (refs[0].global_end, refs[0].local_end), i
    assert compressed  # 16 chunks reach the compression regime for every setting here
    assert bank.attend == size


def test_slot_j_holds_the_first_frame_of_chunk_3j_plus_2():
    """The update order in words: with R = 3, B = 3 the slots are filled by chunks 2, 5, 8 (the
    last chunk before the next slot opens), each with its clean pass's first frame."""
    ft = 1
    bank = MemoryBank(3, 3, num_layers=1, batch=1, frame_tokens=ft, num_heads=1, head_dim=1,
                      dtype=torch.float32, device="cpu")
    head = 0
    for kind, start, frames in passes(10, cut_at=-1):
        bank.next_kind = kind
        bank.begin_pass(start, frames, head, lambda layer: torch.ones(1, 1, 1, 1))
        chunk = start // 3
        tag = chunk * 10 + (1 if kind == "clean" else 0)  # clean pass frames are tagged x1
        if bank.record:
            bank.new.fill_(tag)
        head = max(head, start + frames)
    assert bank.storage[0, 0, 0, :, 0, 0].tolist() == [21.0, 51.0, 81.0]
    assert bank.compressions == 0  # chunk 9's first frame is compressed in at chunk 10
