"""VACE tasks in a stream: which ones a request asks for, sticky references, outpainting geometry
and the frame layout of first/last frame and clip extension. Semantics: docs/vace.md.

Tasks are implicit (no mode parameter) and combine freely:
    r2v        reference images (sticky: request.refs None keeps them, [] clears, a list replaces)
    control    a video without mask or outpaint: a control map (depth, pose, flow, scribble, gray,
               layout; or a camera feed through an annotator); mask all ones
    inpaint    a video with a mask: white = regenerate, black = keep
    outpaint   a video or extension anchors shrunk into the frame, the new border generated
    extension  first/last frame or clip anchors, running for `chunks` chunks from the request
A mask needs a video (what would be kept otherwise?); outpainting needs a video or anchors.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from vacelive.engine.codecs import Codec
from vacelive.engine.conditioning.encode import chunk_groups, encode_references, reference_context
from vacelive.engine.conditioning.inputs import InputError, fit, frames01, to_rgb, to_signed
from vacelive.engine.request import ChunkRequest, Extension, Outpaint

MAX_REFS = 3


@dataclass(frozen=True)
class Tasks:
    r2v: bool = False
    control: bool = False
    inpaint: bool = False
    outpaint: bool = False
    extension: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name))

    def __bool__(self) -> bool:
        return bool(self.names)

    def __str__(self) -> str:
        return "+".join(self.names) or "text"


SIDES = ("left", "right", "top", "bottom")


def outpaint_active(outpaint: Outpaint | None) -> bool:
    """Any side asks for new area (a side that is not a number counts, so it gets reported)."""
    if outpaint is None:
        return False
    for side in SIDES:
        try:
            if float(getattr(outpaint, side, 0.0)) > 0:
                return True
        except (TypeError, ValueError):
            return True
    return False


def extension_chunks(ext: Extension) -> int | None:
    """The extension's span in chunks (None: not a whole number)."""
    try:
        return int(ext.chunks)
    except (TypeError, ValueError, OverflowError):
        return None


def infer_tasks(request: ChunkRequest, *, sticky_refs: bool = False, extension_running: bool = False) -> Tasks:
    """What this request asks for, given whether references are held from earlier requests and
    whether an extension started earlier is still running."""
    r2v = bool(request.refs) if request.refs is not None else sticky_refs
    ext = request.extension
    if ext is not None:
        chunks = extension_chunks(ext)
        extension = chunks is None or chunks > 0  # a bad count is tried, and reported
    else:
        extension = extension_running
    video = request.video is not None
    inpaint = video and request.mask is not None
    outpaint = outpaint_active(request.outpaint) and (video or extension)
    control = video and not inpaint and not outpaint
    return Tasks(r2v=r2v, control=control, inpaint=inpaint, outpaint=outpaint, extension=extension)


def outpaint_rect(outpaint: Outpaint, height: int, width: int) -> tuple[int, int, int, int]:
    """The rectangle (y0, y1, x0, x1) the input is shrunk into; the rest of the frame is the new
    area. Sides are fractions of the output size."""
    sides = {}
    for s in SIDES:
        try:
            sides[s] = float(getattr(outpaint, s, 0.0))
        except (TypeError, ValueError):
            sides[s] = float("nan")
    bad = [s for s, v in sides.items() if not 0.0 <= v < 1.0]
    if bad:
        raise InputError(f"Outpaint {', '.join(bad)} must be between 0 and 1 (fractions of the frame); outpaint ignored.")
    x0, x1 = round(sides["left"] * width), width - round(sides["right"] * width)
    y0, y1 = round(sides["top"] * height), height - round(sides["bottom"] * height)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise InputError("Outpaint leaves no room for the input (left + right or top + bottom is too close to 1); outpaint ignored.")
    return y0, y1, x0, x1


# ---- references (R2V) -----------------------------------------------------------------------------
class ReferenceSet:
    """Sticky reference images: fitted to the output size, each encoded once and reused while it
    is unchanged (`encodes` counts encoder calls, `images_encoded` the pictures they encoded)."""

    def __init__(self, codec: Codec, height: int, width: int, device: torch.device) -> None:
        self.codec, self.height, self.width, self.device = codec, height, width, device
        self.encodes = 0
        self.images_encoded = 0
        self.clear()

    def clear(self) -> None:
        self._raw: list[torch.Tensor] = []  # [3, h, w] in [0, 1], alpha composited on white
        self._fit = "crop"
        self.images: torch.Tensor | None = None  # [P, 3, H, W] in [-1, 1]
        self.latents: torch.Tensor | None = None  # [1, 16, P, H/8, W/8]
        self.context: torch.Tensor | None = None  # [1, 96, P, H/8, W/8]

    def __len__(self) -> int:
        return 0 if self.latents is None else self.latents.shape[2]

    def snapshot(self) -> tuple:  # tensors are replaced on change, never mutated
        return list(self._raw), self._fit, self.images, self.latents, self.context

    def restore(self, saved: tuple) -> None:
        raw, self._fit, self.images, self.latents, self.context = saved
        self._raw = list(raw)

    def update(self, refs, ref_fit: str, notices: list[str]) -> None:
        """Apply request.refs (None keeps, [] clears, a list replaces) and request.ref_fit."""
        if refs is None:
            if self._raw and ref_fit != self._fit:
                self._build(self._raw, ref_fit, notices)
            return
        if len(refs) == 0:
            self.clear()
            return
        if len(refs) > MAX_REFS:
            notices.append(f"VACE takes at most {MAX_REFS} reference images; using the first {MAX_REFS} of {len(refs)}.")
            refs = refs[:MAX_REFS]
        raw = []
        for i, r in enumerate(refs):
            what = f"Reference image {i + 1}"
            try:
                x = frames01(r, what, self.device, notices)
                if x.shape[0] > 1:
                    notices.append(f"{what} has {x.shape[0]} frames; its first frame is used.")
                raw.append(to_rgb(x[:1], what, background=1.0)[0])
            except InputError as e:
                notices.append(str(e))
        if not raw:
            notices.append("No usable reference image; the previous references stay." if self._raw
                           else "No usable reference image; references stay off.")
            return
        self._build(raw, ref_fit, notices)

    def _build(self, raw: list[torch.Tensor], ref_fit: str, notices: list[str]) -> None:
        # ref_fit is crop or letterbox (the conditioner sanitises it); letterbox on a white canvas, as the original's prepare_source
        images = to_signed(torch.cat([fit(r[None], self.height, self.width, ref_fit, 1.0)[0] for r in raw]))
        self._raw, self._fit = raw, ref_fit
        known = [] if self.images is None else list(zip(self.images, self.latents.unbind(2)))
        latents: list[torch.Tensor | None] = []
        for img in images:  # an unchanged picture keeps its latent
            latents.append(next((lat for old, lat in known if torch.equal(old, img)), None))
        todo = [i for i, lat in enumerate(latents) if lat is None]
        if todo:
            fresh = encode_references(self.codec, images[todo])
            for j, i in enumerate(todo):
                latents[i] = fresh[:, :, j]
            self.encodes += 1
            self.images_encoded += len(todo)
        self.images = images
        self.latents = torch.stack(latents, 2)
        self.context = reference_context(self.latents)


# ---- extension --------------------------------------------------------------------------------------
FRAME_MODES = {"firstframe": (True, False), "lastframe": (False, True), "firstlastframe": (True, True)}
CLIP_MODES = {"firstclip": (True, False), "lastclip": (False, True), "firstlastclip": (True, True)}


class ExtensionPlan:
    """One extension request laid out over its span: the chunk it arrives in plus chunks - 1 more.

    Span frames are numbered from the first frame of the arrival chunk; T = frames of the span.
    - first image: held over the first latent group of the arrival chunk (frame 0 alone in a
      stream's very first chunk - exactly the original firstframe - else frames 0-3);
    - last image: held over the last latent group of the span's last chunk (its last 4 frames);
    - clips: frame by frame, the first clip from span frame 0, the last clip ending on frame T - 1.
    Anchor frames get mask 0 (keep); every other frame of the span is VACE's gray with mask 1
    (or the control/source video when there is one). `take(n)` hands out the next chunk's part.
    """

    def __init__(self, ext: Extension, first_chunk_frames: int, chunk_frames: int, device: torch.device,
                 notices: list[str]) -> None:
        """first_chunk_frames: pixel frames of the arrival chunk; chunk_frames: of every later chunk
        (the pipeline's: 12 for 3-latent chunks, 4 for StreamDiffusionV2's 1-latent chunks)."""
        mode = ext.mode
        if mode in FRAME_MODES:
            want_first, want_last = FRAME_MODES[mode]
            clips = False
        elif mode in CLIP_MODES:
            want_first, want_last = CLIP_MODES[mode]
            clips = True
        else:
            raise InputError(f"Extension mode {mode!r} is unknown; use firstframe, lastframe, firstlastframe, firstclip, lastclip or firstlastclip.")
        missing = [w for w, want, got in (("first", want_first, ext.first), ("last", want_last, ext.last)) if want and got is None]
        if missing:
            raise InputError(f"Extension {mode} needs a {' and a '.join(missing)} {'clip' if clips else 'image'}; extension ignored.")
        chunks = extension_chunks(ext)
        if chunks is None:
            raise InputError(f"Extension chunks must be a whole number, got {ext.chunks!r}; extension ignored.")
        self.mode = mode
        self.chunks = max(1, chunks)
        self.total = first_chunk_frames + chunk_frames * (self.chunks - 1)
        self.offset = 0
        first = self._anchor(ext.first, "first", clips, device, notices) if want_first else None
        last = self._anchor(ext.last, "last", clips, device, notices) if want_last else None
        if first is not None and not clips:  # image: hold it over the arrival chunk's first group
            first = first.expand(chunk_groups(first_chunk_frames)[0][1], -1, -1, -1)
        if last is not None and not clips:  # ... and over the span's last group
            last_chunk = first_chunk_frames if self.chunks == 1 else chunk_frames
            g0, g1 = chunk_groups(last_chunk)[-1]
            last = last.expand(g1 - g0, -1, -1, -1)
        # span frame -> (anchor, frame) lookup; the first anchor wins an overlap
        n_first = 0
        if first is not None:
            if first.shape[0] > self.total:
                notices.append(f"The first clip has {first.shape[0]} frames but the extension spans {self.total}; its first {self.total} are used.")
                first = first[:self.total]
            n_first = first.shape[0]
        if last is not None:
            room = self.total - n_first
            if last.shape[0] > room:
                notices.append(f"The last clip has {last.shape[0]} frames but only {room} are free in the extension's {self.total}; its last {room} are used (send more chunks for a longer gap).")
                last = last[last.shape[0] - room:] if room > 0 else None
        self.first, self.last = first, last

    @staticmethod
    def _anchor(x, which: str, clips: bool, device, notices: list[str]) -> torch.Tensor:
        what = f"Extension {which} {'clip' if clips else 'image'}"
        f = to_rgb(frames01(x, what, device, notices), what)
        if not clips and f.shape[0] > 1:
            notices.append(f"{what} has {f.shape[0]} frames; its {'first' if which == 'first' else 'last'} frame is used (use a clip mode for clips).")
            f = f[:1] if which == "first" else f[-1:]
        return f

    @property
    def finished(self) -> bool:
        return self.offset >= self.total

    def take(self, n: int) -> list[tuple[list[int], torch.Tensor]]:
        """The anchors of the next n span frames, per anchor: (frame indices in the chunk,
        frames [k, 3, h, w] in [0, 1]); advances the span."""
        start, end = self.offset, min(self.offset + n, self.total)
        self.offset = start + n
        out = []
        if self.first is not None and start < self.first.shape[0]:
            stop = min(end, self.first.shape[0])
            out.append((list(range(0, stop - start)), self.first[start:stop]))
        if self.last is not None:
            begin = self.total - self.last.shape[0]
            lo = max(start, begin)
            if lo < end:
                out.append((list(range(lo - start, end - start)), self.last[lo - begin:end - begin]))
        return out
