"""Video-to-video restyle (engine.v2v) on tiny random weights (CPU): the ends of the strength range,
the noised start latent against a plain reimplementation of the schedule formula, the step plans,
StreamDiffusionV2's motion-aware noise, StreamDiffusion's similarity skip, bad inputs, and V2V
together with VACE depth control and a reference on every pipeline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vacelive.engine.generator import StreamGenerator
from vacelive.engine.pipelines import RECIPES
from vacelive.engine.request import ChunkRequest, Prompt
from vacelive.engine.schedule import FlowSchedule, ScheduleConfig, chunk_seed
from vacelive.engine.stream_state import frames_to_rgba
from vacelive.engine.v2v import (
    controlled_noise_scale, motion_magnitude, skip_probability, start_timestep, v2v_plan,
)
from support import count_hints

W, H = 32, 32
pytestmark = pytest.mark.usefixtures("single_thread")


def make(codec="wan", vace=False, recipe="longlive", seed=0) -> StreamGenerator:
    return StreamGenerator.random("tiny", width=W, height=H, codec=codec, seed=seed, vace=vace, recipe=recipe)


def camera(n: int, phase: int = 0, seed: int = 1) -> np.ndarray:
    """A moving uint8 RGBA clip [n, H, W, 4]: a bright square sliding over a fixed random texture."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (H, W, 3), dtype=np.uint8)
    out = np.empty((n, H, W, 4), np.uint8)
    for i in range(n):
        f = base.copy()
        x = (2 * (i + phase)) % (W - 8)
        f[8:16, x:x + 8] = 255
        out[i, ..., :3], out[i, ..., 3] = f, 255
    return out


def v2v(gen, frames, **kw) -> ChunkRequest:
    kw.setdefault("prompts", [Prompt("an oil painting")])
    return ChunkRequest(input_mode="video", input_video=frames, **kw)


def signed(frames_u8: np.ndarray) -> torch.Tensor:
    """uint8 RGBA [F, H, W, 4] -> [1, 3, F, H, W] in [-1, 1] (the engine's pixel convention)."""
    x = torch.from_numpy(frames_u8[..., :3]).float().div(255.0).mul(2).sub(1)
    return x.permute(3, 0, 1, 2)[None]


def plain_sigma(shift: float, t: float) -> float:
    """sigma' at the table timestep nearest t, written from the scheduler's definition."""
    best, best_d = None, math.inf
    for i in range(1000):
        s = 1.0 - i / 1000
        sp = shift * s / (1 + (shift - 1) * s)
        d = abs(1000 * sp - t)
        if d < best_d:
            best, best_d = sp, d
    return best


class Spy:
    """Stands in for the DiT: records (x, t) of every forward, delegates everything else."""

    def __init__(self, model):
        self.__dict__["_m"], self.__dict__["calls"] = model, []

    def __call__(self, x, t, *a, **k):
        self.calls.append((x.clone(), float(t)))
        return self._m(x, t, *a, **k)

    def __getattr__(self, name):
        return getattr(self._m, name)


# ---- the ends of the range ---------------------------------------------------------------------
def test_strength_0_returns_the_decoded_input():
    gen = make()
    clips = [camera(9), camera(12, phase=9)]
    enc, dec = gen.codec.encoder_stream(), gen.codec.decoder_stream()  # fresh streams: a plain codec run
    for clip in clips:
        out = gen.step(v2v(gen, clip, noise_scale=0.0))
        expected = frames_to_rgba(dec.decode(enc.encode(signed(clip))))
        assert out.noise_scale == 0.0 and not out.skipped
        assert torch.equal(out.frames, expected)


@pytest.mark.parametrize("recipe", ["longlive", "self-forcing"])
def test_strength_1_is_bit_exact_text_to_video_with_the_same_seed(recipe):
    a, b = make(recipe=recipe), make(recipe=recipe)
    for k in range(3):
        clip = camera(a.next_chunk_frames, phase=12 * k)
        ra = a.step(v2v(a, clip, noise_scale=1.0, seed=5))
        rb = b.step(ChunkRequest(prompts=[Prompt("an oil painting")], seed=5))
        assert torch.equal(ra.frames, rb.frames), k
    assert a.video_input.counters["encodes"] == 0  # strength 1 never encodes


# ---- the start latent and the plan ------------------------------------------------------------
@pytest.mark.parametrize("s", [0.9, 0.7, 0.3])
def test_intermediate_strength_starts_from_the_schedule_formula(s):
    gen = make()
    spy = Spy(gen.model)
    gen.model = spy
    clip0, clip1 = camera(9), camera(12, phase=9)
    gen.step(v2v(gen, clip0, noise_scale=s, seed=3))
    gen.flush()  # the first chunk's clean K/V pass (deferred to the next step otherwise)
    spy.calls.clear()
    gen.step(v2v(gen, clip1, noise_scale=s, seed=3))
    # plain reimplementation: encode the two chunks in one stream, noise the second with the chunk's
    # first draw at sigma(round(1000 s)); enter LongLive's warped steps at t = round(1000 s)
    enc = gen.codec.encoder_stream()
    enc.encode(signed(clip0))
    x0 = enc.encode(signed(clip1)).float()
    g = torch.Generator().manual_seed(chunk_seed(3, 1))
    eps = torch.randn(x0.shape, generator=g)
    sigma = plain_sigma(5.0, round(1000 * s))
    expected = (1 - sigma) * x0 + sigma * eps
    x_first, t_first = spy.calls[0]
    assert t_first == round(1000 * s)
    assert torch.allclose(x_first, expected, atol=1e-6, rtol=0)
    warped = [1000.0, 937.5, 833.3333, 625.0]
    rest = [t for t in warped if t < round(1000 * s)]
    fed = [t for _, t in spy.calls]
    assert fed[:-1] == pytest.approx([round(1000 * s)] + rest, abs=1e-3)
    assert fed[-1] == 0.0  # the clean KV pass


def test_plans_follow_the_rule_for_both_offsets():
    longlive = FlowSchedule(ScheduleConfig(shift=5.0, steps=(1000, 750, 500, 250), warp=True))
    plan, sigma = v2v_plan(longlive, 4, 0.7)
    assert plan.timesteps == pytest.approx((700.0, 625.0)) and sigma == pytest.approx(plain_sigma(5.0, 700))
    assert plan.sigmas[0] == pytest.approx(plain_sigma(5.0, 700))
    plan, _ = v2v_plan(longlive, 2, 0.5)  # steps=2 -> [1000, 625]: nothing below 500 remains
    assert plan.timesteps == (500.0,)
    plan, _ = v2v_plan(longlive, 2, 0.9)  # one step below 900 of [833.3, 625]: the first
    assert plan.timesteps == pytest.approx((900.0, 833.3333), abs=1e-3)
    # StreamDiffusionV2: shift 8, unwarped V2V list [700, 500, 400, 200], first step int(1000 s) - 100
    sdv2 = FlowSchedule(ScheduleConfig(shift=8.0, steps=(700, 500, 400, 200), warp=False))
    plan, sigma = v2v_plan(sdv2, 2, 0.8, offset=100)  # its 1.3B default: --step 2 -> [700, 500]
    assert plan.timesteps == (700.0, 500.0) and sigma == pytest.approx(plain_sigma(8.0, 800))
    assert v2v_plan(sdv2, 2, 0.75, offset=100)[0].timesteps == (650.0, 500.0)
    assert v2v_plan(sdv2, 4, 0.8, offset=100)[0].timesteps == (700.0, 500.0, 400.0, 200.0)
    assert v2v_plan(sdv2, 3, 0.8, offset=100)[0].timesteps == (700.0, 500.0, 200.0)
    assert start_timestep(0.05, 100) == 1  # never below the first table entry


# ---- motion-aware noise ------------------------------------------------------------------------
def gray_clip(levels) -> np.ndarray:
    out = np.zeros((len(levels), H, W, 4), np.uint8)
    for i, v in enumerate(levels):
        out[i, ..., :3], out[i, ..., 3] = v, 255
    return out


def plain_motion(levels_u8, previous_u8=None) -> float:
    seq = ([previous_u8] if previous_u8 is not None else []) + list(levels_u8)
    d = [abs(2 * (b - a) / 255.0) for a, b in zip(seq[:-1], seq[1:])]  # RMS of a uniform difference
    return min(1.0, max(d, default=0.0) / 0.2)


def test_motion_magnitude_and_controller_formula():
    still = signed(gray_clip([100] * 12))[0].transpose(0, 1)
    assert float(motion_magnitude(still, None)) == 0.0
    levels = [100, 110] * 6
    moving = signed(gray_clip(levels))[0].transpose(0, 1)
    assert float(motion_magnitude(moving, None)) == pytest.approx(plain_motion(levels), abs=1e-6)
    prev = signed(gray_clip([200]))[0, :, 0]
    assert float(motion_magnitude(moving, prev)) == pytest.approx(plain_motion(levels, 200), abs=1e-6)
    assert controlled_noise_scale(0.8, 0.8, 0.0) == pytest.approx(0.8)
    assert controlled_noise_scale(0.8, 0.75, 1.0) == pytest.approx(0.9 * 0.7 + 0.1 * 0.75)


@pytest.mark.parametrize("moving", [False, True])
def test_controller_follows_its_recurrence_over_a_stream(moving):
    gen = make(codec="tae")
    s_user, s_prev, prev = 0.8, None, None
    for k in range(4):
        n = gen.next_chunk_frames
        levels = [(100 + (30 if moving else 0) * ((k * 12 + i) % 2)) for i in range(n)]
        out = gen.step(v2v(gen, gray_clip(levels), noise_scale=s_user, noise_controller=True))
        m = plain_motion(levels, prev)
        s = 0.9 * (s_user - 0.1 * m) + 0.1 * (s_user if s_prev is None else s_prev)
        assert out.noise_scale == pytest.approx(s, abs=1e-6), k
        s_prev, prev = s, levels[-1]
    if moving:
        assert s < 0.72  # fast motion (m = 1) settles towards s_user - 0.1
    else:
        assert s == pytest.approx(s_user)


# ---- similarity skip ---------------------------------------------------------------------------
def test_skip_probability_formula():
    assert skip_probability(1.0, 0.98) == 1.0
    assert skip_probability(0.98, 0.98) == 0.0
    assert skip_probability(0.99, 0.98) == pytest.approx(0.5)
    assert skip_probability(0.5, 0.98) == 0.0
    assert skip_probability(1.0, 1.0) == 0.0


def test_similarity_skip_fires_on_a_still_input_and_not_on_a_moving_one():
    gen = make(codec="tae")
    still = np.repeat(camera(1), 12, axis=0)
    first = gen.step(v2v(gen, still[:9], similarity_skip=True))
    assert not first.skipped
    held = first.frames[-1]
    skipped = gen.step(v2v(gen, still, similarity_skip=True))
    assert skipped.skipped and skipped.frames.shape[0] == 12 and skipped.chunk_index == first.chunk_index
    assert all(torch.equal(f, held) for f in skipped.frames)
    assert gen.chunk_index == 1 and gen.counters["skipped"] == 1  # the stream did not move
    # a prompt change on the same still input is generated
    changed = gen.step(v2v(gen, still, similarity_skip=True, prompts=[Prompt("charcoal")]))
    assert not changed.skipped and gen.chunk_index == 2
    # a moving input never skips
    moving = make(codec="tae")
    for k in range(4):
        clip = camera(moving.next_chunk_frames, phase=12 * k, seed=k)
        assert not moving.step(v2v(moving, clip, similarity_skip=True)).skipped
    assert moving.counters["skipped"] == 0


def test_similarity_skip_gives_way_after_max_skip_chunks():
    gen = make(codec="tae")
    still = np.repeat(camera(1), 12, axis=0)
    gen.step(v2v(gen, still[:9], similarity_skip=True))
    skipped = [gen.step(v2v(gen, still, similarity_skip=True, similarity_max_skip=2)).skipped for _ in range(6)]
    assert skipped == [True, True, False, True, True, False]


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_input_is_reported_and_the_chunk_is_text_to_video():
    gen, ref = make(), make()
    bad = np.zeros((9, H, W, 5), np.uint8)
    out = gen.step(v2v(gen, bad, noise_scale=float("nan"), seed=2))
    assert any("Input video" in n for n in out.notices) and out.noise_scale is None
    assert torch.equal(out.frames, ref.step(ChunkRequest(prompts=[Prompt("an oil painting")], seed=2)).frames)
    out = gen.step(ChunkRequest(input_mode="video"))  # no input at all
    assert any("no input video" in n for n in out.notices)
    out = gen.step(v2v(gen, camera(12), noise_scale="x"))
    assert any("noise_scale" in n for n in out.notices) and out.noise_scale == 0.7


def test_a_failing_chunk_restores_the_input_stream():
    gen, ref = make(codec="tae"), make(codec="tae")
    clips = [camera(9), camera(12, phase=9), camera(12, phase=21)]
    gen.step(v2v(gen, clips[0]))
    ref.step(v2v(ref, clips[0]))
    real = gen.decoder.decode

    def failing(latents):
        raise RuntimeError("decoder out of memory")

    gen.decoder.decode = failing
    with pytest.raises(RuntimeError):
        gen.step(v2v(gen, clips[1]))
    gen.decoder.decode = real
    for clip in clips[1:]:
        assert torch.equal(gen.step(v2v(gen, clip)).frames, ref.step(v2v(ref, clip)).frames)


# ---- composition with VACE ---------------------------------------------------------------------
def depth_clip(n: int, phase: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    out = np.empty((n, H, W, 4), np.uint8)
    for i in range(n):
        cx = 8 + (i + phase) % 16
        d = np.clip(255 - 12 * np.hypot(xx - cx, yy - 16), 0, 255).astype(np.uint8)
        out[i, ..., :3], out[i, ..., 3] = d[..., None], 255
    return out


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_v2v_with_depth_control_and_a_reference_on_every_pipeline(recipe):
    gen = make(codec="tae", vace=True, recipe=recipe)
    plain = make(codec="tae", vace=True, recipe=recipe)
    hints = count_hints(gen)
    reference = camera(1, seed=9)[0]
    for k in range(2):
        n = gen.next_chunk_frames
        kw = dict(noise_scale=0.6, seed=1)
        out = gen.step(v2v(gen, camera(n, phase=12 * k), video=depth_clip(n, 12 * k),
                           refs=[reference] if k == 0 else None, **kw))
        alone = plain.step(v2v(plain, camera(n, phase=12 * k), **kw))
        assert out.frames.shape == (n, H, W, 4) and out.noise_scale == pytest.approx(0.6)
        assert not torch.equal(out.frames, alone.frames)  # VACE takes part
    stats = gen.conditioner.stats()
    assert stats["reference_encodes"] == 1 and stats["tasks"] == "r2v+control"
    assert hints["n"] > 0 and gen.video_input.counters["encodes"] == 2


def test_v2v_inside_an_inpainting_mask_on_the_camera_itself():
    """input = the VACE video (no separate input): the mask keeps the camera on the left half,
    the restyle runs on the noised camera everywhere."""
    gen, plain = make(codec="tae", vace=True), make(codec="tae", vace=True)
    mask = np.zeros((H, W), np.uint8)
    mask[:, W // 2:] = 255
    for k in range(2):
        n = gen.next_chunk_frames
        clip = camera(n, phase=12 * k)
        out = gen.step(ChunkRequest(prompts=[Prompt("an oil painting")], input_mode="video", video=clip,
                                    mask=mask, mask_channel="luma", noise_scale=0.5, seed=4))
        alone = plain.step(ChunkRequest(prompts=[Prompt("an oil painting")], input_mode="video", video=clip,
                                        noise_scale=0.5, seed=4))
        assert out.noise_scale == 0.5 and not torch.equal(out.frames, alone.frames)
    assert gen.conditioner.stats()["tasks"] == "inpaint" and gen.video_input.counters["encodes"] == 2


@pytest.mark.gpu
def test_gpu_v2v_ends_of_the_range_on_cuda():
    """bf16 on CUDA: strength 1 is the text-to-video stream bit for bit, strength 0 the decoded input
    (TAE: the stream's first 1-frame group is held for 4 frames, engine.conditioning.encode)."""
    def make_cuda():
        return StreamGenerator.random("tiny", width=64, height=64, codec="tae", device="cuda", vace=False)

    a, b, c = make_cuda(), make_cuda(), make_cuda()
    enc, dec = c.codec.encoder_stream(), c.codec.decoder_stream()
    rng = np.random.default_rng(0)
    for k in range(3):
        n = a.next_chunk_frames
        clip = rng.integers(0, 255, (n, 64, 64, 4), dtype=np.uint8)
        ra = a.step(ChunkRequest(input_mode="video", input_video=clip, noise_scale=1.0, seed=9))
        rb = b.step(ChunkRequest(seed=9))
        assert torch.equal(ra.frames, rb.frames), k
        rc = c.step(ChunkRequest(input_mode="video", input_video=clip, noise_scale=0.0))
        fed = np.concatenate([clip[:1]] * 3 + [clip]) if k == 0 else clip
        expected = frames_to_rgba(dec.decode(enc.encode(signed(fed).to("cuda"))))
        assert torch.equal(rc.frames, expected), k
    assert a.video_input.counters["encodes"] == 0 and c.video_input.counters["encodes"] == 3
