"""Optical-flow annotator: RAFT (torchvision) between consecutive frames, drawn on the colour wheel
VACE's flow task was trained with.

VACE's `FlowVisAnnotator` runs RAFT on each pair (frame i, frame i + 1) and draws every flow with
`flow_viz.flow_to_image` - the Middlebury colour wheel of Baker et al. 2007 as coded by Tom Runia
(github.com/tomrunia/OpticalFlow_Visualization): 55 hues (red-yellow 15, yellow-green 6,
green-cyan 4, cyan-blue 11, blue-magenta 13, magenta-red 6), hue = direction (rightwards red,
downwards yellow, leftwards cyan-blue, upwards violet), saturation = speed relative to the
frame's fastest pixel (no motion = white). F frames give F - 1 flows; VACE repeats the first.

Streaming: a chunk's first frame pairs with the last frame of the previous chunk (`FlowPairs`), so
every output frame has a real flow; only the very first frame of a stream (nothing before it)
repeats the next flow, as VACE does.

RAFT comes from torchvision.models.optical_flow (raft_small / raft_large), weights read from the
models folder (placed by `vacelive weights download flow`). torchvision is an optional dependency
(the `annotators` extra); without it the flow annotator says so and the stream goes on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from vacelive.engine.annotator_models import ANNOTATOR_MODELS, missing_message

RY, YG, GC, CB, BM, MR = 15, 6, 4, 11, 13, 6
NCOLS = RY + YG + GC + CB + BM + MR


def colorwheel() -> torch.Tensor:
    """The 55 x 3 Middlebury wheel, 0..255 (flow_vis.make_colorwheel)."""
    def ramp(n):
        return torch.floor(255 * torch.arange(n, dtype=torch.float64) / n)

    full = lambda n: torch.full((n,), 255.0, dtype=torch.float64)  # noqa: E731
    zero = lambda n: torch.zeros(n, dtype=torch.float64)  # noqa: E731
    segments = [
        (full(RY), ramp(RY), zero(RY)),  # red -> yellow
        (255 - ramp(YG), full(YG), zero(YG)),  # yellow -> green
        (zero(GC), full(GC), ramp(GC)),  # green -> cyan
        (zero(CB), 255 - ramp(CB), full(CB)),  # cyan -> blue
        (ramp(BM), zero(BM), full(BM)),  # blue -> magenta
        (full(MR), zero(MR), 255 - ramp(MR)),  # magenta -> red
    ]
    return torch.cat([torch.stack(s, 1) for s in segments]).float()


def flow_to_rgb(flow: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Flow [F, 2, H, W] (u rightwards, v downwards, pixels) -> [F, 3, H, W] in 0..1, as
    flow_vis.flow_to_image (normalised by each frame's largest motion, floored to 8 bits)."""
    wheel = colorwheel().to(flow.device)
    u, v = flow[:, 0].float(), flow[:, 1].float()
    rad_max = torch.sqrt(u * u + v * v).amax(dim=(1, 2), keepdim=True)
    u, v = u / (rad_max + eps), v / (rad_max + eps)
    rad = torch.sqrt(u * u + v * v)
    a = torch.atan2(-v, -u) / torch.pi
    fk = (a + 1) / 2 * (NCOLS - 1)
    k0 = fk.floor().long()
    k1 = torch.where(k0 + 1 == NCOLS, torch.zeros_like(k0), k0 + 1)
    f = (fk - k0)[..., None]
    col = (1 - f) * wheel[k0] / 255 + f * wheel[k1] / 255  # [F, H, W, 3]
    inside = (rad <= 1)[..., None]
    col = torch.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    return (torch.floor(255 * col) / 255).permute(0, 3, 1, 2).contiguous()


Estimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ([N,3,H,W], [N,3,H,W]) 0..1 -> [N,2,H,W]


class FlowPairs:
    """Flow maps of a stream of windows: each frame paired with the one before it, across chunk
    boundaries (module doc). `estimator(a, b)` is the flow from a to b in pixels."""

    def __init__(self, estimator: Estimator) -> None:
        self.estimator = estimator
        self.last: torch.Tensor | None = None  # the last frame seen, [1, 3, H, W]
        self.pairs = 0  # flows computed (tests, benchmarks)

    def reset(self) -> None:
        self.last = None

    def flows(self, frames: torch.Tensor) -> torch.Tensor:
        """[F, 3, H, W] -> [F, 2, H, W]: flow i is from the frame before frame i to frame i."""
        prev = self.last
        if prev is not None and prev.shape[-2:] != frames.shape[-2:]:
            prev = None  # the input changed size: a new shot, nothing to pair with
        self.last = frames[-1:].clone()
        if prev is None:
            if frames.shape[0] == 1:
                return torch.zeros_like(frames[:, :2])
            f = self.estimator(frames[:-1], frames[1:])
            self.pairs += f.shape[0]
            return torch.cat([f[:1], f])  # the stream's first frame repeats the next flow (VACE)
        f = self.estimator(torch.cat([prev, frames[:-1]]), frames)
        self.pairs += f.shape[0]
        return f

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return flow_to_rgb(self.flows(frames)).to(frames.dtype)


class RaftEstimator:
    """torchvision RAFT as an Estimator: frames resized to a multiple of 8 (at most `max_side`),
    normalised to -1..1 (torchvision's OpticalFlow transform), flow scaled back to the frames' size."""

    def __init__(self, model, num_flow_updates: int = 12, max_side: int = 832) -> None:
        self.model, self.updates, self.max_side = model, num_flow_updates, max_side

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h, w = a.shape[-2:]
        s = min(1.0, self.max_side / max(h, w))
        rh, rw = max(8, round(h * s / 8) * 8), max(8, round(w * s / 8) * 8)
        x = torch.cat([a, b])
        if (rh, rw) != (h, w):
            x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
        x = x * 2 - 1
        n = a.shape[0]
        flow = self.model(x[:n], x[n:], num_flow_updates=self.updates)[-1].float()
        if (rh, rw) != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([w / rw, h / rh], device=flow.device).view(1, 2, 1, 1)
        return flow


def load(name: str, models: Path, device: torch.device, dtype: torch.dtype) -> FlowPairs:
    """RAFT small (`flow`) or large (`flow-large`) from `<models>/torchvision/` (torchvision's own
    weight files, state dicts of torchvision.models.optical_flow.RAFT)."""
    from vacelive.engine.conditioning.annotators import AnnotatorUnavailable, WeightsNotFound

    spec = ANNOTATOR_MODELS[name]
    if spec.missing(models):  # checked first: the download needs no torchvision
        raise WeightsNotFound(missing_message(spec, models, f"Flow annotator ({spec.title})"))
    try:
        from torchvision.models.optical_flow import raft_large, raft_small
    except Exception as e:  # noqa: BLE001 - missing or broken torchvision: reported, show goes on
        raise AnnotatorUnavailable(
            f"Flow annotator: torchvision is not importable here ({type(e).__name__}: {e}); install "
            "the annotators extra (pip install 'vacelive[annotators]') with a torchvision that "
            "matches your torch.") from None
    path = models / spec.files[0].path
    try:
        model = (raft_large if name == "flow-large" else raft_small)(weights=None, progress=False)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001
        raise AnnotatorUnavailable(f"Flow annotator: could not load {path}: {e}") from None
    # RAFT's correlation volume wants float32; it stays float32 whatever the stream dtype.
    model = model.to(device).eval().requires_grad_(False)
    return FlowPairs(RaftEstimator(model))
