"""Annotators: turn a camera feed into a VACE control map on the GPU (request.annotator).

Frames in and out are float [F, 3, H, W] in [0, 1] (the annotator output is what VACE's
annotators write as uint8 frames, before the /127.5 - 1 normalisation).

Weight-free, built in:
- gray: BT.601 luma replicated to 3 channels (VACE `gray`, cv2.COLOR_BGR2GRAY).
- edges: Sobel gradient magnitude of the luma, normalised per frame to 0..1.
- scribble: Canny-style lines - Gaussian blur, Sobel, non-maximum suppression along the gradient,
  double threshold and hysteresis - drawn white on black, like VACE's scribble maps. (VACE's own
  scribble annotator is a learned contour network; this is the weight-free stand-in.)

Weight-based, optional plug-ins (`PLUGINS`, `register_annotator`), loaded lazily from the models
folder on the annotator thread; when the weights are missing the chunk runs without the video and
the performer reads a notice naming the files and the download command:
- depth / depth-base / depth-large: Depth Anything V2 Small / Base / Large through transformers
  (engine.conditioning.depth), near = white, gray x3 (VACE `depthv2`), with a running range
  that does not flicker from chunk to chunk.
- flow / flow-large: RAFT small / large from torchvision (engine.conditioning.flow) on the
  Middlebury colour wheel (VACE `flow`), frames paired across chunk boundaries.
Weights come from `vacelive weights download <name>` (engine.annotator_models); nothing is
downloaded at run time. `layout` (engine.conditioning.layout) draws boxes given over OSC.
- pose: DWPose (YOLOX-L + DWPose-L ONNX over onnxruntime, `<models>/DWPose/`, placed by
  `vacelive weights download pose`) drawn like DWPose/ControlNet, run on a worker thread so it
  never stalls a chunk (engine.conditioning.pose_annotator).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from vacelive.engine.conditioning.inputs import luma


class AnnotatorUnavailable(RuntimeError):
    """The annotator cannot run here (missing weights, missing implementation); str() says why
    and what to do, for the performer."""


class WeightsNotFound(AnnotatorUnavailable):
    """The plug-in's weight files are not in the models folder (looked for again on next use)."""


Annotate = Callable[[torch.Tensor], torch.Tensor]


def gray(frames: torch.Tensor) -> torch.Tensor:
    return luma(frames).expand(-1, 3, -1, -1)


_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def sobel(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[F, 1, H, W] -> (gx, gy), 3x3 Sobel with replicated borders (gx: rightwards, gy: downwards)."""
    kx = torch.tensor(_SOBEL_X, dtype=g.dtype, device=g.device)
    k = torch.stack([kx, kx.t()])[:, None]  # [2, 1, 3, 3]
    d = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k)
    return d[:, :1], d[:, 1:]


def edges(frames: torch.Tensor) -> torch.Tensor:
    gx, gy = sobel(luma(frames))
    mag = torch.hypot(gx, gy)
    peak = mag.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (mag / peak).expand(-1, 3, -1, -1)


def gaussian_blur(g: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=g.dtype, device=g.device)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    k = k / k.sum()
    g = F.conv2d(F.pad(g, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(g, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


def canny(g: torch.Tensor, low: float = 0.2, high: float = 0.4, sigma: float = 1.4,
          max_iterations: int | None = None) -> torch.Tensor:
    """Canny edges of [F, 1, H, W] gray in [0, 1] -> bool [F, 1, H, W]. Thresholds are Sobel
    magnitudes of the blurred 0..1 image (a full-contrast step edge gives ~2): 0.2 / 0.4 are steps
    of ~10 % / 20 % contrast, like the usual 100 / 200 on 8-bit images. Hysteresis grows strong
    edges through weak ones until nothing changes (checked every 8 steps; at most
    max_iterations, default H + W)."""
    gx, gy = sobel(gaussian_blur(g, sigma))
    mag = torch.hypot(gx, gy)
    # gradient direction folded to [0, 180) and quantised to 0 / 45 / 90 / 135 degrees
    angle = torch.rad2deg(torch.atan2(gy, gx)).remainder(180.0)
    sector = torch.round(angle / 45.0).long().remainder(4)
    p = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    # neighbours along the gradient (y grows downwards): 0 deg -> left/right, 90 -> up/down,
    # 45 -> (+1,+1)/(-1,-1), 135 -> (+1,-1)/(-1,+1)
    n1 = torch.stack([at(0, 1), at(1, 1), at(1, 0), at(1, -1)])
    n2 = torch.stack([at(0, -1), at(-1, -1), at(-1, 0), at(-1, 1)])
    s = sector.unsqueeze(0)
    a, b = n1.gather(0, s)[0], n2.gather(0, s)[0]
    thin = mag * ((mag >= a) & (mag > b))
    weak = thin >= low
    out = thin >= high
    limit = max_iterations if max_iterations is not None else h + w
    step = 0
    while step < limit:
        before = out
        for _ in range(min(8, limit - step)):
            out = weak & (F.max_pool2d(out.float(), 3, 1, 1) > 0)
            step += 1
        if torch.equal(out, before):
            break
    return out


def scribble(frames: torch.Tensor) -> torch.Tensor:
    return canny(luma(frames)).to(frames.dtype).expand(-1, 3, -1, -1)


# ---- weight-based plug-ins -----------------------------------------------------------------------
class Plugin(Protocol):
    def __call__(self, models: Path, device: torch.device, dtype: torch.dtype) -> Annotate:
        """Load and return the annotator, or raise AnnotatorUnavailable (missing weights: the
        message names the expected path and where to get the file)."""


def _model_plugin(module: str, name: str) -> Plugin:
    def load(models: Path, device: torch.device, dtype: torch.dtype) -> Annotate:
        from importlib import import_module

        return import_module(f"vacelive.engine.conditioning.{module}").load(name, models, device, dtype)
    load.__name__ = f"load_{name.replace('-', '_')}"
    return load


BUILT_IN: dict[str, Annotate] = {"gray": gray, "edges": edges, "scribble": scribble}
PLUGINS: dict[str, Plugin] = {
    "depth": _model_plugin("depth", "depth"),  # Depth Anything V2 Small (engine.conditioning.depth)
    "depth-base": _model_plugin("depth", "depth-base"),
    "depth-large": _model_plugin("depth", "depth-large"),
    "flow": _model_plugin("flow", "flow"),  # RAFT small (engine.conditioning.flow)
    "flow-large": _model_plugin("flow", "flow-large"),
    "pose": _model_plugin("pose_annotator", "pose"),  # DWPose (engine.conditioning.pose_annotator)
}
# The background of each map (what an overlay leaves see-through); None: no background (a picture).
BACKGROUND: dict[str, float | None] = {
    "gray": None, "edges": 0.0, "scribble": 0.0, "pose": 0.0, "layout": 1.0,
    "depth": None, "depth-base": None, "depth-large": None, "flow": 1.0, "flow-large": 1.0,
}
# The annotator that needs no video frames of its own: boxes from OSC (engine.conditioning.layout).
LAYOUT = "layout"


def register_annotator(name: str, plugin: Plugin) -> None:
    """Add or replace a weight-based annotator plug-in (e.g. a real pose estimator)."""
    PLUGINS[name] = plugin


class Annotators:
    """Runs the annotator a request names; plug-ins are loaded on first use and kept. Missing
    weights are looked for again on the next use (copy them in while running); a plug-in that
    failed to load is not retried until reset()."""

    def __init__(self, device: torch.device, dtype: torch.dtype, models: Path | str | None = None) -> None:
        self.device, self.dtype = device, dtype
        self._models = Path(models).expanduser() if models is not None else None
        self._loaded: dict[str, Annotate] = {}
        self._failed: dict[str, str] = {}

    @property
    def models(self) -> Path:
        if self._models is None:
            from vacelive.engine.models_dir import models_dir

            return models_dir()
        return self._models

    def reset(self) -> None:
        """A new stream: plug-ins that failed are tried again; stateful ones (flow's previous
        frame, depth's running range) start over."""
        self._failed.clear()
        for fn in self._loaded.values():
            if hasattr(fn, "reset"):
                fn.reset()

    @staticmethod
    def threaded(name: str) -> bool:
        """Weight-based annotators run on the annotator thread (engine.conditioning.runner); the
        built-in ones cost about a millisecond and run inline."""
        return name not in BUILT_IN and name != "none"

    def __call__(self, name: str, frames: torch.Tensor) -> torch.Tensor:
        if name == "none":
            return frames
        fn = BUILT_IN.get(name) or self._loaded.get(name)
        if fn is None:
            fn = self._load(name)
        return fn(frames)

    def _load(self, name: str) -> Annotate:
        if name in self._failed:
            raise AnnotatorUnavailable(self._failed[name])
        plugin = PLUGINS.get(name)
        if plugin is None:
            choices = ", ".join(["none", *BUILT_IN, *PLUGINS, LAYOUT])
            raise AnnotatorUnavailable(f"Unknown annotator {name!r}; choose one of {choices}.")
        try:
            fn = plugin(self.models, self.device, self.dtype)
        except WeightsNotFound:
            raise
        except AnnotatorUnavailable as e:
            self._failed[name] = str(e)
            raise
        self._loaded[name] = fn
        return fn


def overlay(base: torch.Tensor, top: torch.Tensor, background: float | None = None) -> torch.Tensor:
    """Two control maps as one (VACE's control + control composition, with the mask taken from
    the top map): `top` wherever it is not its background, `base` elsewhere. background None:
    taken from the top map's most common corner value (black for pose/scribble/edges, white for
    flow and layout). Both [F, 3, H, W] in 0..1, same size."""
    if background is None:
        corners = torch.stack([top[..., 0, 0], top[..., 0, -1], top[..., -1, 0], top[..., -1, -1]])
        background = float(corners.mean(dim=(1, 2)).median())
    mask = (top - background).abs().amax(dim=1, keepdim=True) > 1.5 / 255
    return torch.where(mask, top, base)
