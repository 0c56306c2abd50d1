"""What a prompt cut re-caches (engine.recache): recache="exact" is LongLive's window re-cache,
"newest" re-runs only the newest chunk's latent frames. Both are checked against a plain
reimplementation: the cache right before the cut, a copy of it, and one DiT forward over the
clean latents the rule names (captured from the decoder's input, not from the generator's
history), at their own start frame, under the new prompt."""
from __future__ import annotations

import copy

import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.pipelines import get_recipe
from vacelive.engine.recache import RECACHE_MODES, recache_span
from vacelive.engine.request import ChunkRequest, Prompt

pytestmark = pytest.mark.usefixtures("single_thread")
W = H = 32


def make(recache: str, vace: bool = False) -> StreamGenerator:
    return StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=vace, cfg=tiny_config(num_layers=2),
                                  recache=recache)


def clean_latents(gen) -> list[torch.Tensor]:
    """Every chunk's clean latents as the decoder receives them, one [1, C, 1, h, w] per frame."""
    frames: list[torch.Tensor] = []
    decode = gen.decoder.decode

    def spy(x0):
        frames.extend(x0[:, :, i:i + 1].clone() for i in range(x0.shape[2]))
        return decode(x0)

    gen.decoder.decode = spy
    return frames


def cache_after_recache(gen, request) -> tuple[torch.Tensor, object]:
    """Run one chunk; return the KV storage and state as they were right after its re-cache
    (before the chunk's own passes wrote anything)."""
    seen = {}
    ensure = gen._ensure_rope_room

    def spy(notices):
        seen["storage"], seen["state"] = gen.kv.storage.clone(), gen.kv.state
        return ensure(notices)

    gen._ensure_rope_room = spy
    gen.step(request)
    gen._ensure_rope_room = ensure
    return seen["storage"], seen["state"]


def plain_recache(gen, before_storage, before_state, latents: list[torch.Tensor], start: int, prompt: str):
    """The rule, written out: a copy of the cache before the cut, one forward of the named clean
    latents at their own start frame, at the context timestep, under the new prompt."""
    kv = copy.copy(gen.kv)
    kv.storage = before_storage.clone()
    kv.state = before_state
    text = gen.model.prepare_text(gen.text_encoder.encode([prompt]))
    with torch.no_grad():
        gen.model(torch.cat(latents, dim=2), gen.schedule.plan(1).context_tensor, text, kv, start)
    return kv.storage, kv.state


A, B = ChunkRequest(prompts=[Prompt("a red cat")], steps=2), ChunkRequest(prompts=[Prompt("blue sea")], steps=2)


@pytest.mark.parametrize("mode, chunks_before, first_recached, other_starts", [
    ("newest", 6, 15, (14, 16)),  # late cut at frame 18: only frames 15..17
    # LongLive: the last 12 frames, 6..17. Frames 6..8 map to ring slots that frames 15..17 of the
    # same forward take, so their K/V are never stored nor attended: any start <= 9 gives the same
    # cache (a fact of the rule, checked bitwise here); starting at 10 drops a stored frame.
    ("exact", 6, 6, (10,)),
    ("newest", 1, 0, (1,)),  # first cut after a reset (frame 3): frames 0..2 in both modes
    ("exact", 1, 0, (1,)),
    ("newest", 2, 3, (2, 4)),  # frame 6: newest re-caches 3..5 and keeps the sink's old K/V
    ("exact", 2, 0, (1,)),  # exact re-caches 0..5, rewriting the sink
])
def test_recache_rewrites_exactly_the_frames_the_rule_names(mode, chunks_before, first_recached, other_starts):
    gen = make(mode)
    clean = clean_latents(gen)
    for _ in range(chunks_before):
        gen.step(A)
    frame = gen.frame
    before_storage, before_state = gen.kv.storage.clone(), gen.kv.state
    got_storage, got_state = cache_after_recache(gen, B)
    want_storage, want_state = plain_recache(gen, before_storage, before_state, clean[first_recached:frame],
                                             first_recached, "blue sea")
    assert got_state == want_state
    assert torch.equal(got_storage, want_storage)
    assert gen.counters["recaches"] == 1
    # the rule is not vacuous: the cache did change, and an off-by-one start would differ
    assert not torch.equal(got_storage, before_storage)
    for start in other_starts:
        other, _ = plain_recache(gen, before_storage, before_state, clean[start:frame], start, "blue sea")
        assert not torch.equal(got_storage, other), start


def test_newest_keeps_the_old_prompt_in_older_ring_slots_and_the_sink():
    gen = make("newest")
    for _ in range(6):
        gen.step(A)
    before = gen.kv.storage.clone()
    after, state = cache_after_recache(gen, B)
    ft = gen.kv.frame_tokens
    slot = {f: s for s, f in enumerate(state.slot_frame)}
    for f in (0, 1, 2, 9, 10, 11, 12, 13, 14):  # sink and the ring frames older than the newest chunk
        s = slot[f]
        assert torch.equal(after[:, :, :, s * ft:(s + 1) * ft], before[:, :, :, s * ft:(s + 1) * ft]), f
    for f in (15, 16, 17):
        s = slot[f]
        assert not torch.equal(after[:, :, :, s * ft:(s + 1) * ft], before[:, :, :, s * ft:(s + 1) * ft]), f


def test_streams_of_both_modes_agree_until_a_late_cut_and_on_a_first_cut():
    def run(mode, requests):
        gen = make(mode)
        return [gen.step(r).frames.clone() for r in requests]

    early = [A, B, B, A, A]  # cuts at frame 3 (same frames re-cached) ... and at frame 9 (not)
    e, n = run("exact", early), run("newest", early)
    assert all(torch.equal(a, b) for a, b in zip(e[:3], n[:3]))
    late = [A] * 6 + [B] * 2
    e, n = run("exact", late), run("newest", late)
    assert all(torch.equal(a, b) for a, b in zip(e[:6], n[:6]))
    assert not torch.equal(e[6], n[6])  # the cut chunk sees a different cache


def test_recache_span_and_validation():
    ll = get_recipe("longlive")
    assert RECACHE_MODES == ("exact", "newest")
    assert recache_span("exact", ll) == 12 and recache_span("newest", ll) == 3
    assert recache_span("newest", get_recipe("memflow")) == 3
    with pytest.raises(ValueError, match="recache"):
        recache_span("half", ll)
    with pytest.raises(ValueError, match="recache"):
        make("sometimes")
    gen = make("newest")
    assert gen.describe()["recache"] == "newest"
