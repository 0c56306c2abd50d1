"""Depth annotator: Depth Anything V2 (transformers) with a normalisation that does not flicker.

VACE's `depthv2` annotator min-max normalises every frame on its own (near = white, gray x3). On
live video that flickers: one bright object entering the frame rescales every other depth. Here
one range is used for a whole chunk and carried across chunks (`TemporalRange`): it widens at
once to take in a new extreme (nothing clips) and narrows back towards the chunk's own range by
`decay` per chunk. decay=1 is exactly a per-chunk min-max; a ramp of depths is still a ramp.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from vacelive.engine.annotator_models import ANNOTATOR_MODELS, missing_message

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TemporalRange:
    """Running [lo, hi] of a signal over chunks (see module doc)."""

    def __init__(self, decay: float = 0.3) -> None:
        self.decay = decay
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def reset(self) -> None:
        self.lo = self.hi = None

    def __call__(self, d: torch.Tensor) -> torch.Tensor:
        """[F, 1, H, W] -> the same normalised to 0..1 by the running range (no host sync)."""
        lo, hi = d.amin(), d.amax()
        if self.lo is not None:
            lo = torch.minimum(lo, self.lo + self.decay * (lo - self.lo))
            hi = torch.maximum(hi, self.hi + self.decay * (hi - self.hi))
        self.lo, self.hi = lo, hi
        span = hi - lo
        return ((d - lo) / torch.where(span > 0, span, torch.ones_like(span))).clamp_(0, 1)


class DepthAnything:
    """Depth Anything V2 on frames [F, 3, H, W] in 0..1 -> [F, 3, H, W] depth maps, near = white."""

    def __init__(self, model, device: torch.device, dtype: torch.dtype, decay: float = 0.3) -> None:
        self.model, self.dtype = model, dtype
        self.patch = int(getattr(model.config, "patch_size", 14))
        self.mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)
        self.range = TemporalRange(decay)

    def reset(self) -> None:
        self.range.reset()

    def relative_depth(self, frames: torch.Tensor) -> torch.Tensor:
        """The model's relative inverse depth at the frames' size, [F, 1, H, W] float32."""
        # Depth Anything V2 `infer_image`: shorter side to 518, sides rounded up to multiples of
        # 14 (its "lower_bound" resize), bicubic, ImageNet normalisation; prediction resized back
        # bilinearly.
        h, w = frames.shape[-2:]
        scale = 518 / min(h, w)
        p = self.patch
        size = (max(p, math.ceil(h * scale / p) * p), max(p, math.ceil(w * scale / p) * p))
        x = F.interpolate(frames, size=size, mode="bicubic", align_corners=False).clamp_(0, 1)
        x = ((x - self.mean) / self.std).to(self.dtype)
        d = self.model(pixel_values=x).predicted_depth.float().unsqueeze(1)
        return F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.range(self.relative_depth(frames)).expand(-1, 3, -1, -1).to(frames.dtype)


def load(name: str, models: Path, device: torch.device, dtype: torch.dtype) -> DepthAnything:
    """The Depth Anything V2 model of annotator `name` (depth, depth-base, depth-large) from the
    models folder (its Hugging Face layout: config.json + model.safetensors)."""
    from vacelive.engine.conditioning.annotators import AnnotatorUnavailable, WeightsNotFound

    spec = ANNOTATOR_MODELS[name]
    if spec.missing(models):
        raise WeightsNotFound(missing_message(spec, models, f"Depth annotator ({spec.title})"))
    folder = models / spec.folder
    try:
        from transformers import AutoModelForDepthEstimation

        model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True, dtype=dtype)
    except Exception as e:  # noqa: BLE001 - a broken folder is reported, the show goes on
        raise AnnotatorUnavailable(f"Depth annotator: could not load {folder}: {e}") from None
    # .to(dtype) as well: older transformers releases read torch_dtype= and ignore dtype=
    return DepthAnything(model.to(device=device, dtype=dtype).eval().requires_grad_(False), device, dtype)
