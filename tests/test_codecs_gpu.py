"""Codecs on CUDA (skipped without a GPU): the CUDA kernels (cuDNN conv3d, channels-last, SDPA,
bf16/fp16) give the same streams as the CPU checks in test_wan_vae.py / test_tae.py.

Tolerances: fp32 with TF32 off: 1e-4 relative to the output range; bf16/fp16: relative L2 2e-2.
"""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.codecs import random_codec
from vacelive.engine.dit.fp8 import relative_error

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def close(a, b, tol):
    a, b = a.float().cpu(), b.float().cpu()
    assert a.shape == b.shape
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())



def clip(t, hw=32, seed=0, device="cuda"):
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.rand(1, 3, t, hw, hw, generator=g, device=device) * 2 - 1


@pytest.mark.parametrize("kind", ["wan", "tae", "lighttae"])
def test_cuda_matches_cpu_fp32(kind):
    cpu = random_codec(kind, small=True, seed=1)
    gpu = random_codec(kind, small=True, seed=1)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    x = clip(25, seed=1, device="cpu")
    ec, eg = cpu.encoder_stream(), gpu.encoder_stream()
    dc, dg = cpu.decoder_stream(), gpu.decoder_stream()
    for part in (x[:, :, :13], x[:, :, 13:]):
        zc, zg = ec.encode(part), eg.encode(part.cuda())
        assert close(zg, zc, 1e-4)
        assert close(dg.decode(zc.cuda()), dc.decode(zc), 1e-4)


@pytest.mark.parametrize("kind,dtype", [("wan", torch.bfloat16), ("tae", torch.float16),
                                        ("tae", torch.bfloat16), ("lighttae", torch.float16)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_full_size_stream_equals_oneshot_low_precision(kind, dtype, channels_last):
    codec = random_codec(kind, small=False, seed=2, device="cuda", dtype=dtype)
    codec.use_channels_last(channels_last)
    x = clip(25, hw=64, seed=3)
    whole = codec.encode(x)
    enc = codec.encoder_stream()
    first = 13 if kind == "wan" else 12  # Wan: 1 + 4k for one-shot equality; TAE: multiple of 4
    parts = torch.cat([enc.encode(x[:, :, :first]), enc.encode(x[:, :, first:first + 12])], 2)
    assert parts.dtype == dtype and torch.isfinite(parts).all()
    assert relative_error(parts, whole[:, :, :parts.shape[2]]) <= 2e-2
    z = whole[:, :, :6]
    dec = codec.decoder_stream()
    frames = torch.cat([dec.decode(z[:, :, :3]), dec.decode(z[:, :, 3:])], 2)
    assert frames.shape == (1, 3, 21, 64, 64) and torch.isfinite(frames).all()
    assert relative_error(frames, codec.decode(z)) <= 2e-2


def test_channels_last_matches_default_fp32_cuda():
    a = random_codec("wan", small=True, seed=4, device="cuda")
    b = random_codec("wan", small=True, seed=4, device="cuda").use_channels_last()
    x = clip(13, seed=5)
    z = a.encode(x)
    assert close(b.encode(x), z, 1e-4)
    assert close(b.decode(z), a.decode(z), 1e-4)
