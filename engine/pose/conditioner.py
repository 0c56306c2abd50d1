"""PoseConditioner: what a ChunkRequest carries -> this chunk's UniAnimate token condition.

Once per chunk the generator calls `prepare(request, start_frame=, num_latents=, num_frames=)`:
 1. `pose_strength` 0 (the default) returns None: the DiT sees no add_condition at all (the exact
    path) and nothing else runs (no annotation, no CNN);
 2. the pose frames: the control video (request.video) annotated by the pose annotator
    (`pose_source` "annotate", DWPose on its worker thread) or taken as an already rendered pose
    map ("rendered"); R and B are swapped into UniAnimate's training channel order;
 3. fitted to the generation size like VACE's video (`fit`: crop / letterbox on black / stretch),
    they join the PoseTimeline at the chunk's pixel frames; the embedding window for the chunk's
    latents runs through dwpose_embedding (exactly the whole-clip values with `pose_lookahead`
    "wait", causal approximation of the last latent with "causal"; engine.pose.timeline);
 4. tokens [1, F*h*w, dim] through pose_proj, times pose_strength.
The chunk's condition is kept per latent frame (model dtype) so a KV re-cache after a prompt cut
re-runs those frames with the condition they were generated with (`history`).

The reference pose (`pose_ref`) is UniAnimate's randomref_embedding_pose added to the I2V `y`
input; the causal DiTs here are text-to-video (16-channel input, no `y`), so it has nowhere to go:
the conditioner says so once and carries on (docs/pose.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vacelive.engine.pose.embedding import PoseEmbedding
from vacelive.engine.pose.timeline import LOOKAHEAD_MODES, PoseTimeline

POSE_STRENGTH_RANGE = (0.0, 2.0)
POSE_SOURCES = ("annotate", "rendered")
FITS = ("crop", "letterbox", "stretch")
REF_POSE_NOTICE = ("Reference pose: UniAnimate adds it to the image-to-video input `y`, which this "
                   "text-to-video pipeline does not have; it is ignored (pose tokens still apply).")
UNTRAINED_PROJ_NOTICE = ("Pose tokens: this DiT needs a trained pose_proj (5120 -> {dim}) and none is "
                         "loaded; the projection is random, so pose strength adds noise-like features. "
                         "docs/pose.md says which models have real pose weights.")
T2V_BASE_NOTICE = ("Pose tokens: UniAnimate-DiT trained its pose embedding together with a LoRA on "
                   "Wan2.1-I2V-14B; this text-to-video DiT never learned to read it, so expect an "
                   "unlearned perturbation rather than pose control (docs/pose.md). VACE pose control "
                   "is the trained path.")


@dataclass
class PoseChunk:
    condition: torch.Tensor | None  # [1, L, dim] (already scaled) or None
    rendered: torch.Tensor | None  # this chunk's annotated pose frames [n, H, W, 3] uint8 (VACE may reuse them)
    handles_vace: bool = False  # VACE's pose control takes `rendered` (None: no pose map this chunk)


class PoseConditioner:
    def __init__(self, embedding: PoseEmbedding, *, width: int, height: int, frames_per_chunk: int,
                 device, dtype: torch.dtype, annotators=None, warn_untrained: bool = True,
                 annotator_thread: bool = True) -> None:
        if width % 16 or height % 16:
            raise ValueError(f"pose conditioning needs a width and height that are multiples of 16, got {width}x{height}")
        self.embedding = embedding
        self.width, self.height = width, height
        self.device, self.dtype = torch.device(device), dtype
        self.timeline = PoseTimeline(height, width, frames_per_chunk, self.device)
        self.annotators = annotators  # engine.conditioning.annotators.Annotators (shared with VACE)
        self.warn_untrained = warn_untrained
        self.history: dict[int, torch.Tensor] = {}  # latent frame -> [1, h*w, dim] condition
        self.keep_frames = 0  # how many latent frames of history to keep (the re-cache window)
        self.notices: list[str] = []
        self._said: set[str] = set()
        self.stats = {"chunks": 0, "cnn_frames": 0}
        # DWPose runs on an annotator thread one chunk ahead (engine.conditioning.runner);
        # annotator_thread=False runs it inline (tests, offline renders)
        self.annotator_thread = annotator_thread
        self._maps = None
        self._seq = 0
        self.timings_ms: dict[str, float] = {}

    def describe(self) -> dict:
        ann = self.annotators._loaded.get("pose") if self.annotators is not None else None
        return {"pose_proj": "identity" if not self.embedding.needs_proj else
                ("loaded" if self.embedding.pose_proj_trained else "untrained"),
                "annotator_providers": list(getattr(ann, "providers", []) or []),
                "annotator_ms_per_frame": round(getattr(ann, "ms_per_frame", 0.0), 2),
                **self.stats}

    # ---- stream state ----------------------------------------------------------------------------
    def reset(self) -> None:
        self.timeline.reset()
        self.history.clear()
        self._said.clear()
        if self._maps is not None:
            self._maps.clear()

    def close(self) -> None:
        """Stop the annotator thread."""
        if self._maps is not None:
            self._maps.runner.close()

    @property
    def maps(self):
        if self._maps is None:
            from vacelive.engine.conditioning.runner import AnnotatorRunner, ChunkMaps

            self._maps = ChunkMaps(AnnotatorRunner(self.device, name="pose-annotator"))
        return self._maps

    def snapshot(self) -> tuple:
        return self.timeline.snapshot(), dict(self.history), set(self._said)

    def restore(self, saved: tuple) -> None:
        timeline, history, said = saved
        self.timeline.restore(timeline)
        self.history, self._said = dict(history), set(said)

    def condition_for(self, start_frame: int, num_latents: int) -> torch.Tensor | None:
        """The stored conditions of latent frames start..start+n-1 as one [1, L, dim] tensor
        (frames generated without pose get zeros: no change), or None when none had one."""
        frames = [self.history.get(f) for f in range(start_frame, start_frame + num_latents)]
        have = [f for f in frames if f is not None]
        if not have:
            return None
        zero = torch.zeros_like(have[0])
        return torch.cat([zero if f is None else f for f in frames], 1)

    # ---- per chunk -------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, request, *, start_frame: int, num_latents: int, num_frames: int, pixel_start: int) -> PoseChunk:
        """This chunk's condition (see module doc). pixel_start: the chunk's first pixel frame."""
        notes: list[str] = []
        self._seq += 1
        if self._maps is not None:
            self._maps.begin_chunk()
        try:
            return self._prepare(request, start_frame, num_latents, num_frames, pixel_start, notes)
        finally:
            t = self._maps.timings() if self._maps is not None else {}
            self.timings_ms = {f"pose_{k}": v for k, v in t.items()}
            self.notices = [n for n in dict.fromkeys(notes) if n not in self._said]
            self._said.update(self.notices)

    def _prepare(self, request, start: int, n_lat: int, n_pix: int, pixel_start: int, notes: list[str]) -> PoseChunk:
        from vacelive.engine.conditioning.inputs import InputError, fit, frames01, take_frames, to_rgb

        strength = _clamped(getattr(request, "pose_strength", 0.0), notes)
        if getattr(request, "pose_ref", False):
            notes.append(REF_POSE_NOTICE)
        source = getattr(request, "pose_source", "annotate")
        if source not in POSE_SOURCES:
            notes.append(f"pose_source {source!r} is not one of {', '.join(POSE_SOURCES)}; annotate is used.")
            source = "annotate"
        lookahead = getattr(request, "pose_lookahead", "wait")
        if lookahead not in LOOKAHEAD_MODES:
            notes.append(f"pose_lookahead {lookahead!r} is not one of {', '.join(LOOKAHEAD_MODES)}; wait is used.")
            lookahead = "wait"
        # VACE's plain pose control takes this annotation (one DWPose run per frame); with a mask
        # (control inside the mask) or an overlay map VACE composes and annotates by itself
        vace_wants = (getattr(request, "annotator", "none") == "pose" and request.video is not None
                      and request.mask is None and getattr(request, "annotator_overlay", "none") == "none")
        if strength == 0 and not vace_wants:
            return PoseChunk(None, None)
        if request.video is None:
            if strength > 0:
                notes.append("Pose strength is up but no control video is connected: no pose this chunk.")
            return PoseChunk(None, None)
        try:
            raw = to_rgb(take_frames(frames01(request.video, "Video", self.device, notes), n_pix, "Video", notes), "Video")
        except InputError as e:
            notes.append(f"{e} No pose this chunk.")
            return PoseChunk(None, None)
        rendered = None
        if source == "annotate" or vace_wants:
            pose_map = self._annotate(raw, n_pix, notes)
            if pose_map is None:  # not ready yet / unavailable: no pose this chunk (notice given)
                return PoseChunk(None, None, handles_vace=vace_wants)
            rendered = (pose_map.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
            pose_frames = pose_map if source == "annotate" else raw
        else:
            pose_frames = raw
        if strength == 0:
            return PoseChunk(None, rendered, handles_vace=vace_wants)
        if self.warn_untrained:  # real weights: say what they can and cannot do here
            if self.embedding.needs_proj and not self.embedding.pose_proj_trained:
                notes.append(UNTRAINED_PROJ_NOTICE.format(dim=self.embedding.dim))
            elif not self.embedding.needs_proj:  # UniAnimate's own 5120-wide tokens on a T2V base
                notes.append(T2V_BASE_NOTICE)
        # fitted like VACE's video (request.fit), so the tokens line up with the frame; pose maps
        # are shown with the drawing's triplets as RGB, UniAnimate trained on R/B swapped
        fit_policy = getattr(request, "fit", "crop")
        fitted = fit(pose_frames, self.height, self.width, fit_policy if fit_policy in FITS else "crop", 0.0)[0]
        self.timeline.push(pixel_start, fitted.flip(1))
        cond = self.chunk_tokens(start, n_lat, lookahead)
        if strength != 1:
            cond = cond.mul_(strength)
        self._remember(start, n_lat, cond)
        self.stats["chunks"] += 1
        return PoseChunk(cond, rendered, handles_vace=vace_wants)

    def _annotate(self, frames: torch.Tensor, n: int, notes: list[str]) -> torch.Tensor | None:
        """DWPose renderings of the chunk's frames: the newest finished ones from the annotator
        thread (the previous chunk's frames in steady state), or None with a notice."""
        from vacelive.engine.conditioning.annotators import AnnotatorUnavailable, Annotators

        if self.annotators is None:
            self.annotators = Annotators(self.device, self.dtype)
        job = lambda: self.annotators("pose", frames)  # noqa: E731
        try:
            return self.maps("pose", job, self._seq, n, notes) if self.annotator_thread else job()
        except AnnotatorUnavailable as e:
            notes.append(f"{e} No pose this chunk.")
            return None

    def chunk_tokens(self, start: int, n_lat: int, lookahead: str) -> torch.Tensor:
        """[1, n_lat*h*w, dim] unscaled tokens of latents start..start+n-1 from the timeline."""
        x, skip = self.timeline.window_frames(start, n_lat, lookahead)
        emb = self.embedding.embed_video(x.to(self.dtype))[:, :, skip:skip + n_lat]
        self.stats["cnn_frames"] += x.shape[2]
        return self.embedding.tokens(emb).to(self.dtype)

    def _remember(self, start: int, n_lat: int, cond: torch.Tensor) -> None:
        if self.keep_frames <= 0:
            return
        per = cond.shape[1] // n_lat
        for i in range(n_lat):
            self.history[start + i] = cond[:, i * per:(i + 1) * per]
        for f in [f for f in self.history if f < start + n_lat - self.keep_frames]:
            del self.history[f]


def _clamped(value, notes: list[str]) -> float:
    lo, hi = POSE_STRENGTH_RANGE
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        notes.append(f"pose_strength {value!r} is not a number: using 0")
        return 0.0
    if v != v:
        notes.append(f"pose_strength {value!r} is not a number: using 0")
        return 0.0
    fixed = min(max(v, lo), hi)
    if fixed != v:
        notes.append(f"pose_strength {value!r} out of range {lo:g}..{hi:g}: using {fixed:g}")
    return fixed
