"""Wan2.1 VAE codec: exact checkpoint layout, frame contract, and the time-parallel stream checked
against a frame-by-frame implementation of the reference semantics written here (Wan2.1 `wan/modules/vae.py`):
per-call feature-cache lists, frame 0 then groups of 4 for the encoder, one latent at a time for
the decoder, the downsample3d first-call rule and the upsample3d "Rep" rule.

Tolerance (fp32, CPU): max |a - b| <= 2e-5 * max(1, max |b|); differences come only from batching
frames differently inside the convolutions.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vacelive.engine.codecs import CodecInputError, WanVAECodec, latent_frames, pixel_frames, random_codec
from vacelive.engine.codecs.base import WAN_LATENT_MEAN, WAN_LATENT_STD
from support import close, read_manifest



pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------
# Reference semantics, frame by frame (independent of engine/codecs/wan_vae.py; shares only the
# weights through state-dict keys).
# ---------------------------------------------------------------------------------------------
class RefWanVAE:
    def __init__(self, sd: dict[str, torch.Tensor], cfg) -> None:
        self.sd, self.cfg = sd, cfg
        self.z = cfg.z_dim
        self.mean = torch.tensor(WAN_LATENT_MEAN).view(1, -1, 1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(WAN_LATENT_STD).view(1, -1, 1, 1, 1)

    # -- layers ----------------------------------------------------------------------------------
    def cconv(self, key, x, feat, idx, pad=1):
        """CausalConv3d with the reference's per-layer 2-frame cache."""
        i = idx[0]
        cache_x = x[:, :, -2:].clone()
        if cache_x.shape[2] < 2 and feat[i] is not None:
            cache_x = torch.cat([feat[i][:, :, -1:], cache_x], 2)
        t_pad = 2 * pad
        if feat[i] is not None:
            x = torch.cat([feat[i], x], 2)
            t_pad -= feat[i].shape[2]
        x = F.pad(x, (pad, pad, pad, pad, t_pad, 0))
        feat[i] = cache_x
        idx[0] += 1
        return F.conv3d(x, self.sd[key + ".weight"], self.sd[key + ".bias"])

    def rms(self, key, x):
        g = self.sd[key + ".gamma"]
        return F.normalize(x, dim=1) * (x.shape[1] ** 0.5) * g

    def res(self, p, x, feat, idx):
        h = x
        if p + ".shortcut.weight" in self.sd:
            h = F.conv3d(x, self.sd[p + ".shortcut.weight"], self.sd[p + ".shortcut.bias"])
        x = F.silu(self.rms(p + ".residual.0", x))
        x = self.cconv(p + ".residual.2", x, feat, idx)
        x = F.silu(self.rms(p + ".residual.3", x))
        x = self.cconv(p + ".residual.6", x, feat, idx)
        return x + h

    def attn(self, p, x):
        b, c, t, h, w = x.shape
        ident = x
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        x = self.rms(p + ".norm", x)
        qkv = F.conv2d(x, self.sd[p + ".to_qkv.weight"], self.sd[p + ".to_qkv.bias"])
        q, k, v = qkv.reshape(b * t, 1, c * 3, -1).permute(0, 1, 3, 2).contiguous().chunk(3, -1)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        x = F.conv2d(x, self.sd[p + ".proj.weight"], self.sd[p + ".proj.bias"])
        return x.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4) + ident

    def resample(self, p, mode, x, feat, idx):
        b, c, t, h, w = x.shape
        if mode == "upsample3d":
            i = idx[0]
            if feat[i] is None:
                feat[i] = "Rep"
                idx[0] += 1
            else:
                cache_x = x[:, :, -2:].clone()
                if cache_x.shape[2] < 2 and not isinstance(feat[i], str):
                    cache_x = torch.cat([feat[i][:, :, -1:], cache_x], 2)
                if cache_x.shape[2] < 2 and isinstance(feat[i], str):
                    cache_x = torch.cat([torch.zeros_like(cache_x), cache_x], 2)
                past = None if isinstance(feat[i], str) else feat[i]
                xin = x if past is None else torch.cat([past, x], 2)
                xin = F.pad(xin, (0, 0, 0, 0, 2 if past is None else 0, 0))
                x = F.conv3d(xin, self.sd[p + ".time_conv.weight"], self.sd[p + ".time_conv.bias"])
                feat[i] = cache_x
                idx[0] += 1
                x = x.reshape(b, 2, c, t, h, w)
                x = torch.stack((x[:, 0], x[:, 1]), 3).reshape(b, c, t * 2, h, w)
        t = x.shape[2]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        w_, b_ = self.sd[p + ".resample.1.weight"], self.sd[p + ".resample.1.bias"]
        if mode.startswith("up"):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest-exact")
            x = F.conv2d(x, w_, b_, padding=1)
        else:
            x = F.conv2d(F.pad(x, (0, 1, 0, 1)), w_, b_, stride=2)
        x = x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        if mode == "downsample3d":
            i = idx[0]
            if feat[i] is None:
                feat[i] = x.clone()
            else:
                cache_x = x[:, :, -1:].clone()
                x = F.conv3d(torch.cat([feat[i][:, :, -1:], x], 2), self.sd[p + ".time_conv.weight"],
                             self.sd[p + ".time_conv.bias"], stride=(2, 1, 1))
                feat[i] = cache_x
            idx[0] += 1
        return x

    def stages(self, prefix):
        """(kind, key, mode) for every block of downsamples/upsamples, rebuilt from the config."""
        cfg, out = self.cfg, []
        mult = cfg.dim_mult
        if prefix == "encoder.downsamples":
            dims, n_res, modes = [cfg.dim * u for u in (1, *mult)], cfg.num_res_blocks, \
                cfg.temporal_downsample
            names = ("downsample3d", "downsample2d")
        else:
            dims, n_res, modes = [cfg.dim * u for u in (mult[-1], *mult[::-1])], \
                cfg.num_res_blocks + 1, cfg.temporal_downsample[::-1]
            names = ("upsample3d", "upsample2d")
        j = 0
        for i in range(len(dims) - 1):
            for _ in range(n_res):
                out.append(("res", f"{prefix}.{j}", None))
                j += 1
            if i != len(mult) - 1:
                out.append(("resample", f"{prefix}.{j}", names[0] if modes[i] else names[1]))
                j += 1
        return out

    def middle_head(self, p, x, feat, idx):
        x = self.res(p + ".middle.0", x, feat, idx)
        x = self.attn(p + ".middle.1", x)
        x = self.res(p + ".middle.2", x, feat, idx)
        x = F.silu(self.rms(p + ".head.0", x))
        return self.cconv(p + ".head.2", x, feat, idx)

    def encoder(self, x, feat):
        idx = [0]
        x = self.cconv("encoder.conv1", x, feat, idx)
        for kind, key, mode in self.stages("encoder.downsamples"):
            x = self.res(key, x, feat, idx) if kind == "res" else \
                self.resample(key, mode, x, feat, idx)
        return self.middle_head("encoder", x, feat, idx)

    def decoder(self, x, feat):
        idx = [0]
        x = self.cconv("decoder.conv1", x, feat, idx)
        x = self.res("decoder.middle.0", x, feat, idx)
        x = self.attn("decoder.middle.1", x)
        x = self.res("decoder.middle.2", x, feat, idx)
        for kind, key, mode in self.stages("decoder.upsamples"):
            x = self.res(key, x, feat, idx) if kind == "res" else \
                self.resample(key, mode, x, feat, idx)
        x = F.silu(self.rms("decoder.head.0", x))
        return self.cconv("decoder.head.2", x, feat, idx)

    # -- whole-model entry points -----------------------------------------------------------------
    def _mu(self, outs):
        h = torch.cat(outs, 2)
        mu = F.conv3d(h, self.sd["conv1.weight"], self.sd["conv1.bias"]).chunk(2, dim=1)[0]
        return (mu - self.mean) * self.inv_std

    def encode(self, x):
        """Wan's one-shot encode: frame 0, then groups of 4 (trailing frames ignored)."""
        feat, outs = [None] * 64, []
        for i in range(1 + (x.shape[2] - 1) // 4):
            chunk = x[:, :, :1] if i == 0 else x[:, :, 1 + 4 * (i - 1): 1 + 4 * i]
            outs.append(self.encoder(chunk, feat))
        return self._mu(outs)

    def stream_encode(self, chunks):
        """The streaming reference: first call split [:1] + [1:], later calls groups of 4."""
        feat, results = [None] * 64, []
        for n, x in enumerate(chunks):
            if n == 0:
                outs = [self.encoder(x[:, :, :1], feat), self.encoder(x[:, :, 1:], feat)]
            else:
                outs = [self.encoder(x[:, :, 4 * i: 4 * i + 4], feat)
                        for i in range(x.shape[2] // 4)]
            results.append(self._mu(outs))
        return results

    def stream_decode(self, chunks):
        """One latent frame at a time, one cache for the whole stream."""
        feat, results = [None] * 64, []
        for z in chunks:
            x = z / self.inv_std + self.mean
            x = F.conv3d(x, self.sd["conv2.weight"], self.sd["conv2.bias"])
            outs = [self.decoder(x[:, :, i: i + 1], feat) for i in range(x.shape[2])]
            results.append(torch.cat(outs, 2).clamp(-1, 1))
        return results


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def codec() -> WanVAECodec:
    return random_codec("wan", small=True, seed=1)


@pytest.fixture(scope="module")
def ref(codec) -> RefWanVAE:
    return RefWanVAE(codec.state_dict(), codec.config)


def clip(t: int, seed: int = 0, hw: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, t, hw, hw, generator=g) * 2 - 1


def test_full_size_keys_and_shapes_match_spec_appendix_b():
    manifest = read_manifest("wan_vae_keys.txt")
    assert len(manifest) == 194
    assert sum(math.prod(s) for s in manifest.values()) == 126_892_531
    model = random_codec("wan", small=False, device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest
    assert model.num_parameters() == 126_892_531
    assert model.num_parameters("encoder.") == 53_595_872
    assert model.num_parameters("decoder.") == 73_295_331


@pytest.mark.parametrize("first", [9, 12, 13, 1, 5])
def test_frame_counts(codec, first):
    enc, dec = codec.encoder_stream(), codec.decoder_stream()
    z = enc.encode(clip(first))
    assert z.shape == (1, 16, latent_frames(first, True), 2, 2)
    assert z.shape[2] == {9: 3, 12: 3, 13: 4, 1: 1, 5: 2}[first]
    assert enc.encode(clip(12, 1)).shape[2] == 3
    assert enc.encode(clip(4, 2)).shape[2] == 1
    frames = dec.decode(z)
    assert frames.shape == (1, 3, pixel_frames(z.shape[2], True), 16, 16)
    assert dec.decode(torch.randn(1, 16, 3, 2, 2)).shape[2] == 12
    assert frames.abs().max() <= 1.0


def test_stream_chunk_contract_12_in_3_out_9_then_12(codec):
    enc, dec = codec.encoder_stream(), codec.decoder_stream()
    sizes = []
    for i in range(3):
        z = enc.encode(clip(12, i))
        assert z.shape[2] == 3
        sizes.append(dec.decode(z).shape[2])
    assert sizes == [9, 12, 12]


def test_time_parallel_equals_frame_by_frame_reference_oneshot(codec, ref):
    x = clip(21, 3)
    assert close(codec.encode(x), ref.encode(x))
    z = torch.randn(1, 16, 5, 2, 2, generator=torch.Generator().manual_seed(4))
    assert close(codec.decode(z), ref.stream_decode([z])[0])


def test_stream_encode_equals_oneshot_whole_clip(codec, ref):
    x = clip(37, 5)  # 13 + 12 + 12
    whole = codec.encode(x)
    assert whole.shape[2] == 10
    enc = codec.encoder_stream()
    parts = [enc.encode(x[:, :, :13]), enc.encode(x[:, :, 13:25]), enc.encode(x[:, :, 25:])]
    assert [p.shape[2] for p in parts] == [4, 3, 3]
    assert close(torch.cat(parts, 2), whole)
    assert close(whole, ref.encode(x))


def test_stream_encode_12_frame_chunks_equals_reference_stream(codec, ref):
    x = clip(36, 6)
    chunks = [x[:, :, 12 * i: 12 * i + 12] for i in range(3)]
    enc = codec.encoder_stream()
    ours = [enc.encode(c) for c in chunks]
    theirs = ref.stream_encode(chunks)
    for a, b in zip(ours, theirs):
        assert close(a, b)
    # The reference's 12-frame first chunk shifts later stride-2 windows (module doc): the third
    # chunk differs from a one-shot encode of the same frames - this must stay observable.
    assert not close(torch.cat(ours, 2)[:, :, 3:6], codec.encode(x[:, :, :25])[:, :, 3:6], 1e-3)


def test_stream_decode_equals_oneshot_and_reference(codec, ref):
    z = torch.randn(1, 16, 9, 2, 2, generator=torch.Generator().manual_seed(7))
    whole = codec.decode(z)
    assert whole.shape[2] == 33
    dec = codec.decoder_stream()
    parts = [dec.decode(z[:, :, 3 * i: 3 * i + 3]) for i in range(3)]
    assert [p.shape[2] for p in parts] == [9, 12, 12]
    assert close(torch.cat(parts, 2), whole)
    theirs = ref.stream_decode([z[:, :, 3 * i: 3 * i + 3] for i in range(3)])
    for a, b in zip(parts, theirs):
        assert close(a, b)
    assert (whole.abs() < 0.99).float().mean() > 0.5  # not a clamped, uninformative output


def test_two_encoder_streams_alternating_equal_each_alone(codec):
    a_chunks = [clip(12, 10 + i) for i in range(3)]
    b_chunks = [clip(12, 20 + i) for i in range(3)]
    alone_a = [z for s in [codec.encoder_stream()] for z in [s.encode(c) for c in a_chunks]]
    alone_b = [z for s in [codec.encoder_stream()] for z in [s.encode(c) for c in b_chunks]]
    sa, sb = codec.encoder_stream(), codec.encoder_stream()
    for i in range(3):
        assert torch.equal(sa.encode(a_chunks[i]), alone_a[i])
        assert torch.equal(sb.encode(b_chunks[i]), alone_b[i])
    # and the streams really carry state: a fresh stream gives a different second chunk
    assert not close(codec.encoder_stream().encode(a_chunks[1]), alone_a[1], 1e-3)


def test_bad_input_raises_and_keeps_state(codec):
    chunks = [clip(12, 30 + i) for i in range(3)]
    good = codec.encoder_stream()
    expected = [good.encode(c) for c in chunks]
    s = codec.encoder_stream()
    s.encode(chunks[0])
    for bad, msg in [(clip(10), "multiple of 4"), (clip(12, hw=24), "reset"),
                     (torch.zeros(1, 4, 12, 16, 16), r"\[B, 3"), ("frames", "torch.Tensor"),
                     (torch.zeros(1, 3, 12, 12, 12), "multiples of 8"),
                     (torch.zeros(1, 3, 12, 16, 16, dtype=torch.int64), "float")]:
        with pytest.raises(CodecInputError, match=msg):
            s.encode(bad)
    assert torch.equal(s.encode(chunks[1]), expected[1])
    assert torch.equal(s.encode(chunks[2]), expected[2])
    d = codec.decoder_stream()
    with pytest.raises(CodecInputError):
        d.decode(torch.zeros(1, 8, 3, 2, 2))
    assert d.first


def test_failed_call_mid_network_leaves_stream_unchanged(codec, monkeypatch):
    chunks = [clip(12, 40 + i) for i in range(2)]
    ref_stream = codec.encoder_stream()
    expected = [ref_stream.encode(c) for c in chunks]
    s = codec.encoder_stream()
    s.encode(chunks[0])
    boom = codec.encoder.middle[1]
    monkeypatch.setattr(boom, "forward", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        s.encode(chunks[1])
    monkeypatch.undo()
    assert s.calls == 1
    assert torch.equal(s.encode(chunks[1]), expected[1])


def test_nan_frames_do_not_poison_the_stream(codec):
    chunks = [clip(12, 50 + i) for i in range(3)]
    s = codec.encoder_stream()
    s.encode(chunks[0])
    bad = chunks[1].clone()
    bad[:, :, 3, 2:5, 2:5] = float("nan")
    assert torch.isfinite(s.encode(bad)).all()
    assert torch.isfinite(s.encode(chunks[2])).all()


def test_channels_last_path_matches_default(codec):
    x = clip(25, 60)
    z = codec.encode(x)
    zz = torch.randn(1, 16, 6, 2, 2, generator=torch.Generator().manual_seed(61))
    f = codec.decode(zz)
    cl = random_codec("wan", small=True, seed=1).use_channels_last()
    enc, dec = cl.encoder_stream(), cl.decoder_stream()
    assert close(torch.cat([enc.encode(x[:, :, :13]), enc.encode(x[:, :, 13:])], 2), z)
    assert close(torch.cat([dec.decode(zz[:, :, :3]), dec.decode(zz[:, :, 3:])], 2), f)


def test_encode_image_is_a_stateless_single_frame_encode(codec):
    img = clip(1, 70)[:, :, 0].repeat(2, 1, 1, 1)
    img[1] = -img[1]
    z = codec.encode_image(img)
    assert z.shape == (2, 16, 1, 2, 2)
    assert close(z[1:], codec.encode(img[1:].unsqueeze(2)))
    assert not close(z[0], z[1], 1e-3)


def test_batch_items_are_independent(codec):
    x = torch.cat([clip(13, 80), clip(13, 81)])
    z = codec.encode(x)
    assert close(z[1:], codec.encode(x[1:]))


def test_bf16_runs_and_stays_close_to_fp32(codec):
    x = clip(13, 90)
    z32 = codec.encode(x)
    low = random_codec("wan", small=True, seed=1, dtype=torch.bfloat16)
    z16 = low.encode(x)
    assert z16.dtype == torch.bfloat16 and torch.isfinite(z16).all()
    assert (z16.float() - z32).abs().max() < 0.1 * z32.abs().max()
    f16 = low.decoder_stream().decode(z16)
    assert f16.dtype == torch.bfloat16 and torch.isfinite(f16).all()
