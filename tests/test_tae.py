"""TAEHV (taew2_1) and lighttae codecs: exact keys, frame contract, and the time-parallel stream
checked against a sequential implementation of TAEHV's frame-by-frame graph traversal written here
(MemBlock memory per block, TPool input queues, TGrow fan-out; github.com/madebyollin/taehv `taehv.py`).

Tolerance (fp32, CPU): max |a - b| <= 2e-5 * max(1, max |b|).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vacelive.engine.codecs import CodecInputError, LightTAECodec, TAECodec, random_codec
from vacelive.engine.codecs.base import WAN_LATENT_MEAN, WAN_LATENT_STD
from support import close, read_manifest

MEAN = torch.tensor(WAN_LATENT_MEAN).view(1, -1, 1, 1, 1)
STD = torch.tensor(WAN_LATENT_STD).view(1, -1, 1, 1, 1)

# Layer types by nn.Sequential index, as in taehv.py's TAEHV encoder/decoder.
ENC = ["conv", "relu", "tpool2", "conv_s2", "mem", "mem", "mem", "tpool2", "conv_s2", "mem", "mem",
       "mem", "tpool1", "conv_s2", "mem", "mem", "mem", "conv"]
DEC = ["clamp", "conv", "relu", "mem", "mem", "mem", "up", "tgrow1", "conv", "mem", "mem", "mem",
       "up", "tgrow2", "conv", "mem", "mem", "mem", "up", "tgrow2", "conv", "relu", "conv"]


pytestmark = pytest.mark.usefixtures("single_thread")


class RefTAE:
    """TAEHV applied one frame at a time (its `parallel=False` graph traversal), with the
    per-block memory kept between calls like StreamingTAEHV."""

    def __init__(self, sd):
        self.sd = sd
        self.mem = {"encoder": [None] * len(ENC), "decoder": [None] * len(DEC)}
        self.decoded_once = False

    def conv(self, key, x, stride=1, pad=1):
        return F.conv2d(x, self.sd[key + ".weight"], self.sd.get(key + ".bias"), stride, pad)

    def run(self, part, frames):
        types, mem, out = (ENC if part == "encoder" else DEC), self.mem[part], []
        queue = [(f, 0) for f in frames]
        while queue:
            x, i = queue.pop(0)
            if i == len(types):
                out.append(x)
                continue
            kind, key = types[i], f"{part}.{i}"
            if kind == "mem":
                past = torch.zeros_like(x) if mem[i] is None else mem[i]
                mem[i] = x
                h = F.relu(self.conv(key + ".conv.0", torch.cat([x, past], 1)))
                h = F.relu(self.conv(key + ".conv.2", h))
                y = F.relu(self.conv(key + ".conv.4", h) + x)
                queue.insert(0, (y, i + 1))
            elif kind.startswith("tpool"):
                stride = int(kind[-1])
                mem[i] = (mem[i] or []) + [x]
                if len(mem[i]) == stride:
                    y = F.conv2d(torch.cat(mem[i], 1), self.sd[key + ".conv.weight"])
                    mem[i] = []
                    queue.insert(0, (y, i + 1))
            elif kind.startswith("tgrow"):
                y = F.conv2d(x, self.sd[key + ".conv.weight"])
                for part_y in reversed(y.chunk(int(kind[-1]), 1)):
                    queue.insert(0, (part_y, i + 1))
            else:
                y = {"conv": lambda: self.conv(key, x), "conv_s2": lambda: self.conv(key, x, 2),
                     "relu": lambda: F.relu(x), "clamp": lambda: torch.tanh(x / 3) * 3,
                     "up": lambda: F.interpolate(x, scale_factor=2, mode="nearest")}[kind]()
                queue.insert(0, (y, i + 1))
        return out

    def encode(self, frames):  # [B, 3, T, H, W] in [-1, 1], T multiple of 4 or first call
        x = frames * 0.5 + 0.5
        if x.shape[2] % 4:
            x = torch.cat([x, x[:, :, -1:].repeat(1, 1, 4 - x.shape[2] % 4, 1, 1)], 2)
        return torch.stack(self.run("encoder", list(x.unbind(2))), 2)

    def decode(self, z):
        out = torch.stack(self.run("decoder", list(z.unbind(2))), 2).clamp(0, 1) * 2 - 1
        if not self.decoded_once:
            self.decoded_once = True
            out = out[:, :, 3:]
        return out


@pytest.fixture(scope="module")
def codec() -> TAECodec:
    return random_codec("tae", small=True, seed=2)


def clip(t: int, seed: int = 0, hw: int = 16, b: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, hw, hw, generator=g) * 2 - 1


def lat(t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, t, 2, 2, generator=torch.Generator().manual_seed(seed))


def test_full_size_keys_shapes_and_counts_match_spec_appendix_c():
    manifest = read_manifest("tae_keys.txt")
    assert len(manifest) == 128
    enc = sum(math.prod(s) for k, s in manifest.items() if k.startswith("encoder."))
    dec = sum(math.prod(s) for k, s in manifest.items() if k.startswith("decoder."))
    assert (enc, dec) == (1_470_928, 9_844_611)
    for kind in ("tae", "lighttae"):
        model = random_codec(kind, small=False, device="meta")
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == manifest
        assert model.num_parameters("encoder.") == 1_470_928
        assert model.num_parameters("decoder.") == 9_844_611
        assert model.frames_to_trim == 3


@pytest.mark.parametrize("first,latents", [(12, 3), (13, 4), (9, 3), (1, 1)])
def test_frame_counts(codec, first, latents):
    enc, dec = codec.encoder_stream(), codec.decoder_stream()
    z = enc.encode(clip(first))
    assert z.shape == (1, 16, latents, 2, 2)
    assert enc.encode(clip(12, 1)).shape[2] == 3
    with pytest.raises(CodecInputError, match="multiple of 4"):
        enc.encode(clip(13))
    assert dec.decode(lat(3)).shape == (1, 3, 9, 16, 16)
    assert dec.decode(lat(3, 1)).shape == (1, 3, 12, 16, 16)


def test_stream_decode_equals_whole_clip_and_sequential_reference(codec):
    z = lat(9, 3)
    whole = codec.decode(z)
    assert whole.shape[2] == 33
    dec, ref = codec.decoder_stream(), RefTAE(codec.state_dict())
    parts = [dec.decode(z[:, :, 3 * i: 3 * i + 3]) for i in range(3)]
    assert [p.shape[2] for p in parts] == [9, 12, 12]
    assert close(torch.cat(parts, 2), whole)
    for i, p in enumerate(parts):
        assert close(p, ref.decode(z[:, :, 3 * i: 3 * i + 3]))
    assert (whole.abs() < 0.99).float().mean() > 0.5


def test_stream_encode_equals_whole_clip_and_sequential_reference(codec):
    x = clip(36, 4)
    whole = codec.encode(x)
    enc, ref = codec.encoder_stream(), RefTAE(codec.state_dict())
    parts = [enc.encode(x[:, :, 12 * i: 12 * i + 12]) for i in range(3)]
    assert close(torch.cat(parts, 2), whole)
    for i, p in enumerate(parts):
        assert close(p, ref.encode(x[:, :, 12 * i: 12 * i + 12]))


def test_first_call_pads_with_last_frame_like_taehv(codec):
    x = clip(13, 5)
    padded = torch.cat([x, x[:, :, -1:].repeat(1, 1, 3, 1, 1)], 2)
    assert close(codec.encode(x), codec.encode(padded))
    assert close(codec.encode(x), RefTAE(codec.state_dict()).encode(x))


def test_two_encoder_streams_alternating_equal_each_alone(codec):
    a = [clip(12, 10 + i) for i in range(3)]
    b = [clip(12, 20 + i) for i in range(3)]
    sa0, sb0 = codec.encoder_stream(), codec.encoder_stream()
    alone_a, alone_b = [sa0.encode(c) for c in a], [sb0.encode(c) for c in b]
    sa, sb = codec.encoder_stream(), codec.encoder_stream()
    for i in range(3):
        assert torch.equal(sa.encode(a[i]), alone_a[i])
        assert torch.equal(sb.encode(b[i]), alone_b[i])
    assert not close(codec.encoder_stream().encode(a[1]), alone_a[1], 1e-3)


def test_lighttae_wraps_the_tae_in_wan_normalisation():
    tae = random_codec("tae", small=True, seed=3)
    light = random_codec("lighttae", small=True, seed=3)
    assert isinstance(light, LightTAECodec) and light.name == "lighttae"
    x = clip(12, 6)
    z_norm = light.encode(x)
    assert close(z_norm * STD + MEAN, tae.encode(x))  # TAE's raw output is un-normalised Wan mu
    z = lat(3, 7)
    assert close(light.decode(z), tae.decode(z * STD + MEAN))  # decoder sees z * std + mean
    # round trip of the normalisation itself
    n = light.normalizer
    assert close(n.normalize(n.denormalize(z)), z)
    assert not close(light.decode(z), tae.decode(z), 1e-3)


def test_bad_input_raises_and_keeps_state(codec):
    chunks = [clip(12, 30 + i) for i in range(3)]
    s0 = codec.encoder_stream()
    expected = [s0.encode(c) for c in chunks]
    s = codec.encoder_stream()
    s.encode(chunks[0])
    for bad in (clip(8, hw=24), clip(6), torch.zeros(1, 3, 12, 16), clip(12, b=2)):
        with pytest.raises(CodecInputError):
            s.encode(bad)
    assert torch.equal(s.encode(chunks[1]), expected[1])
    d = codec.decoder_stream()
    d.decode(lat(3))
    with pytest.raises(CodecInputError, match="reset"):
        d.decode(torch.zeros(1, 16, 3, 4, 4))
    d.reset()
    assert d.decode(torch.zeros(1, 16, 3, 4, 4)).shape == (1, 3, 9, 32, 32)


def test_channels_last_path_matches_default(codec):
    x, z = clip(24, 40), lat(6, 41)
    e0, d0 = codec.encoder_stream(), codec.decoder_stream()
    ze = [e0.encode(x[:, :, :12]), e0.encode(x[:, :, 12:])]
    fd = [d0.decode(z[:, :, :3]), d0.decode(z[:, :, 3:])]
    cl = random_codec("tae", small=True, seed=2).use_channels_last()
    e1, d1 = cl.encoder_stream(), cl.decoder_stream()
    assert close(e1.encode(x[:, :, :12]), ze[0]) and close(e1.encode(x[:, :, 12:]), ze[1])
    assert close(d1.decode(z[:, :, :3]), fd[0]) and close(d1.decode(z[:, :, 3:]), fd[1])


def test_batch_and_encode_image(codec):
    x = torch.cat([clip(12, 50), clip(12, 51)])
    assert close(codec.encode(x)[1:], codec.encode(x[1:]))
    img = clip(1, 52)[:, :, 0]
    z = codec.encode_image(img)
    assert z.shape == (1, 16, 1, 2, 2)
    assert close(z, codec.encode(img.unsqueeze(2).repeat(1, 1, 4, 1, 1)))


def test_bf16_runs(codec):
    low = random_codec("tae", small=True, seed=2, dtype=torch.bfloat16)
    z = low.encode(clip(12, 60))
    f = low.decoder_stream().decode(z)
    assert z.dtype == f.dtype == torch.bfloat16
    assert torch.isfinite(f).all() and f.shape == (1, 3, 9, 16, 16)
    assert (f.float() - codec.decode(z.float())).abs().max() < 0.15
