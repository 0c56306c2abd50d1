"""Prompt blends, transitions and the per-chunk prompt state (changed / cut flags, notices)."""
import math
import zlib

import pytest
import torch

from vacelive.engine.request import Prompt
from vacelive.engine.text import EmbeddingCache, PromptState, blend, interpolate

L, D = 8, 16


class FakeEncoder:
    """Deterministic stand-in for TextEncoder.encode: one random embedding per text, zero-padded."""

    def __init__(self):
        self.calls = 0
        self.texts: list[str] = []

    def __call__(self, texts):
        self.calls += 1
        self.texts += list(texts)
        out = torch.zeros(len(texts), L, D)
        for i, t in enumerate(texts):
            g = torch.Generator().manual_seed(zlib.crc32(t.encode()))
            n = min(len(t.split()) + 1, L)
            out[i, :n] = torch.randn(n, D, generator=g)
        return out


def emb(text: str) -> torch.Tensor:
    return FakeEncoder()([text])[0]


def state():
    enc = FakeEncoder()
    return PromptState(EmbeddingCache(enc, capacity=8)), enc


def angle(a, b):
    return torch.acos(torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1))


A, B, C = emb("a red cat"), emb("a blue dog"), emb("neon city at night")


# -- blends ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_weight_one_zero_is_the_first_prompt_exactly(method):
    assert blend([A, B], [1.0, 0.0], method) is A
    assert blend([A, B], [0.0, 3.0], method) is B
    assert torch.equal(interpolate(A, B, 0.0, method), A) and torch.equal(interpolate(A, B, 1.0, method), B)


def test_linear_blend_is_normalised_and_norm_preserving():
    out = blend([A, B, C], [2.0, 1.0, 1.0])
    torch.testing.assert_close(out, blend([A, B, C], [0.5, 0.25, 0.25]))
    w = torch.tensor([0.5, 0.25, 0.25])
    valid = slice(0, 4)  # all three prompts have >= 3 words + EOS
    norms = torch.stack([A, B, C]).norm(dim=-1)[:, valid]
    torch.testing.assert_close(out[valid].norm(dim=-1), (w[:, None] * norms).sum(0))
    mixed = 0.5 * A + 0.25 * B + 0.25 * C
    assert torch.allclose(angle(out[valid], mixed[valid]), torch.zeros(4), atol=1e-3)  # direction of the mean
    assert (out[valid].norm(dim=-1) > mixed[valid].norm(dim=-1)).all()  # plain average would shrink
    assert torch.count_nonzero(out[5:]) == 0  # padding stays zero


def test_slerp_walks_the_arc_with_linear_norm():
    a, b = torch.zeros(2, D), torch.zeros(2, D)
    a[:, 0], b[:, 1] = 2.0, 1.0  # orthogonal rows, different norms
    mid = blend([a, b], [0.7, 0.3], "slerp")
    torch.testing.assert_close(angle(mid, a), torch.full((2,), 0.3 * math.pi / 2))
    torch.testing.assert_close(mid.norm(dim=-1), torch.full((2,), 0.7 * 2 + 0.3 * 1))
    lin = blend([a, b], [0.7, 0.3], "linear")
    assert not torch.allclose(angle(lin, a), angle(mid, a))  # chord direction differs from the arc
    with pytest.raises(ValueError, match="exactly two"):
        blend([A, B, C], [1, 1, 1], "slerp")
    with pytest.raises(ValueError, match="weights"):
        blend([A, B], [1, -1])


def test_slerp_of_real_shaped_embeddings_keeps_padding_zero():
    out = interpolate(A, C, 0.5, "slerp")
    assert torch.count_nonzero(out[5:]) == 0 and torch.isfinite(out).all()


# -- state: changed / cut ----------------------------------------------------------------------
def test_first_update_changes_without_cut_then_settles():
    s, enc = state()
    u = s.update([Prompt("a red cat")])
    assert u.changed and not u.cut and u.embeds.shape == (1, L, D)
    assert torch.equal(u.embeds[0], A)
    u = s.update([Prompt("a red cat")])
    assert not u.changed and not u.cut and enc.calls == 1
    u = s.update("a  red cat ")  # same after cleaning: no change
    assert not u.changed and enc.calls == 1


def test_hard_switch_is_a_cut_weight_change_is_not():
    s, enc = state()
    s.update([("a red cat", 1.0)])
    u = s.update([("a blue dog", 1.0)], transition_chunks=0)
    assert u.changed and u.cut and torch.equal(u.embeds[0], B)
    u = s.update([("a red cat", 0.5), ("a blue dog", 0.5)])
    assert u.changed and u.cut  # the set of prompts changed ({B} -> {A, B})
    u = s.update([("a red cat", 0.6), ("a blue dog", 0.4)])
    assert u.changed and not u.cut  # same prompts, new weights: soft change, no KV re-cache
    torch.testing.assert_close(u.embeds[0], blend([A, B], [0.6, 0.4]))
    u = s.update([("a red cat", 1.0), ("a blue dog", 0.0)])
    assert u.changed and u.cut and torch.equal(u.embeds[0], A)
    u = s.update([("a red cat", 0.0), ("a blue dog", 1.0)])
    assert u.cut and torch.equal(u.embeds[0], B)
    assert enc.calls == 2  # A and B were each encoded once


def test_transition_passes_through_intermediates_and_lands_on_target():
    s, _ = state()
    s.update("a red cat")
    seen = []
    for k in range(1, 5):
        u = s.update("a blue dog", transition_chunks=4, blend="slerp")
        assert u.changed and not u.cut and u.transition_left == 4 - k
        torch.testing.assert_close(u.embeds[0], interpolate(A, B, k / 4, "slerp"))
        seen.append(u.embeds[0])
    assert torch.equal(seen[-1], B)
    dists = [float((e - B).norm()) for e in [A] + seen]
    assert all(x > y for x, y in zip(dists, dists[1:]))  # strictly closer every chunk
    assert all(not torch.equal(e, A) and not torch.equal(e, B) for e in seen[:-1])
    u = s.update("a blue dog", transition_chunks=4)
    assert not u.changed and torch.equal(u.embeds[0], B)


def test_new_prompt_mid_transition_starts_from_where_it_is():
    s, _ = state()
    s.update("a red cat")
    s.update("a blue dog", transition_chunks=4)
    here = s.update("a blue dog", transition_chunks=4).embeds[0]  # halfway A -> B
    u = s.update("neon city at night", transition_chunks=2)
    assert u.changed and not u.cut and u.transition_left == 1
    torch.testing.assert_close(u.embeds[0], interpolate(here, C, 0.5))
    u = s.update("neon city at night", transition_chunks=2)
    assert torch.equal(u.embeds[0], C) and u.transition_left == 0


def test_reset_starts_fresh_and_cache_survives():
    s, enc = state()
    s.update("a red cat")
    s.update("a blue dog")
    s.reset()
    assert s.current is None
    u = s.update("a red cat")
    assert u.changed and not u.cut and enc.calls == 2  # cache hit after reset


# -- bad input never raises ----------------------------------------------------------------------
def test_bad_input_is_fixed_up_with_notices():
    s, enc = state()
    u = s.update([])
    assert u.changed and u.notices and enc.texts == [""]
    u = s.update([("a red cat", float("nan")), ("a blue dog", 1.0)])
    assert u.changed and any("weight" in n for n in u.notices) and torch.equal(u.embeds[0], B)
    u = s.update([("a red cat", 0.0)])
    assert not u.changed and "keeping the current prompt" in u.notices[0] and torch.equal(u.embeds[0], B)
    u = s.update([("a red cat", 1), ("a blue dog", 1), ("neon city at night", 1)], blend="slerp")
    assert u.changed and any("slerp" in n for n in u.notices)
    torch.testing.assert_close(u.embeds[0], blend([A, B, C], [1, 1, 1]))
    u = s.update("a red cat", transition_chunks=-3)
    assert u.cut and any("transition" in n for n in u.notices)
    u = s.update([{"text": "a blue dog", "weight": "x"}], blend="cubic")
    assert not u.changed and u.notices  # unusable weight: current prompt kept


def test_cache_keys_by_cleaned_text_but_encoder_cleans_once():
    enc = FakeEncoder()
    cache = EmbeddingCache(enc, capacity=4)
    cache.get(["a &amp;amp;amp; b"])  # cleaned once: "a &amp; b"; cleaning twice would give "a & b"
    assert enc.texts == ["a &amp;amp;amp; b"]
    cache.get([" a  &amp;amp;amp; b "])
    assert enc.calls == 1 and cache.stats.hits == 1


def test_encoder_failure_leaves_state_intact_and_retries():
    enc = FakeEncoder()
    fail = {"on": False}

    def encode(texts):
        if fail["on"]:
            raise RuntimeError("CUDA out of memory")
        return enc(texts)

    s = PromptState(EmbeddingCache(encode))
    s.update("a red cat")
    fail["on"] = True
    with pytest.raises(RuntimeError):
        s.update("a blue dog")
    assert torch.equal(s.current, A)
    fail["on"] = False
    u = s.update("a blue dog")  # same request again: tried again, not skipped as "unchanged"
    assert u.changed and u.cut and torch.equal(u.embeds[0], B)
