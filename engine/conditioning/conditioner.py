"""VaceConditioner: what a ChunkRequest carries -> this chunk's VaceInput (engine.vace_input).

Once per chunk the generator calls `prepare(request, first_chunk=, num_frames=)`:
 1. sticky state: references (encoded once, reused while unchanged) and a running extension;
 2. the chunk's pixels on the device: the video fitted (crop / letterbox / stretch), an annotator
    if asked, the mask from the chosen channel, outpainting's shrunken canvas, extension anchors;
 3. the streaming VACE encoding of those pixels (encode.VaceEncoder: own stream per half);
 4. references as a prefix in conditioning space: context [refs | chunk], prefix latents.
Bad inputs are fixed or dropped with a notice in `self.notices` (the generator reports them, also when
the chunk ends up text-only); a notice is reported when a problem starts, not every chunk.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from vacelive.engine.codecs import LATENT_CHANNELS, Codec
from vacelive.engine.codecs.base import WAN_LATENT_MEAN, WAN_LATENT_STD, LatentNormalizer
from vacelive.engine.conditioning.annotators import BACKGROUND, LAYOUT, AnnotatorUnavailable, Annotators, overlay
from vacelive.engine.conditioning.encode import VaceEncoder
from vacelive.engine.conditioning.inputs import InputError, fit, frames01, mask_plane, take_frames, to_rgb, to_signed
from vacelive.engine.conditioning.layout import LayoutTrack, clean_boxes, detect_and_render, layout_detector
from vacelive.engine.conditioning.runner import AnnotatorRunner, ChunkMaps
from vacelive.engine.conditioning.tasks import (
    ExtensionPlan, ReferenceSet, Tasks, extension_chunks, infer_tasks, outpaint_active, outpaint_rect,
)
from vacelive.engine.request import ChunkRequest
from vacelive.engine.vace_input import VaceInput

GRAY = 0.5  # VACE's "missing" fill in 0..1 (0.0 in [-1, 1])
CHOICES = {"fit": ("crop", "letterbox", "stretch"), "ref_fit": ("crop", "letterbox"),
           "mask_channel": ("alpha", "red", "luma")}


def _sanitised(request: ChunkRequest, notes: list[str]) -> ChunkRequest:
    """The request with unknown choices replaced by their defaults (notice), so nothing below
    has to fail on them."""
    fixes = {}
    for name, allowed in CHOICES.items():
        value = getattr(request, name)
        if value not in allowed:
            notes.append(f"{name} {value!r} is not one of {', '.join(allowed)}; {allowed[0]} is used.")
            fixes[name] = allowed[0]
    if not isinstance(request.annotator, str):
        notes.append(f"annotator {request.annotator!r} is not a name; none is used.")
        fixes["annotator"] = "none"
    return replace(request, **fixes) if fixes else request


class NoticeBoard:
    """Reports a notice when it appears; a problem that persists is not repeated every chunk."""

    def __init__(self) -> None:
        self._current: set[str] = set()

    def filter(self, notices: list[str]) -> list[str]:
        now = list(dict.fromkeys(notices))
        fresh = [n for n in now if n not in self._current]
        self._current = set(now)
        return fresh

    def clear(self) -> None:
        self._current.clear()


class VaceConditioner:
    """engine.vace_input.Conditioner for every VACE task and their compositions (docs/vace.md)."""

    def __init__(self, codec: Codec, width: int, height: int, device, dtype: torch.dtype,
                 models: Path | str | None = None, annotator_thread: bool = True) -> None:
        if width % 16 or height % 16:
            raise ValueError(f"VACE needs a width and height that are multiples of 16, got {width}x{height}")
        self.codec, self.width, self.height = codec, width, height
        self.device, self.dtype = torch.device(device), dtype
        self.encoder = VaceEncoder(codec)
        self.refs = ReferenceSet(codec, height, width, self.device)
        self.annotators = Annotators(self.device, dtype, models)
        # weight-based annotators run one chunk ahead on their own thread (engine.conditioning.runner);
        # annotator_thread=False runs them inline (benchmarks of their cost, offline renders)
        self.annotator_thread = annotator_thread
        self._maps: ChunkMaps | None = None
        self.layout = LayoutTrack()
        self.timings_ms: dict[str, float] = {}  # this chunk's annotator cost and lag (ChunkResult.timings_ms)
        self._seq = 0
        self.extension: ExtensionPlan | None = None
        self.tasks = Tasks()
        self.notices: list[str] = []
        self._board = NoticeBoard()
        self.chunk_frames = 12  # pixel frames of a chunk after the first (set_stream_layout)
        self._raw = None  # LatentNormalizer when contexts are handed over un-normalised

    def set_stream_layout(self, *, chunk_frames: int, raw_latents: bool = False) -> None:
        """The generator's pipeline: pixel frames of every chunk after a stream's first one (what
        extension spans are laid out in), and whether its DiT takes un-normalised VAE latents
        (StreamDiffusionV2): then the inactive/reactive latents and the reference latents are
        handed over as raw mu = z * std + mean, the space its encoder side works in."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.chunk_frames = int(chunk_frames)
        self._raw = LatentNormalizer(WAN_LATENT_MEAN, WAN_LATENT_STD) if raw_latents else None

    def reset(self) -> None:
        self.encoder.reset()
        self.refs.clear()
        self.extension = None
        if self._maps is not None:
            self._maps.clear()
        self.annotators.reset()
        self.layout.reset()
        self._board.clear()
        self.tasks = Tasks()

    @property
    def maps(self) -> ChunkMaps:
        if self._maps is None:
            self._maps = ChunkMaps(AnnotatorRunner(self.device))
        return self._maps

    def close(self, timeout: float = 5.0) -> None:
        """Stop the annotator thread (the stream no longer needs maps); waits up to `timeout`
        seconds for a job still running."""
        if self._maps is not None:
            self._maps.runner.close(timeout)

    def snapshot(self) -> tuple:
        """Everything prepare() changes, by reference (cheap): restore() it when the chunk that
        called prepare() fails, so the retried chunk sees the same streams, anchors and refs."""
        plan = self.extension
        return (self.encoder.snapshot(), self.refs.snapshot(), plan, plan.offset if plan else 0,
                set(self._board._current), self.tasks)

    def restore(self, saved: tuple) -> None:
        enc, refs, plan, offset, board, self.tasks = saved
        self.encoder.restore(enc)
        self.refs.restore(refs)
        self.extension = plan
        if plan is not None:
            plan.offset = offset
        self._board._current = set(board)

    def stats(self) -> dict:
        """Counters for tests and benchmarks: real encoder calls, cached all-zero encodes, reference encodes."""
        return {
            "tasks": str(self.tasks),
            "inactive_encodes": self.encoder.inactive.encoder_calls,
            "reactive_encodes": self.encoder.reactive.encoder_calls,
            "zero_hits": self.encoder.inactive.zero_hits + self.encoder.reactive.zero_hits,
            "reference_encodes": self.refs.encodes,
            "reference_images_encoded": self.refs.images_encoded,
        }

    # ---- per chunk --------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, request: ChunkRequest, *, first_chunk: bool, num_frames: int) -> VaceInput | None:
        notes: list[str] = []
        self._seq += 1
        if self._maps is not None:
            self._maps.begin_chunk()
        result = self._prepare(request, first_chunk, num_frames, notes)
        self.timings_ms = self._maps.timings() if self._maps is not None else {}
        self.notices = self._board.filter(notes)
        return result

    def _prepare(self, request: ChunkRequest, first_chunk: bool, n: int, notes: list[str]) -> VaceInput | None:
        request = _sanitised(request, notes)
        if request.reset:
            self.reset()
        if first_chunk:  # a new generator stream: the encoder streams and anchors start over
            self.encoder.reset()
            self.extension = None
        request = self._layout_video(request, n, notes)
        running = self.extension is not None
        self.tasks = tasks = infer_tasks(request, sticky_refs=len(self.refs) > 0, extension_running=running)
        self.refs.update(request.refs, request.ref_fit, notes)
        self._update_extension(request, n, notes)
        active, video, mask, anchors_only = self._chunk_pixels(request, tasks, n, notes)
        if not active and not len(self.refs):
            self.encoder.reset()  # text only: the conditioning streams lose their continuity
            return None
        shape = (1, n, self.height, self.width)
        # anchors on gray: the kept anchors have mask 0 and the rest is 0.0, so video * m == 0
        context = self.encoder.encode(video, mask, shape, reactive_is_zero=anchors_only)
        if self._raw is not None:
            context = self._raw_context(context)
        context = context.to(self.dtype)
        prefix = None
        if len(self.refs):
            refs_context, prefix = self.refs.context, self.refs.latents
            if self._raw is not None:
                refs_context, prefix = self._raw_context(refs_context, reactive=False), self._raw.denormalize(prefix)
            context = torch.cat([refs_context.to(self.dtype), context], 2)
            prefix = prefix.to(self.dtype)
        return VaceInput(context=context, prefix_latents=prefix)

    def _raw_context(self, context: torch.Tensor, reactive: bool = True) -> torch.Tensor:
        """Encoded latent channels (inactive 0-15, reactive 16-31) de-normalised; mask channels
        unchanged. A reference prefix's reactive half is the original's literal zeros, not an
        encoding (reactive=False keeps it)."""
        c = LATENT_CHANNELS
        parts = [self._raw.denormalize(context[:, :c])]
        parts.append(self._raw.denormalize(context[:, c:2 * c]) if reactive else context[:, c:2 * c])
        return torch.cat(parts + [context[:, 2 * c:]], 1)

    def _update_extension(self, request: ChunkRequest, n: int, notes: list[str]) -> None:
        ext = request.extension
        if ext is not None:
            self.extension = None
            chunks = extension_chunks(ext)
            if chunks is None or chunks > 0:
                try:
                    self.extension = ExtensionPlan(ext, n, self.chunk_frames, self.device, notes)
                except InputError as e:
                    notes.append(str(e))

    def _chunk_pixels(self, request: ChunkRequest, tasks: Tasks, n: int, notes: list[str]):
        """(active, video, mask, anchors_only) of this chunk: video [1, 3, n, H, W] in [-1, 1] or
        None = all gray; mask [1, 1, n, H, W] in [0, 1] or None = all ones; active False = no VACE
        pixels; anchors_only: no source video, only extension anchors on gray."""
        H, W = self.height, self.width
        plan = self.extension
        anchors = plan.take(n) if plan is not None else []
        if plan is not None and plan.finished:
            self.extension = None  # the next chunks inherit nothing but the KV cache
        if request.mask is not None and request.video is None:
            notes.append("The mask has no video to inpaint; connect a video or turn the mask off. Mask ignored.")
        outpaint, region = tasks.outpaint, (0, H, 0, W)
        if outpaint:
            try:
                region = outpaint_rect(request.outpaint, H, W)
            except InputError as e:
                notes.append(str(e))
                outpaint = False
        elif outpaint_active(request.outpaint):
            notes.append("Outpainting needs a video or extension anchors to shrink into the frame; outpaint ignored.")
        y0, y1, x0, x1 = region
        rh, rw = y1 - y0, x1 - x0

        src = content = user_mask = None
        raw = self._video(request, n, notes) if request.video is not None else None
        if raw is not None:
            src, content = fit(raw, rh, rw, request.fit, GRAY)
            if tasks.inpaint:
                user_mask = self._mask(request, n, rh, rw, notes)
            src = self._annotate(request, raw, src, user_mask, user_mask is None and not outpaint, notes)
            if src is None:
                user_mask = None
        if src is None and not anchors:
            return plan is not None, None, None, False  # an extension's gray middle, or nothing

        video = torch.full((n, 3, H, W), GRAY, device=self.device)
        mask = None
        if user_mask is not None or outpaint or anchors:
            mask = torch.ones((n, 1, H, W), device=self.device)
        if src is not None:
            video[:, :, y0:y1, x0:x1] = src
            if user_mask is not None or outpaint:  # a source: kept where the mask is 0
                inner = torch.ones((n, 1, rh, rw), device=self.device)
                cy0, cy1, cx0, cx1 = content  # the picture; letterbox bars are generated
                inner[:, :, cy0:cy1, cx0:cx1] = 0.0 if user_mask is None else user_mask[:, :, cy0:cy1, cx0:cx1]
                mask[:, :, y0:y1, x0:x1] = inner  # (a control map is never kept: mask 1)
        for idx, frames in anchors:
            a, (ay0, ay1, ax0, ax1) = fit(frames, rh, rw, request.fit, GRAY)
            sel = torch.tensor(idx, device=self.device)
            if user_mask is not None:  # inpainting + extension: the anchor fills the masked part
                a = torch.where(user_mask[sel] > 0.5, a, video[sel, :, y0:y1, x0:x1])
            video[sel, :, y0:y1, x0:x1] = a
            keep = torch.ones((len(idx), 1, rh, rw), device=self.device)
            keep[:, :, ay0:ay1, ax0:ax1] = 0.0  # anchor frames are kept (mask 0)
            mask[sel, :, y0:y1, x0:x1] = keep
        video = to_signed(video).transpose(0, 1)[None]
        return True, video, None if mask is None else mask.transpose(0, 1)[None], src is None

    def _video(self, request: ChunkRequest, n: int, notes: list[str]) -> torch.Tensor | None:
        """The request's video as n RGB frames in 0..1 at its own size (None: unusable)."""
        try:
            v = frames01(request.video, "Video", self.device, notes)
            return to_rgb(take_frames(v, n, "Video", notes), "Video")
        except InputError as e:
            notes.append(f"{e} Video ignored this chunk.")
            return None

    def _mask(self, request: ChunkRequest, n: int, rh: int, rw: int, notes: list[str]):
        try:
            m = frames01(request.mask, "Mask", self.device, notes)
            m = mask_plane(m, request.mask_channel, "Mask", notes)
            m = fit(take_frames(m, m.shape[0] if m.shape[0] == 1 else n, "Mask", notes), rh, rw, request.fit, 1.0)[0]
            return m.expand(n, -1, -1, -1) if m.shape[0] == 1 else m
        except InputError as e:
            notes.append(f"{e} Mask ignored this chunk.")
            return None

    def _layout_video(self, request: ChunkRequest, n: int, notes: list[str]) -> ChunkRequest:
        """The layout annotator with OSC boxes: the boxes, drawn at the output size, become the
        chunk's control video (the camera, if any, is not used). With a detector plug-in and a
        video, the boxes are tracked in the video instead (in _annotate, on the annotator thread)."""
        if request.annotator != LAYOUT or (layout_detector() is not None and request.video is not None):
            return request
        boxes = clean_boxes(request.layout, notes)
        if not boxes:
            self.layout.reset()
            notes.append("Layout annotator: no boxes; send /vace/layout/box id x y w h (0-1). "
                         "No layout control this chunk.")
            return replace(request, video=None, annotator="none")
        frames = self.layout(boxes, n, self.height, self.width, self.device)
        return replace(request, video=frames.permute(0, 2, 3, 1), annotator="none")

    def _annotate(self, request: ChunkRequest, raw: torch.Tensor, src: torch.Tensor, user_mask,
                  control: bool, notes: list[str]) -> torch.Tensor | None:
        """Control: the annotator's map replaces the video. Inpainting: the map goes where the mask
        regenerates (VACE's control-inside-the-mask composition), the video stays elsewhere.
        Outpainting only: nothing to annotate (the new border has no picture). The annotator
        sees the video at its own size, before fitting (letterbox bars would draw lines).
        An overlay annotator draws its map over the first one (or over the video itself)."""
        name, top_name = request.annotator, request.annotator_overlay
        if (name == "none" and top_name == "none") or not (control or user_mask is not None):
            return src
        n = raw.shape[0]
        a = src
        if name != "none":
            a = self._map(name, raw, n, src, request.fit, notes, "Video ignored this chunk.")
            if a is None:
                return None
        if top_name != "none":
            top = self._map(top_name, raw, n, src, request.fit, notes, "Overlay ignored this chunk.")
            if top is not None:
                a = overlay(a, top, BACKGROUND.get(top_name))
        return a if user_mask is None else torch.where(user_mask > 0.5, a, src)

    def _map(self, name: str, raw: torch.Tensor, n: int, src: torch.Tensor, fit_policy: str,
             notes: list[str], dropped: str) -> torch.Tensor | None:
        """The map of annotator `name` fitted like the video; None when there is none (notice)."""
        if name == LAYOUT:
            detector = layout_detector()
            if detector is None:
                notes.append("Layout as an overlay needs a layout detector plug-in (boxes from OSC "
                             f"are drawn by the main annotator). {dropped}")
                return None
            job = lambda: detect_and_render(raw, detector)  # noqa: E731
        else:
            job = lambda: self.annotators(name, raw)  # noqa: E731
        try:
            if self.annotator_thread and (name == LAYOUT or self.annotators.threaded(name)):
                m = self.maps(name, job, self._seq, n, notes)
            else:
                m = job()
        except AnnotatorUnavailable as e:
            notes.append(f"{e} {dropped}")
            return None
        if m is None:
            return None
        return fit(m, src.shape[-2], src.shape[-1], fit_policy, GRAY)[0]
