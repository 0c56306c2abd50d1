"""The pose annotator: camera frames -> DWPose renderings, off the generation thread.

Estimator: DWPose exactly as UniAnimate-DiT runs it (ali-vilab/UniAnimate-DiT dwpose/onnxdet.py,
onnxpose.py, wholebody.py), over onnxruntime, with the two ONNX files of Hugging Face yzd-v/DWPose
that `vacelive weights download pose` places in `<models>/DWPose/`:
  * yolox_l.onnx: YOLOX-L person detector. Input 640x640: the BGR frame resized by
    r = min(640/h, 640/w) (bilinear) into the top-left of a 114-gray canvas, float32 CHW, no
    normalisation. Output decoded on the stride-8/16/32 grids; class-wise NMS (IoU 0.45, score
    0.1); person boxes with score > 0.3 kept, best first.
  * dw-ll_ucoco_384.onnx: DWPose-L whole-body (133 COCO-WholeBody points), input 288x384 (W x H,
    read from the model). The best box is padded x1.25, fixed to the input aspect ratio, warped
    there (bilinear affine), normalised with mean (123.675, 116.28, 103.53) / std (58.395, 57.12,
    57.375) in the frame's BGR channel order (as the reference does), and the SimCC outputs are
    decoded by argmax / 2.0 (split ratio) with score = min(max x, max y).
  With no box the whole frame is the box. Only the first (best) person is drawn, like UniAnimate.
Rendering: engine.conditioning.pose_render (VACE/ControlNet colour order).

Off the generation thread: VACE's conditioner and the pose conditioner run it as a job of their
annotator thread (engine.conditioning.runner: one chunk ahead, never waited for).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vacelive.engine.conditioning.pose_render import draw_pose, to_openpose

log = logging.getLogger(__name__)

DWPOSE_FOLDER = "DWPose"
DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
DET_SIZE = (640, 640)
NMS_IOU, DET_SCORE, PERSON_SCORE = 0.45, 0.1, 0.3
BBOX_PADDING = 1.25
SIMCC_SPLIT = 2.0
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


# ---- detector (YOLOX) ------------------------------------------------------------------------------
def detector_input(bgr: np.ndarray, size=DET_SIZE) -> tuple[np.ndarray, float]:
    import cv2

    canvas = np.full((size[0], size[1], 3), 114, dtype=np.uint8)
    r = min(size[0] / bgr.shape[0], size[1] / bgr.shape[1])
    h, w = int(bgr.shape[0] * r), int(bgr.shape[1] * r)
    canvas[:h, :w] = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), r


def decode_detections(out: np.ndarray, size=DET_SIZE) -> np.ndarray:
    """YOLOX raw output [1, A, 5 + classes] -> [A, 4 + 1 + classes] with xywh in pixels."""
    grids, strides = [], []
    for s in (8, 16, 32):
        hs, ws = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((hs * ws, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    p = out[0].astype(np.float64).copy()
    p[:, :2] = (p[:, :2] + grid) * stride
    p[:, 2:4] = np.exp(p[:, 2:4]) * stride
    return p


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= iou)[0] + 1]
    return keep


def person_boxes(raw: np.ndarray, ratio: float) -> np.ndarray:
    """Decoded YOLOX output -> person boxes [n, 4] xyxy in frame pixels, best first."""
    p = decode_detections(raw)
    xywh, scores = p[:, :4], p[:, 4:5] * p[:, 5:]
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    boxes /= ratio
    found = []
    for cls in range(scores.shape[1]):  # class-aware NMS, as the reference
        s = scores[:, cls]
        sel = s > DET_SCORE
        if not sel.any():
            continue
        b, sc = boxes[sel], s[sel]
        for i in nms(b, sc, NMS_IOU):
            found.append((b[i], sc[i], cls))
    people = [b for b, sc, cls in found if sc > PERSON_SCORE and cls == 0]
    return np.array(people).reshape(-1, 4)


# ---- whole-body pose (RTMPose-style SimCC) -------------------------------------------------------
def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.r_[-d[1], d[0]]


def crop_transform(box: np.ndarray, input_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(2x3 affine frame -> model input, center, scale) for a box, padded x1.25 and fixed to the
    model's aspect ratio (mmpose's top-down affine, rotation 0)."""
    import cv2

    x1, y1, x2, y2 = box
    center = np.array([x1 + x2, y1 + y2]) * 0.5
    scale = np.array([x2 - x1, y2 - y1]) * BBOX_PADDING
    w, h = input_wh
    aspect = w / h
    scale = np.array([scale[0], scale[0] / aspect]) if scale[0] > scale[1] * aspect else np.array([scale[1] * aspect, scale[1]])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, scale[0] * -0.5])
    src[2] = _third_point(src[0], src[1])
    dst[0] = [w * 0.5, h * 0.5]
    dst[1] = np.array([w * 0.5, h * 0.5]) + np.array([0.0, w * -0.5])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst), center, scale


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[1, K, Wx], [1, K, Wy] -> keypoints [K, 2] in model-input pixels, scores [K]."""
    sx, sy = simcc_x[0], simcc_y[0]
    locs = np.stack([sx.argmax(1), sy.argmax(1)], -1).astype(np.float32)
    vals = np.minimum(sx.max(1), sy.max(1))
    locs[vals <= 0.0] = -1
    return locs / SIMCC_SPLIT, vals


class DWPoseEstimator:
    """BGR uint8 frame -> (keypoints [134, 2] normalised to 0..1, scores [134]) of the best person."""

    def __init__(self, detector: str | Path, pose: str | Path, providers: list[str] | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        providers = providers or ort.get_available_providers()
        self.det = ort.InferenceSession(str(detector), sess_options=opts, providers=providers)
        self.pose = ort.InferenceSession(str(pose), sess_options=opts, providers=providers)
        h, w = self.pose.get_inputs()[0].shape[2:]
        self.input_wh = (int(w), int(h))
        self.providers = self.det.get_providers()

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        x, ratio = detector_input(bgr)
        raw = self.det.run(None, {self.det.get_inputs()[0].name: x[None]})[0]
        boxes = person_boxes(raw, ratio)
        box = boxes[0] if len(boxes) else np.array([0, 0, bgr.shape[1], bgr.shape[0]], dtype=np.float64)
        mat, center, scale = crop_transform(box, self.input_wh)
        crop = cv2.warpAffine(bgr, mat, self.input_wh, flags=cv2.INTER_LINEAR)
        crop = ((crop - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
        sx, sy = self.pose.run(None, {self.pose.get_inputs()[0].name: crop})[:2]
        kpts, scores = decode_simcc(sx, sy)
        kpts = kpts / np.array(self.input_wh) * scale + center - scale / 2
        kpts, scores = to_openpose(kpts[None], scores[None])
        kpts = kpts[0] / np.array([bgr.shape[1], bgr.shape[0]])
        return kpts, scores[0]


def dwpose_files(models: Path) -> tuple[Path, Path]:
    folder = Path(models) / DWPOSE_FOLDER
    return folder / DETECTOR_FILE, folder / POSE_FILE


def onnx_providers(device: torch.device) -> list[str]:
    """CUDA when the engine runs on CUDA and onnxruntime has it, else CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


# ---- the annotator ----------------------------------------------------------------------------------
Estimate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class DWPoseAnnotate:
    """Annotate(frames [F, 3, H, W] float 0..1) -> renderings [F, 3, H, W] float 0..1 on the same
    device: one DWPose estimate and drawing per frame. Synchronous: the conditioners run it on
    the annotator thread (engine.conditioning.runner), one chunk ahead of generation."""

    def __init__(self, estimate: Estimate):
        self.estimate = estimate
        self.providers: list[str] = list(getattr(estimate, "providers", []))
        self.frames_done = 0
        self.seconds = 0.0
        self.errors = 0

    @property
    def ms_per_frame(self) -> float:
        return 1e3 * self.seconds / self.frames_done if self.frames_done else 0.0

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        rgb = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(rgb)
        for i in range(rgb.shape[0]):
            bgr = np.ascontiguousarray(rgb[i, :, :, ::-1])  # DWPose reads OpenCV BGR frames
            try:
                pts, scores = self.estimate(bgr)
                out[i] = draw_pose(pts, scores, bgr.shape[0], bgr.shape[1])
            except Exception as exc:  # noqa: BLE001 - one bad frame draws no pose, the rest go on
                self.errors += 1
                log.warning("pose annotator: frame failed: %s: %s", type(exc).__name__, exc)
                out[i] = 0
        self.frames_done += rgb.shape[0]
        self.seconds += time.perf_counter() - t0
        return torch.from_numpy(out).to(frames.device).permute(0, 3, 1, 2).float().div_(255.0)


def load_pose_annotator(models: Path, device: torch.device, dtype: torch.dtype) -> DWPoseAnnotate:
    """The annotator plug-in: DWPose from `<models>/DWPose/` (WeightsNotFound when missing, naming
    the download command), onnxruntime on CUDA when the engine is on CUDA and it has the provider."""
    from vacelive.engine.conditioning.annotators import AnnotatorUnavailable, WeightsNotFound

    det, pose = dwpose_files(models)
    missing = [str(p) for p in (det, pose) if not p.is_file()]
    if missing:
        raise WeightsNotFound(
            f"Pose annotator: DWPose weights not found ({', '.join(missing)}). Download them with: "
            f"vacelive weights download pose --models {models}. Until then send rendered pose maps "
            f"(pose source 'rendered', or annotator none).")
    try:
        estimator = DWPoseEstimator(det, pose, onnx_providers(device))
    except ImportError as e:
        raise AnnotatorUnavailable(f"Pose annotator: {e.name or e} is not installed; "
                                   f"install the pose extra: pip install 'vacelive[pose]'.") from None
    except Exception as e:  # noqa: BLE001 - a broken file is reported, the show goes on
        raise AnnotatorUnavailable(f"Pose annotator: could not load {det.parent}: {e}") from None
    log.info("pose annotator: DWPose on onnxruntime %s", estimator.providers)
    return DWPoseAnnotate(estimator)


def load(name: str, models: Path, device: torch.device, dtype: torch.dtype) -> DWPoseAnnotate:
    """Plug-in entry (engine.conditioning.annotators.PLUGINS["pose"])."""
    return load_pose_annotator(models, device, dtype)
