"""Every VACE task and the listed compositions: the 96-channel context holds the right content in
the right channels and latent frames, checked against the original VACE math (ali-vilab/VACE
`vace/models/wan/wan_vace.py`)
run on hand-built expected pixels with two fresh encoder streams."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vacelive.engine.codecs import random_codec
from vacelive.engine.codecs.tae import TAECodec
from vacelive.engine.conditioning import VaceConditioner, infer_tasks
from vacelive.engine.request import ChunkRequest, Extension, Outpaint

H, W = 32, 48
GRAY = 0.5


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tae():
    return random_codec("tae", seed=5)


@pytest.fixture(scope="module")
def wan():
    return random_codec("wan", seed=5)


def pics(n, c=3, seed=0, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def as01(a):
    """uint8 [F, H, W, C] -> float [F, C, H, W] in 0..1, exactly as the engine converts."""
    return torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255.0)


def original_encode_masks(mask):
    mask = mask[0]
    _, depth, height, width = mask.shape
    m = mask[0].view(depth, height // 8, 8, width // 8, 8).permute(2, 4, 0, 1, 3).reshape(64, depth, height // 8, width // 8)
    return F.interpolate(m.unsqueeze(0), size=((depth + 3) // 4, height // 8, width // 8), mode="nearest-exact")


class Original:
    """The original vace_encode_frames / vace_encode_masks / vace_latent on one chunk's expected
    pixels, with an encoder stream per half. A stream's first call is aligned to the decoder's
    latent groups (documented in engine/conditioning/encode.py)."""

    def __init__(self, codec):
        self.codec = codec
        self.streams = (codec.encoder_stream(), codec.encoder_stream())

    def _encode(self, s, x):
        n = x.shape[2]
        if s.first and isinstance(self.codec, TAECodec) and n == 9:
            x = torch.cat([x[:, :, :1].expand(-1, -1, 3, -1, -1), x], 2)
        elif s.first and not isinstance(self.codec, TAECodec) and n == 12:
            x = x[:, :, 3:]
        return s.encode(x)

    def chunk(self, n, video01=None, mask=None):
        v = torch.zeros(1, 3, n, H, W) if video01 is None else (video01 * 2.0 - 1.0).transpose(0, 1)[None]
        m = torch.ones(1, 1, n, H, W) if mask is None else mask.transpose(0, 1)[None]
        mb = torch.where(m > 0.5, 1.0, 0.0)
        z = [self._encode(s, x) for s, x in zip(self.streams, (v * (1 - mb), v * mb))]
        return torch.cat(z + [original_encode_masks(m)], 1)


def close(a, b):
    torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


def canvas(n, mask_value=None):
    v = torch.full((n, 3, H, W), GRAY)
    return v if mask_value is None else (v, torch.full((n, 1, H, W), float(mask_value)))


# ---- implicit task inference -------------------------------------------------------------------------
V, M = np.zeros((12, H, W, 4), np.uint8), np.zeros((H, W), np.uint8)
EXT = Extension("firstframe", first=np.zeros((H, W, 3), np.uint8))


@pytest.mark.parametrize("fields, sticky, running, expected", [
    ({}, False, False, ()),
    ({"refs": [V[0]]}, False, False, ("r2v",)),
    ({}, True, False, ("r2v",)),  # sticky references
    ({"refs": []}, True, False, ()),  # cleared
    ({"video": V}, False, False, ("control",)),
    ({"video": V, "annotator": "scribble"}, False, False, ("control",)),
    ({"video": V, "mask": M}, False, False, ("inpaint",)),
    ({"mask": M}, False, False, ()),  # a mask needs a video
    ({"video": V, "outpaint": Outpaint(left=0.2)}, False, False, ("outpaint",)),
    ({"video": V, "outpaint": Outpaint()}, False, False, ("control",)),  # all sides 0: no outpaint
    ({"outpaint": Outpaint(top=0.2)}, False, False, ()),  # nothing to shrink
    ({"extension": EXT}, False, False, ("extension",)),
    ({}, False, True, ("extension",)),  # a running extension continues
    ({"extension": Extension("firstframe", chunks=0)}, False, True, ()),  # chunks 0 cancels it
    ({"refs": [V[0]], "video": V}, False, False, ("r2v", "control")),
    ({"video": V, "mask": M}, True, False, ("r2v", "inpaint")),
    ({"video": V, "extension": EXT}, False, False, ("control", "extension")),
    ({"outpaint": Outpaint(right=0.3), "extension": EXT}, False, False, ("outpaint", "extension")),
    ({"video": V, "mask": M, "outpaint": Outpaint(left=0.1), "extension": EXT}, True, False,
     ("r2v", "inpaint", "outpaint", "extension")),
])
def test_tasks_are_inferred_from_what_the_request_carries(fields, sticky, running, expected):
    assert infer_tasks(ChunkRequest(**fields), sticky_refs=sticky, extension_running=running).names == expected


# ---- single tasks ------------------------------------------------------------------------------------------
def test_control_video(wan):
    cond, ref = VaceConditioner(wan, W, H, "cpu", torch.float32), Original(wan)
    for i, (n, c) in enumerate([(9, 3), (12, 1), (12, 4)]):
        video = pics(n, c, seed=i)
        got = cond.prepare(ChunkRequest(video=video), first_chunk=i == 0, num_frames=n)
        expected = as01(video[..., :3] if c > 1 else np.repeat(video, 3, -1))  # gray repeated, alpha dropped
        close(got.context, ref.chunk(n, expected))
        assert got.prefix_latents is None and (got.context[:, 32:] == 1).all()  # mask all ones


def test_inpainting_static_and_per_frame_masks_from_any_channel(tae):
    cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
    static = np.zeros((H, W), np.uint8)
    static[8:24, 8:40] = 255
    static[0:8, 0:8] = 128  # soft: folded as given, binarised (> 0.5) for the frames
    per_frame = pics(12, 4, seed=7)
    per_frame[..., 3] = np.where(per_frame[..., 3] > 127, 255, 0)
    red = pics(1, 3, seed=8)[0]
    cases = [
        (9, {"mask": static}, torch.from_numpy(static).float().div(255)[None, None].expand(9, -1, -1, -1)),
        (12, {"mask": per_frame}, as01(per_frame)[:, 3:]),
        (12, {"mask": red, "mask_channel": "red"}, as01(red[None])[:, :1].expand(12, -1, -1, -1)),
    ]
    for i, (n, fields, mask) in enumerate(cases):
        video = pics(n, seed=20 + i)
        got = cond.prepare(ChunkRequest(video=video, **fields), first_chunk=i == 0, num_frames=n)
        close(got.context, ref.chunk(n, as01(video), mask))
        picks = [1, 4, 7] if n == 9 else [2, 6, 10]
        fold = mask[picks, 0].view(3, H // 8, 8, W // 8, 8).permute(2, 4, 0, 1, 3).reshape(64, 3, H // 8, W // 8)
        assert torch.equal(got.context[0, 32:], fold)  # mask channels = the 8x8 fold of the mask


def test_outpainting_shrinks_the_video_and_generates_the_border(tae):
    cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
    for i, n in enumerate((9, 12)):
        video = pics(n, seed=i, w=36)  # exactly the room left by 25 % on the left
        got = cond.prepare(ChunkRequest(video=video, outpaint=Outpaint(left=0.25)), first_chunk=i == 0, num_frames=n)
        v, m = canvas(n, 1)
        v[..., 12:] = as01(video)
        m[..., 12:] = 0.0
        close(got.context, ref.chunk(n, v, m))
        assert (got.context[0, 32:, :, :, :1] == 1).all() and (got.context[0, 32:, :, :, 2:] == 0).all()


def test_reference_images_live_in_the_prefix_only(tae):
    cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
    image = pics(1, seed=3)[0]
    lat = tae.encode_image(as01(image[None]) * 2.0 - 1.0)
    for i, n in enumerate((9, 12, 12)):
        got = cond.prepare(ChunkRequest(refs=[image] if i == 0 else None), first_chunk=i == 0, num_frames=n)
        assert got.context.shape == (1, 96, 4, H // 8, W // 8)
        close(got.prefix_latents, lat)
        close(got.context[:, :16, :1], lat)
        assert not got.context[:, 16:, :1].any()  # [ref | 0 | mask 0]
        close(got.context[:, :, 1:], ref.chunk(n))  # the chunk part: no video, mask ones, no ref


def test_sticky_references_encoded_once_replaced_refit_cleared(tae):
    cond = VaceConditioner(tae, W, H, "cpu", torch.float32)
    a, b = pics(1, seed=1)[0], pics(1, 4, seed=2, h=40, w=40)[0]
    first = cond.prepare(ChunkRequest(refs=[a]), first_chunk=True, num_frames=9)
    for _ in range(5):
        later = cond.prepare(ChunkRequest(), first_chunk=False, num_frames=12)
    assert torch.equal(later.prefix_latents, first.prefix_latents)  # chunk 5 still conditioned
    assert cond.stats()["reference_encodes"] == 1
    cond.prepare(ChunkRequest(refs=[a.copy()]), first_chunk=False, num_frames=12)
    assert cond.stats()["reference_encodes"] == 1  # same pictures sent again: not re-encoded
    two = cond.prepare(ChunkRequest(refs=[a, b]), first_chunk=False, num_frames=12)
    assert two.prefix_latents.shape[2] == 2 and cond.stats()["reference_encodes"] == 2
    assert torch.equal(two.prefix_latents[:, :, :1], first.prefix_latents)
    assert cond.stats()["reference_images_encoded"] == 2  # a was kept, only b encoded
    boxed = cond.prepare(ChunkRequest(ref_fit="letterbox"), first_chunk=False, num_frames=12)
    assert cond.stats()["reference_encodes"] == 3 and cond.stats()["reference_images_encoded"] == 3
    assert (cond.refs.images[1, :, :, :4] == 1.0).all()  # square on a white canvas (bars = white)
    assert torch.equal(boxed.prefix_latents[:, :, 0], two.prefix_latents[:, :, 0])  # a fills the frame either way
    assert not torch.equal(boxed.prefix_latents[:, :, 1], two.prefix_latents[:, :, 1])
    cond.prepare(ChunkRequest(refs=[np.zeros((H, W, 3), np.int32)]), first_chunk=False, num_frames=12)
    assert "previous references stay" in cond.notices[-1] and len(cond.refs) == 2
    assert cond.prepare(ChunkRequest(refs=[]), first_chunk=False, num_frames=12) is None  # cleared
    assert cond.prepare(ChunkRequest(), first_chunk=False, num_frames=12) is None
    many = cond.prepare(ChunkRequest(refs=[a] * 4), first_chunk=False, num_frames=12)
    assert many.prefix_latents.shape[2] == 3 and "at most 3" in cond.notices[0]


# ---- extension -------------------------------------------------------------------------------------------
A, B = pics(1, seed=40)[0], pics(1, seed=41)[0]
CA, CB = pics(14, seed=42), pics(5, seed=43)


def layout(n, anchors):
    """Expected (video, mask) of one chunk: {frame: picture [3, H, W]} kept (mask 0), gray elsewhere."""
    v, m = canvas(n, 1)
    for f, pic in anchors.items():
        v[f], m[f] = pic, 0.0
    return v, m


a01, b01, ca01, cb01 = as01(A[None])[0], as01(B[None])[0], as01(CA), as01(CB)
EXTENSIONS = {
    # name: (Extension, first chunk of the stream?, [per chunk: {frame: picture} or "gray"], then None)
    "firstframe@stream-start": (Extension("firstframe", first=A), True, [{0: a01}]),
    "firstframe x2": (Extension("firstframe", first=A, chunks=2), False, [{f: a01 for f in range(4)}, "gray"]),
    "lastframe x2": (Extension("lastframe", last=B, chunks=2), False, ["gray", {f: b01 for f in range(8, 12)}]),
    # long enough for TAE's all-zero cache to serve the gray chunks and the anchor's zero reactive half
    "lastframe x6": (Extension("lastframe", last=B, chunks=6), False, ["gray"] * 5 + [{f: b01 for f in range(8, 12)}]),
    "firstlastframe": (Extension("firstlastframe", first=A, last=B), False,
                       [{**{f: a01 for f in range(4)}, **{f: b01 for f in range(8, 12)}}]),
    "firstlastframe@stream-start": (Extension("firstlastframe", first=A, last=B), True,
                                    [{0: a01, **{f: b01 for f in range(5, 9)}}]),
    "firstclip": (Extension("firstclip", first=CA[:6]), False, [{f: ca01[f] for f in range(6)}]),
    "lastclip x2": (Extension("lastclip", last=CA, chunks=2), False,
                    [{10: ca01[0], 11: ca01[1]}, {f: ca01[f + 2] for f in range(12)}]),
    "firstlastclip": (Extension("firstlastclip", first=CB, last=CA[:3]), False,
                      [{**{f: cb01[f] for f in range(5)}, **{9: ca01[0], 10: ca01[1], 11: ca01[2]}}]),
}


@pytest.mark.parametrize("name", list(EXTENSIONS))
def test_extension_anchors_land_in_the_right_groups_with_mask_0(name, tae):
    ext, at_start, plan = EXTENSIONS[name]
    cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
    for i, anchors in enumerate(plan):
        n = 9 if at_start and i == 0 else 12
        got = cond.prepare(ChunkRequest(extension=ext if i == 0 else None), first_chunk=at_start and i == 0, num_frames=n)
        v, m = (None, None) if anchors == "gray" else layout(n, anchors)
        close(got.context, ref.chunk(n, v, m))
        if n == 12 and anchors != "gray":
            for g in range(3):  # a fully anchored 4-frame group reads mask 0 in its latent frame
                if all(f in anchors for f in range(4 * g, 4 * g + 4)):
                    assert not got.context[0, 32:, g].any()
    # the span is over: the next chunk inherits nothing (it continues from the KV cache)
    assert cond.prepare(ChunkRequest(), first_chunk=False, num_frames=12) is None
    if name == "lastframe x6":
        assert cond.stats()["zero_hits"] == 3  # both halves in chunk 4, the anchor chunk's reactive half


def test_extension_problems_are_explained(tae):
    cond = VaceConditioner(tae, W, H, "cpu", torch.float32)
    assert cond.prepare(ChunkRequest(extension=Extension("firstlastframe", first=A)), first_chunk=False, num_frames=12) is None
    assert "needs a last image" in cond.notices[0]
    got = cond.prepare(ChunkRequest(extension=Extension("firstlastclip", first=CA, last=CA)), first_chunk=False, num_frames=12)
    assert got is not None and "first 12" in cond.notices[0] and "only 0" in cond.notices[1]
    cond.prepare(ChunkRequest(extension=Extension("lastframe", last=B, chunks=3)), first_chunk=False, num_frames=12)
    assert cond.prepare(ChunkRequest(extension=Extension("lastframe", chunks=0)), first_chunk=False, num_frames=12) is None


# ---- compositions ----------------------------------------------------------------------------------------
def test_references_plus_control_and_plus_inpainting_keep_the_chunk_aligned(tae):
    """The reference prefix never shifts the chunk's frames (the peer drops n_refs control frames)."""
    image = pics(1, seed=50)[0]
    for fields in ({}, {"mask": pics(12, 1, seed=51)}):
        cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
        for i, n in enumerate((9, 12)):
            video = pics(n, seed=52 + i)
            req = ChunkRequest(video=video, refs=[image, image[::-1].copy()] if i == 0 else None, **fields)
            got = cond.prepare(req, first_chunk=i == 0, num_frames=n)
            mask = as01(fields["mask"])[-n:] if fields else None  # the newest n frames
            assert got.context.shape[2] == 2 + 3 and got.prefix_latents.shape[2] == 2
            close(got.context[:, :, 2:], ref.chunk(n, as01(video), mask))
            assert not got.context[:, 16:, :2].any()


def test_control_plus_extension(tae):
    cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
    video = pics(12, seed=60)
    got = cond.prepare(ChunkRequest(video=video, extension=Extension("firstlastframe", first=A, last=B)),
                       first_chunk=False, num_frames=12)
    v, m = layout(12, {**{f: a01 for f in range(4)}, **{f: b01 for f in range(8, 12)}})
    v[4:8], m[4:8] = as01(video)[4:8], 1.0  # the control map steers the generated middle
    close(got.context, ref.chunk(12, v, m))


def test_extension_plus_outpainting(tae):
    cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
    anchor = pics(1, seed=61, w=36)[0]
    got = cond.prepare(ChunkRequest(extension=Extension("firstframe", first=anchor), outpaint=Outpaint(left=0.25)),
                       first_chunk=False, num_frames=12)
    v, m = canvas(12, 1)
    v[:4, :, :, 12:], m[:4, :, :, 12:] = as01(anchor[None]), 0.0
    close(got.context, ref.chunk(12, v, m))


def test_inpainting_plus_extension_and_control_inside_the_mask(tae):
    video, mask = pics(12, seed=70), np.zeros((H, W), np.uint8)
    mask[:, 24:] = 255
    m01 = torch.from_numpy(mask).float().div(255)[None, None].expand(12, -1, -1, -1)
    cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
    got = cond.prepare(ChunkRequest(video=video, mask=mask, extension=Extension("firstframe", first=A)),
                       first_chunk=False, num_frames=12)
    v, m = as01(video), m01.clone()
    v[:4] = torch.where(m01[:4] > 0.5, a01, v[:4])  # the anchor fills the regenerated part
    m[:4] = 0.0
    close(got.context, ref.chunk(12, v, m))
    cond, ref = VaceConditioner(tae, W, H, "cpu", torch.float32), Original(tae)
    got = cond.prepare(ChunkRequest(video=video, mask=mask, annotator="gray"), first_chunk=False, num_frames=12)
    v = as01(video)
    gray = (0.299 * v[:, :1] + 0.587 * v[:, 1:2] + 0.114 * v[:, 2:3]).expand(-1, 3, -1, -1)
    close(got.context, ref.chunk(12, torch.where(m01 > 0.5, gray, v), m01))


def test_the_halves_the_encoder_streams_receive(tae, monkeypatch):
    """Pixel level: inactive = video where the mask keeps (zero where mask = 1), reactive = video
    where it regenerates; an all-ones mask or no video sends None (all zero) to the stream."""
    from vacelive.engine.conditioning.encode import ConditionStream

    seen = []
    real = ConditionStream.encode

    def spy(self, frames, shape):
        seen.append(None if frames is None else frames.clone())
        return real(self, frames, shape)

    monkeypatch.setattr(ConditionStream, "encode", spy)
    cond = VaceConditioner(tae, W, H, "cpu", torch.float32)
    video, mask = pics(12, seed=80), pics(12, 1, seed=81)
    cond.prepare(ChunkRequest(video=video, mask=mask), first_chunk=False, num_frames=12)
    inactive, reactive = seen
    v = (as01(video) * 2.0 - 1.0).transpose(0, 1)[None]
    m = (as01(mask) > 0.5).float().transpose(0, 1)[None]
    assert not (inactive * m).any() and not (reactive * (1 - m)).any()
    assert torch.equal(inactive + reactive, v)
    seen.clear()
    cond.prepare(ChunkRequest(video=video), first_chunk=False, num_frames=12)
    assert seen[0] is None and torch.equal(seen[1], v)  # control: inactive all zero
    seen.clear()
    cond.prepare(ChunkRequest(refs=[video[0]]), first_chunk=False, num_frames=12)
    assert seen == [None, None]  # R2V alone: no video, mask ones
