"""Video-to-video restyle: each chunk starts from the input video instead of pure noise.

Per chunk with `input_mode = "video"` (the generator calls `VideoInput.prepare` once per chunk):
 1. the input frames (`request.input_video`, else the VACE `video`) are fitted to the generation
    size with the request's `fit` policy and scaled to [-1, 1], like every other video input;
 2. optional similarity skip (`similarity_skip`): StreamDiffusion's Stochastic Similarity Filter
    (src/streamdiffusion/image_filter.py). c = cosine similarity of the flattened chunk input with
    the last processed one, p_skip = max(0, 1 - (1 - c) / (1 - threshold)); the chunk is skipped
    when a uniform draw u <= p_skip, unless `similarity_max_skip` chunks were skipped in a row.
    A skipped chunk re-sends the last output frame and costs no DiT or codec work. A chunk is never
    skipped while anything else in the request differs from the last processed chunk;
 3. optional motion-aware noise (`noise_controller`), StreamDiffusionV2's
    `compute_noise_scale_and_step` (streamv2v/inference.py): d_f = RMS of frame f minus frame f-1
    over channels and pixels in [-1, 1] (frame -1 = the last input frame of the previous chunk),
    m = clamp(max_f d_f / 0.2, 0, 1), s = 0.9 (s_user - 0.1 m) + 0.1 s_previous. More motion
    gives LESS noise, so a fast-moving input is followed more closely;
 4. the frames are encoded by the input's own encoder stream, aligned to the decoder's chunk
    groups exactly like the VACE streams (engine.conditioning.encode.ConditionStream);
 5. the step plan (`v2v_plan`): the first step runs at t_start = round(1000 s) - offset, followed
    by up to steps - 1 (the live step count) of the recipe's V2V step list entries whose
    timestep is below t_start (the list is `v2v_steps`, else the schedule's own list; warped like
    it). `offset` is the recipe's `v2v_timestep_offset` (StreamDiffusionV2 and Scope feed
    int(1000 s) - 100: the model is told 0.1 less noise than was added; LongLive and Self-Forcing
    use 0, the timestep of that very noise level). StreamDiffusionV2's own default, --step 2 on
    [700, 500, 400, 200] at s 0.8, gives [700, 500] here as there;
 6. the latent x = (1 - sigma) x0 + sigma eps, sigma = the schedule's sigma at timestep round(1000 s)
    (the nearest entry of the shifted table, `FlowSchedule.sigma`; t = 1000 sigma' there), eps =
    the chunk's first noise draw, i.e. the text-to-video initial noise of the same seed.
Ends of the range: s >= 1 is exactly the text-to-video path (same plan, same noise, bit for bit);
s == 0 runs no denoising step, the chunk is the input's own latent (output = decode(encode(input))).
The clean KV pass runs in every case, so moving the strength later keeps the stream's context.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

import torch

from vacelive.engine.codecs import Codec
from vacelive.engine.conditioning.encode import ConditionStream
from vacelive.engine.conditioning.inputs import InputError, fit, frames01, take_frames, to_rgb, to_signed
from vacelive.engine.request import ChunkRequest
from vacelive.engine.schedule import NUM_TRAIN_TIMESTEPS, FlowSchedule, StepPlan, select_steps

# StreamDiffusionV2 compute_noise_scale_and_step constants.
MOTION_NORMALISER = 0.2  # d_f / 0.2, clamped to 0..1
MOTION_REDUCTION = 0.1  # s_init - 0.1 m
SMOOTHING = 0.9  # 0.9 (..) + 0.1 s_prev
# StreamDiffusion enable_similar_image_filter defaults.
SIMILARITY_THRESHOLD = 0.98
SIMILARITY_MAX_SKIP = 10
PLAN_CACHE = 512  # (steps, t_start) plans kept (each holds a tiny device tensor)
FIT_CHOICES = ("crop", "letterbox", "stretch")


def motion_magnitude(frames: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """m = clamp(max_f d_f / 0.2, 0, 1) as a 0-d tensor. frames [F, 3, H, W] in [-1, 1];
    previous [3, H, W] (the frame before frames[0]) or None (frames[0] has no predecessor)."""
    seq = frames if previous is None else torch.cat([previous[None].to(frames.dtype), frames])
    if seq.shape[0] < 2:
        return frames.new_zeros(())
    diff = (seq[1:] - seq[:-1]).float()
    d = diff.pow(2).mean(dim=(1, 2, 3)).sqrt()
    return (d.max() / MOTION_NORMALISER).clamp(0.0, 1.0)


def controlled_noise_scale(s_init: float, s_prev: float, motion: float) -> float:
    """StreamDiffusionV2's smoothed motion-aware noise scale (module doc, step 3)."""
    return SMOOTHING * (s_init - MOTION_REDUCTION * motion) + (1.0 - SMOOTHING) * s_prev


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two tensors flattened (StreamDiffusion's SimilarImageFilter), 0-d."""
    return torch.nn.functional.cosine_similarity(a.reshape(1, -1).float(), b.reshape(1, -1).float())[0]


def skip_probability(similarity: float, threshold: float) -> float:
    """p_skip = max(0, 1 - (1 - c) / (1 - threshold)); 0 when threshold >= 1."""
    if threshold >= 1.0:
        return 0.0
    return max(0.0, 1.0 - (1.0 - similarity) / (1.0 - threshold))


def start_timestep(noise_scale: float, offset: int = 0) -> int:
    """The first denoising timestep for noise scale s: round(1000 s) - offset, at least 1."""
    return max(1, int(round(NUM_TRAIN_TIMESTEPS * noise_scale)) - int(offset))


def v2v_plan(schedule: FlowSchedule, steps: int, noise_scale: float, offset: int = 0) -> tuple[StepPlan, float]:
    """(plan, sigma of the input noise) for a chunk started from the input at noise scale s in
    (0, 1): the first timestep is `start_timestep(s, offset)`, followed by at most steps - 1 of
    the schedule's timesteps below it, chosen like the live step count chooses them
    (`select_steps`: evenly spaced, first and last kept; one = the first). Module doc, steps
    5-6. Not cached: `VideoInput` caches."""
    base = schedule.plan()  # every entry of the list
    t0 = start_timestep(noise_scale, offset)
    noise_sigma = schedule.sigma(round(NUM_TRAIN_TIMESTEPS * noise_scale))
    below = [i for i, t in enumerate(base.timesteps) if t < t0]
    keep = list(select_steps(below, min(steps - 1, len(below)))) if steps > 1 and below else []
    timesteps = (float(t0),) + tuple(base.timesteps[i] for i in keep)
    sigmas = (schedule.sigma(t0),) + tuple(base.sigmas[i] for i in keep)
    plan = StepPlan(
        steps=(t0,) + tuple(base.steps[i] for i in keep),
        timesteps=timesteps,
        sigmas=sigmas,
        timestep_tensor=torch.tensor(timesteps, dtype=torch.float32, device=schedule.device),
        context_timestep=base.context_timestep,
        context_tensor=base.context_tensor,
    )
    return plan, noise_sigma


def _empty_plan(schedule: FlowSchedule) -> StepPlan:
    base = schedule.plan(1)
    return StepPlan(steps=(), timesteps=(), sigmas=(), timestep_tensor=base.timestep_tensor[:0],
                    context_timestep=base.context_timestep, context_tensor=base.context_tensor)


@dataclass
class V2VChunk:
    """What the generator needs to start a chunk from the input video."""

    latents: torch.Tensor  # [1, 16, T, h, w] the input's clean latents (x0 of the input)
    plan: StepPlan  # the steps to run (empty at noise scale 0)
    noise_sigma: float  # x = (1 - sigma) x0 + sigma eps
    noise_scale: float  # the scale used (after the motion controller)
    motion: float | None  # m of this chunk when the controller ran


@dataclass
class V2VDecision:
    """The result of `VideoInput.prepare`: a chunk to run from the input, a chunk to skip, or
    None for the text-to-video path (no input, strength 1)."""

    chunk: V2VChunk | None = None
    skip: bool = False
    noise_scale: float | None = None
    similarity: float | None = None


def _settings(request: ChunkRequest, notices: list[str]) -> dict[str, Any]:
    """The request's V2V settings, unusable values replaced by their defaults (with a notice)."""

    def number(name: str, low: float, high: float, default: float) -> float:
        value = getattr(request, name, default)
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            v = math.nan
        if math.isnan(v):
            notices.append(f"{name} {value!r} is not a number: using {default}")
            return default
        fixed = min(max(v, low), high)
        if fixed != v:
            notices.append(f"{name} {value!r} out of range {low:g}..{high:g}: using {fixed:g}")
        return fixed

    return {
        "noise_scale": number("noise_scale", 0.0, 1.0, 0.7),
        "threshold": number("similarity_threshold", 0.0, 1.0, SIMILARITY_THRESHOLD),
        "max_skip": int(number("similarity_max_skip", 0, 1000, SIMILARITY_MAX_SKIP)),
    }


def request_signature(request: ChunkRequest) -> tuple:
    """Everything in a request except its frames: two chunks with the same signature and the same
    pictures would be generated from the same inputs (the similarity skip's precondition)."""
    prompts = tuple((getattr(p, "text", p), getattr(p, "weight", 1.0)) for p in (request.prompts or ()))
    return (prompts, request.transition_chunks, request.blend, request.seed, request.steps,
            request.context_scale, tuple(sorted((request.lora_scales or {}).items())), request.annotator,
            request.mask_channel, repr(request.outpaint), request.fit, request.hint_reuse,
            request.noise_scale, request.input_mode, request.mask is None, request.video is None)


class VideoInput:
    """The V2V input of one generator stream: its encoder stream, the motion controller state and
    the similarity filter (module doc). Not thread-safe (the generator's thread)."""

    def __init__(self, codec: Codec, schedule: FlowSchedule, width: int, height: int, device,
                 timestep_offset: int = 0, steps: tuple[int, ...] | None = None) -> None:
        """schedule: the recipe's; `steps` (the recipe's `v2v_steps`) replaces its step list for
        V2V chunks (same shift and warping)."""
        if steps:
            schedule = FlowSchedule(replace(schedule.config, steps=tuple(steps)), device=schedule.device)
        self.codec, self.schedule = codec, schedule
        self.width, self.height = width, height
        self.device = torch.device(device)
        self.offset = int(timestep_offset)
        self.encoder = ConditionStream(codec)
        self._plans: dict[tuple[int, int], tuple[StepPlan, float]] = {}
        self._empty = _empty_plan(schedule)
        self.counters = {"encodes": 0, "skipped": 0}
        self.reset()

    # ---- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.encoder.reset()
        self._last_frame: torch.Tensor | None = None  # last input frame [3, H, W] of the last chunk
        self._s_prev: float | None = None  # the controller's previous noise scale
        self._reference: torch.Tensor | None = None  # last processed chunk input [F, 3, H, W]
        self._reference_signature: tuple | None = None
        self._reference_others: tuple = ()
        self._skips = 0  # chunks skipped in a row
        self._active = False  # the last chunk ran from the input (encoder stream continuous)
        self._last_similarity: float | None = None

    def snapshot(self) -> tuple:
        return (self.encoder.snapshot(), self._last_frame, self._s_prev, self._reference,
                self._reference_signature, self._reference_others, self._skips, self._active)

    def restore(self, saved: tuple) -> None:
        enc, self._last_frame, self._s_prev, self._reference, self._reference_signature, \
            self._reference_others, self._skips, self._active = saved
        self.encoder.restore(enc)

    # ---- per chunk ----------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, request: ChunkRequest, *, steps: int, num_frames: int, first_chunk: bool,
                chunk_seed: int, in_transition: bool, notices: list[str]) -> V2VDecision:
        self._last_similarity = None
        if first_chunk:
            self.reset()
        if getattr(request, "input_mode", "text") != "video":
            self._deactivate()
            return V2VDecision()
        settings = _settings(request, notices)
        source = request.input_video if request.input_video is not None else request.video
        if source is None:
            notices.append("input_mode is video but no input video arrived: generating from text "
                           "(connect the Input texture, or the control texture)")
            self._deactivate()
            return V2VDecision()
        frames = self._frames(source, request.fit, num_frames, notices)
        if frames is None:
            self._deactivate()
            return V2VDecision()
        s_user = settings["noise_scale"]
        others = self._other_frames(request, source) if request.similarity_skip else ()
        if request.similarity_skip and self._should_skip(request, frames, others, settings, chunk_seed,
                                                         in_transition):
            return V2VDecision(skip=True, similarity=self._last_similarity)
        similarity = self._last_similarity
        if request.similarity_skip:
            self._remember(request, frames, others)
        else:
            self._reference = None  # (a whole chunk of pixels: not kept while the skip is off)

        s = s_user
        motion = None
        if request.noise_controller:
            m = float(motion_magnitude(frames, self._last_frame))  # one sync per chunk
            motion = m
            s = min(1.0, max(0.0, controlled_noise_scale(s_user, s_user if self._s_prev is None else self._s_prev, m)))
        self._s_prev = s
        self._last_frame = frames[-1].clone()  # (a view would keep the whole chunk alive)
        if s >= 1.0:  # exactly text-to-video; the input stream loses its continuity
            self._deactivate(keep_motion=True)
            return V2VDecision(noise_scale=s, similarity=similarity)
        if not self._active:
            self.encoder.reset()
        latents = self.encoder.encode(frames.transpose(0, 1)[None], (1, num_frames, self.height, self.width))
        self.counters["encodes"] += 1
        self._active = True
        plan, sigma = self._plan(steps, s)
        chunk = V2VChunk(latents=latents, plan=plan, noise_sigma=sigma, noise_scale=s, motion=motion)
        return V2VDecision(chunk=chunk, noise_scale=s, similarity=similarity)

    def _deactivate(self, keep_motion: bool = False) -> None:
        self._active = False
        if not keep_motion:
            self._last_frame = None
            self._s_prev = None
            self._reference = None

    def _plan(self, steps: int, s: float) -> tuple[StepPlan, float]:
        if s <= 0.0:
            return self._empty, 0.0
        key = (steps, int(round(NUM_TRAIN_TIMESTEPS * s)))
        hit = self._plans.get(key)
        if hit is None:
            if len(self._plans) >= PLAN_CACHE:
                self._plans.pop(next(iter(self._plans)))
            hit = self._plans[key] = v2v_plan(self.schedule, steps, s, self.offset)
        return hit

    def _frames(self, source, fit_policy: str, n: int, notices: list[str]) -> torch.Tensor | None:
        """The input as n RGB frames [n, 3, H, W] in [-1, 1] at the generation size (None: unusable)."""
        policy = fit_policy if fit_policy in FIT_CHOICES else "crop"
        try:
            v = to_rgb(take_frames(frames01(source, "Input video", self.device, notices), n, "Input video", notices),
                       "Input video")
            return to_signed(fit(v, self.height, self.width, policy, 0.5)[0]).contiguous()
        except InputError as e:
            notices.append(f"{e} Input video ignored this chunk (text-to-video).")
            return None

    def _other_frames(self, request: ChunkRequest, source) -> tuple:
        """The request's other pictures the skip must also see unchanged (control video when it is
        not the input itself, mask)."""
        out = []
        for name in ("video", "mask"):
            value = getattr(request, name)
            if value is not None and value is not source:
                try:
                    out.append(frames01(value, name, self.device, []))
                except InputError:
                    out.append(None)
        return tuple(out)

    def _should_skip(self, request, frames, others, settings, chunk_seed: int, in_transition: bool) -> bool:
        self._last_similarity = None
        ref = self._reference
        if (ref is None or ref.shape[1:] != frames.shape[1:] or in_transition or request.refs is not None
                or request.extension is not None or request.reset
                or request_signature(request) != self._reference_signature
                or len(others) != len(self._reference_others)):
            return False
        k = min(len(frames), len(ref))  # the first chunk after a reset is shorter
        sims = [cosine_similarity(frames[-k:], ref[-k:])]
        for a, b in zip(others, self._reference_others):
            if a is None or b is None or a.shape[1:] != b.shape[1:]:
                return False
            k = min(len(a), len(b))
            sims.append(cosine_similarity(a[-k:], b[-k:]))
        c = float(torch.stack(sims).min())  # one sync
        self._last_similarity = c
        p = skip_probability(c, settings["threshold"])
        u = random.Random(chunk_seed * 1_000_003 + self._skips).random()
        if p < u or self._skips >= settings["max_skip"]:
            return False
        self._skips += 1
        self.counters["skipped"] += 1
        return True

    def _remember(self, request, frames, others) -> None:
        self._reference = frames
        self._reference_signature = request_signature(request)
        self._reference_others = others
        self._skips = 0
