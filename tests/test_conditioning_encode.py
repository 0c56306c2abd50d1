"""Streaming VACE encoding: the original mask fold and temporal picks, one encoder stream per half,
latent groups aligned with the decoder's, and the exact all-zero shortcut."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vacelive.engine.codecs import random_codec
from vacelive.engine.conditioning.encode import (
    MAX_FIXED_POINT_CHECKS, ConditionStream, VaceEncoder, chunk_groups, encode_masks,
    encode_references, fold_mask, mask_time_indices, reference_context,
)

H, W = 32, 48


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def wan():
    return random_codec("wan", seed=3)


@pytest.fixture(scope="module")
def tae():
    return random_codec("tae", seed=3)


def original_encode_masks(mask):
    """vace/models/wan/wan_vace.py vace_encode_masks for one sample, verbatim math."""
    mask = mask[0]
    c, depth, height, width = mask.shape
    new_depth = int((depth + 3) // 4)
    height, width = 2 * (int(height) // 16), 2 * (int(width) // 16)
    mask = mask[0].view(depth, height, 8, width, 8).permute(2, 4, 0, 1, 3).reshape(64, depth, height, width)
    return F.interpolate(mask.unsqueeze(0), size=(new_depth, height, width), mode="nearest-exact")


def test_fold_and_time_picks_equal_the_original():
    g = torch.Generator().manual_seed(0)
    for n in (9, 12, 13):
        mask = torch.rand(1, 1, n, H, W, generator=g)
        assert torch.equal(encode_masks(mask), original_encode_masks(mask))
    assert mask_time_indices(12).tolist() == [2, 6, 10]
    assert mask_time_indices(9).tolist() == [1, 4, 7]
    assert mask_time_indices(13).tolist() == [1, 4, 8, 11]  # VACE vace_encode_masks: nearest-exact 13 -> 4
    assert mask_time_indices(81).tolist() == [1, 5, 9, 13, 17, 21, 25, 28, 32, 36, 40, 44, 48, 52, 55, 59, 63, 67, 71, 75, 79]
    # channel 8*i + j of latent pixel (y, x) is image pixel (8y + i, 8x + j)
    mask = torch.zeros(1, 1, 1, H, W)
    mask[0, 0, 0, 8 * 2 + 5, 8 * 3 + 6] = 1.0
    folded = fold_mask(mask)
    assert folded.shape == (1, 64, 1, H // 8, W // 8)
    assert folded.nonzero().tolist() == [[0, 8 * 5 + 6, 0, 2, 3]]


def test_chunk_groups():
    assert chunk_groups(9) == [(0, 1), (1, 5), (5, 9)]
    assert chunk_groups(12) == [(0, 4), (4, 8), (8, 12)]
    assert chunk_groups(13) == [(0, 1), (1, 5), (5, 9), (9, 13)]


def chunks(seed=0, sizes=(9, 12, 12)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        video = torch.rand(1, 3, n, H, W, generator=g) * 2 - 1
        mask = (torch.rand(1, 1, n, H, W, generator=g) > 0.5).float() * 0.8 + 0.1  # soft values
        out.append((video, mask))
    return out


def test_each_half_has_its_own_stream_and_the_original_math(wan):
    enc = VaceEncoder(wan)
    s_in, s_re = wan.encoder_stream(), wan.encoder_stream()
    for video, mask in chunks():
        n = video.shape[2]
        got = enc.encode(video, mask, (1, n, H, W))
        m = torch.where(mask > 0.5, 1.0, 0.0)
        want = torch.cat([s_in.encode(video * (1 - m)), s_re.encode(video * m), original_encode_masks(mask)], 1)
        assert got.shape == (1, 96, 3, H // 8, W // 8)
        assert torch.equal(got, want)
    assert enc.inactive.stream is not enc.reactive.stream


def test_a_shared_stream_would_mix_the_halves(wan):
    """Why the halves need their own streams: one stream fed both halves (the peer's Wan path)
    gives other latents from the second chunk on."""
    own_in, own_re, shared = wan.encoder_stream(), wan.encoder_stream(), wan.encoder_stream()
    diffs = []
    for video, mask in chunks(sizes=(12, 12)):
        m = torch.where(mask > 0.5, 1.0, 0.0)
        own = torch.cat([own_in.encode(video * (1 - m)), own_re.encode(video * m)], 1)
        mixed = torch.cat([shared.encode(video * (1 - m)), shared.encode(video * m)], 1)
        diffs.append((own - mixed).abs().max().item())
    assert diffs[0] > 1e-3 and diffs[1] > 1e-3


def first_affected_latent(codec, n, impulse, warmup, h=16, w=16):
    """Index of the first latent frame that changes when frame `impulse` of an n-frame chunk is
    lit (None: no latent of this chunk sees it)."""
    outs = []
    for lit in (False, True):
        s = ConditionStream(codec)
        if warmup:
            s.encode(torch.zeros(1, 3, 9, h, w), (1, 9, h, w))
        x = torch.zeros(1, 3, n, h, w)
        if lit:
            x[:, :, impulse] = 0.9
        outs.append(s.encode(x, (1, n, h, w)))
    diff = (outs[0] - outs[1]).abs().amax(dim=(0, 1, 3, 4))
    hit = (diff > 0).nonzero()
    return None if len(hit) == 0 else int(hit[0])


@pytest.mark.parametrize("kind", ["wan", "tae"])
def test_latents_cover_the_decoder_groups_whatever_chunk_a_stream_starts_on(kind, wan, tae):
    """A frame first shows up in the latent of its group: stream's first chunk [0] [1-4] [5-8];
    later chunks [0-3] [4-7] [8-11], also for a stream that starts on a 12-frame chunk (Wan:
    that chunk's frames 0-2 are not seen; the group is represented by frame 3)."""
    codec = wan if kind == "wan" else tae
    cases = [(9, False), (12, True), (12, False)]
    for n, warm in cases:
        groups = chunk_groups(n)
        for f in range(n):
            want = next(i for i, (a, b) in enumerate(groups) if a <= f < b)
            if kind == "wan" and not warm and n == 12 and f < 3:
                want = None
            assert first_affected_latent(codec, n, f, warm) == want, (kind, n, warm, f)


@pytest.mark.parametrize("kind", ["wan", "tae"])
def test_all_zero_shortcut_is_exactly_real_encoding(kind, wan, tae):
    """Control (mask all ones): the inactive half is all zero; after the stream reaches a fixed
    point its output comes from a cache - bit-identical to really encoding, and counted. A real
    mask in between interrupts the cache and the stream carries on with the right history."""
    codec = wan if kind == "wan" else tae
    enc = VaceEncoder(codec)
    ref = codec.encoder_stream()
    g = torch.Generator().manual_seed(1)
    schedule = ["ones"] * 13 + ["mask"] + ["ones"] * 13 if kind == "wan" else ["ones"] * 5 + ["mask"] + ["ones"] * 5
    hits_seen = 0
    h, w = 16, 16
    for i, what in enumerate(schedule):
        n = 9 if i == 0 else 12
        video = torch.rand(1, 3, n, h, w, generator=g) * 2 - 1
        mask = None if what == "ones" else (torch.rand(1, 1, n, h, w, generator=g) > 0.5).float()
        got = enc.encode(video, mask, (1, n, h, w))
        m = torch.ones_like(video[:, :1]) if mask is None else mask
        want = ref.encode(video * (1 - m))
        assert torch.equal(got[:, :16], want), (kind, i)
        if what == "mask":
            hits_seen = enc.inactive.zero_hits
            assert hits_seen > 0  # the cache was in use before the real mask
    assert enc.inactive.zero_hits > hits_seen  # ... and again after a new fixed point
    assert enc.inactive.encoder_calls + enc.inactive.zero_hits == len(schedule)
    assert enc.reactive.zero_hits == 0 and enc.reactive.encoder_calls == len(schedule)
    assert MAX_FIXED_POINT_CHECKS >= 16


def test_no_video_encodes_zeros_in_both_halves_and_mask_ones(tae):
    enc = VaceEncoder(tae)
    a, b = tae.encoder_stream(), tae.encoder_stream()
    for n in (9, 12, 12):
        got = enc.encode(None, None, (1, n, H, W))
        z = torch.zeros(1, 3, n, H, W)
        z = torch.cat([z[:, :, :1].expand(-1, -1, 3, -1, -1), z], 2) if n == 9 else z  # TAE first-call alignment
        assert torch.equal(got[:, :16], a.encode(z)) and torch.equal(got[:, 16:32], b.encode(z))
        assert torch.equal(got[:, 32:], torch.ones_like(got[:, 32:]))


def test_references_are_encoded_one_by_one_and_padded_like_the_original(wan):
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    lat = encode_references(wan, images)
    assert lat.shape == (1, 16, 2, H // 8, W // 8)
    for i in range(2):
        assert torch.allclose(lat[:, :, i:i + 1], wan.encode_image(images[i:i + 1]), atol=1e-6)
    ctx = reference_context(lat)
    assert ctx.shape == (1, 96, 2, H // 8, W // 8)
    assert torch.equal(ctx[:, :16], lat) and not ctx[:, 16:].any()
