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

from vacelive.engine.codecs import Codec
from vacelive.engine.conditioning.annotators import AnnotatorUnavailable, Annotators
from vacelive.engine.conditioning.encode import VaceEncoder
from vacelive.engine.conditioning.inputs import InputError, fit, frames01, mask_plane, take_frames, to_rgb, to_signed
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
                 models: Path | str | None = None) -> None:
        if width % 16 or height % 16:
            raise ValueError(f"VACE needs a width and height that are multiples of 16, got {width}x{height}")
        self.codec, self.width, self.height = codec, width, height
        self.device, self.dtype = torch.device(device), dtype
        self.encoder = VaceEncoder(codec)
        self.refs = ReferenceSet(codec, height, width, self.device)
        self.annotators = Annotators(self.device, dtype, models)
        self.extension: ExtensionPlan | None = None
        self.tasks = Tasks()
        self.notices: list[str] = []
        self._board = NoticeBoard()

    def reset(self) -> None:
        self.encoder.reset()
        self.refs.clear()
        self.extension = None
        self.annotators.reset()
        self._board.clear()
        self.tasks = Tasks()

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
        result = self._prepare(request, first_chunk, num_frames, notes)
        self.notices = self._board.filter(notes)
        return result

    def _prepare(self, request: ChunkRequest, first_chunk: bool, n: int, notes: list[str]) -> VaceInput | None:
        request = _sanitised(request, notes)
        if request.reset:
            self.reset()
        if first_chunk:  # a new generator stream: the encoder streams and anchors start over
            self.encoder.reset()
            self.extension = None
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
        context = self.encoder.encode(video, mask, shape, reactive_is_zero=anchors_only).to(self.dtype)
        prefix = None
        if len(self.refs):
            context = torch.cat([self.refs.context.to(self.dtype), context], 2)
            prefix = self.refs.latents.to(self.dtype)
        return VaceInput(context=context, prefix_latents=prefix)

    def _update_extension(self, request: ChunkRequest, n: int, notes: list[str]) -> None:
        ext = request.extension
        if ext is not None:
            self.extension = None
            chunks = extension_chunks(ext)
            if chunks is None or chunks > 0:
                try:
                    self.extension = ExtensionPlan(ext, n, self.device, notes)
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

    def _annotate(self, request: ChunkRequest, raw: torch.Tensor, src: torch.Tensor, user_mask,
                  control: bool, notes: list[str]) -> torch.Tensor | None:
        """Control: the annotator's map replaces the video. Inpainting: the map goes where the mask
        regenerates (VACE's control-inside-the-mask composition), the video stays elsewhere.
        Outpainting only: nothing to annotate (the new border has no picture). The annotator
        sees the video at its own size, before fitting (letterbox bars would draw lines)."""
        name = request.annotator
        if name == "none" or not (control or user_mask is not None):
            return src
        try:
            a = fit(self.annotators(name, raw), src.shape[-2], src.shape[-1], request.fit, GRAY)[0]
        except AnnotatorUnavailable as e:
            notes.append(f"{e} Video ignored this chunk.")
            return None
        return a if user_mask is None else torch.where(user_mask > 0.5, a, src)
