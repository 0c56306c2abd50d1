"""VACE conditioning on a CUDA GPU (bf16): every task gives a finite context of the right shape,
close to the fp32 CPU result; the all-zero cache stays exact on the GPU (and is reported)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vacelive.engine.codecs import random_codec
from vacelive.engine.conditioning import VaceConditioner
from vacelive.engine.request import ChunkRequest, Extension, Outpaint

pytestmark = pytest.mark.gpu
W, H = 96, 64


def pics(n, seed, c=4):
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, c), dtype=np.uint8)


REQUESTS = [
    lambda i: ChunkRequest(video=pics(12, i), refs=[pics(1, 99, 3)[0]] if i == 0 else None),
    lambda i: ChunkRequest(video=pics(12, i), mask=pics(1, 98, 1)[0]),
    lambda i: ChunkRequest(video=torch.from_numpy(pics(12, i)).cuda(), annotator="scribble", fit="letterbox"),
    lambda i: ChunkRequest(video=pics(12, i), outpaint=Outpaint(left=0.25), extension=Extension("firstframe", first=pics(1, 97, 3)[0]) if i == 1 else None),
]


@pytest.mark.parametrize("kind", ["wan", "tae"])
def test_tasks_on_cuda_bf16_match_cpu_fp32(kind):
    cpu_codec = random_codec(kind, seed=1)
    # the same weights on the GPU (a CUDA generator would draw other numbers than the CPU one)
    gpu_codec = random_codec(kind, seed=1)
    gpu_codec.load_state_dict(cpu_codec.state_dict())
    gpu = VaceConditioner(gpu_codec.to("cuda", torch.bfloat16), W, H, "cuda", torch.bfloat16)
    cpu = VaceConditioner(cpu_codec, W, H, "cpu", torch.float32)
    for make in REQUESTS:
        gpu.reset()
        cpu.reset()
        for i in range(3):
            n = 9 if i == 0 else 12
            a = gpu.prepare(make(i), first_chunk=i == 0, num_frames=n)
            b = cpu.prepare(make(i), first_chunk=i == 0, num_frames=n)
            assert a.context.device.type == "cuda" and a.context.dtype == torch.bfloat16
            assert a.context.shape == b.context.shape and torch.isfinite(a.context).all()
            err = (a.context.float().cpu() - b.context).abs().mean() / b.context.abs().mean()
            assert err < 0.05, (kind, i, err)


@pytest.mark.parametrize("kind", ["wan", "tae"])
def test_zero_cache_is_exact_on_cuda(kind):
    codec = random_codec(kind, seed=2, device="cuda", dtype=torch.bfloat16)
    cond = VaceConditioner(codec, W, H, "cuda", torch.bfloat16)
    ref = codec.encoder_stream()
    for i in range(14):
        n = 9 if i == 0 else 12
        video = pics(n, i)
        got = cond.prepare(ChunkRequest(video=video), first_chunk=i == 0, num_frames=n)
        zeros = torch.zeros(1, 3, n, H, W, device="cuda", dtype=torch.bfloat16)
        if kind == "tae" and n == 9:
            zeros = torch.cat([zeros[:, :, :1].expand(-1, -1, 3, -1, -1), zeros], 2)
        assert torch.equal(got.context[:, :16], ref.encode(zeros).to(got.context.dtype))
    print(f"{kind}: all-zero encodes served from the cache: {cond.stats()['zero_hits']} of 14")
