"""StreamGenerator with the real VACE conditioner (engine.conditioning) on tiny random weights:
a control video steers the stream, context_scale 0 is exactly text-only, hint reuse computes hints
once per chunk, reset restarts the conditioning streams."""
from __future__ import annotations

import numpy as np
import pytest
import torch

try:
    from vacelive.engine.conditioning import VaceConditioner
except ImportError:  # pragma: no cover - the conditioning module ships separately
    pytest.skip("engine.conditioning.VaceConditioner is not available", allow_module_level=True)

from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkRequest, Prompt
from support import count_hints

W, H = 32, 32


pytestmark = pytest.mark.usefixtures("single_thread")


def make(**kw) -> StreamGenerator:
    return StreamGenerator.random("tiny", width=W, height=H, codec="tae", seed=0, vace=True, **kw)


def control(frames: int, phase: int = 0, flip: bool = False) -> np.ndarray:
    """A moving gray ramp as uint8 RGBA host frames [frames, H, W, 4]."""
    x = np.arange(W, dtype=np.float32)[None, None, :]
    t = np.arange(phase, phase + frames, dtype=np.float32)[:, None, None]
    ramp = ((x * 8 + t * 16) % 256) * np.ones((1, H, 1), np.float32)
    if flip:
        ramp = 255 - ramp
    out = np.empty((frames, H, W, 4), np.uint8)
    out[..., :3] = ramp[..., None].astype(np.uint8)
    out[..., 3] = 255
    return out


def stream(gen, chunks=3, **kw):
    results, phase = [], 0
    flip = kw.pop("flip", False)
    for _ in range(chunks):
        n = gen.next_chunk_frames
        results.append(gen.step(ChunkRequest(prompts=[Prompt("a red cat")], video=control(n, phase, flip), **kw)))
        phase += n
    return results


def test_control_video_steers_a_deterministic_stream():
    gen = make()
    assert isinstance(gen.conditioner, VaceConditioner) and gen.describe()["vace"] is True
    a = stream(gen)
    assert [r.frames.shape[0] for r in a] == [9, 12, 12]
    assert all(r.timings_ms["vace"] > 0 and r.timings_ms["hints"] > 0 for r in a)
    b = stream(make())
    c = stream(make(), flip=True)
    assert all(torch.equal(x.frames, y.frames) for x, y in zip(a, b))
    assert not torch.equal(a[1].frames, c[1].frames)


def test_context_scale_0_is_exactly_text_only():
    with_video = stream(make(), context_scale=0.0)
    gen = make()
    text_only = [gen.step(ChunkRequest(prompts=[Prompt("a red cat")])) for _ in range(3)]
    assert all(torch.equal(x.frames, y.frames) for x, y in zip(with_video, text_only))
    assert not torch.equal(stream(make())[0].frames, text_only[0].frames)


def test_hint_reuse_computes_hints_once_per_chunk_and_reset_restarts_conditioning():
    gen = make()
    real = gen.model.compute_hints
    calls = count_hints(gen)
    reused = stream(gen, chunks=2, hint_reuse=True, steps=4)
    assert calls["n"] == 2
    per_step = stream(make(), chunks=2, steps=4)
    assert not torch.equal(reused[1].frames, per_step[1].frames)
    gen.reset()
    gen.model.compute_hints = real
    again = stream(gen, chunks=1, hint_reuse=True, steps=4)
    assert torch.equal(again[0].frames, reused[0].frames)  # the conditioning streams started over


def test_a_failing_vace_chunk_restores_the_conditioner_too():
    reference = stream(make(), chunks=4)
    gen = make()
    first = stream(gen, chunks=2)
    original = gen.decoder.decode

    def failing(latents):
        gen.decoder.decode = original
        raise RuntimeError("codec failure")

    gen.decoder.decode = failing
    n = gen.next_chunk_frames
    with pytest.raises(RuntimeError):
        gen.step(ChunkRequest(prompts=[Prompt("a red cat")], video=control(n, 21)))
    phase = 21  # 9 + 12 frames were consumed by the first two chunks
    rest = []
    for _ in range(2):
        n = gen.next_chunk_frames
        rest.append(gen.step(ChunkRequest(prompts=[Prompt("a red cat")], video=control(n, phase))))
        phase += n
    for got, want in zip(first + rest, reference):
        assert torch.equal(got.frames, want.frames)


@pytest.mark.gpu
def test_gpu_full_size_depth_stream_is_finite_and_under_24_gb():
    """1.3B + VACE, 832x480, Wan VAE, depth control, tiny text encoder (the real one is offloaded
    or on the CPU to fit the VRAM budget)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    gen = StreamGenerator.random("full", width=832, height=480, codec="wan", device="cuda", vace=True)
    phase = 0
    for i in range(3):
        n = gen.next_chunk_frames
        ramp = np.linspace(0, 255, 832, dtype=np.float32)[None, None, :] + 8 * (phase + np.arange(n))[:, None, None]
        video = np.repeat((ramp % 256).astype(np.uint8)[..., None], 4, axis=-1) * np.ones((1, 480, 1, 1), np.uint8)
        r = gen.step(ChunkRequest(prompts=[Prompt("a red cat")], video=video))
        phase += n
        assert r.frames.shape == (n, 480, 832, 4) and r.frames.is_cuda
        assert r.timings_ms["vace"] > 0 and r.timings_ms["hints"] > 0
    assert torch.isfinite(gen.history.buffer).all() and torch.isfinite(gen.kv.storage).all()
    assert torch.cuda.max_memory_allocated() < 24 * 2**30
