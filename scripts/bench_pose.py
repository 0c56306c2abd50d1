#!/usr/bin/env python
"""Benchmark pose conditioning per chunk at 832x480: the UniAnimate pose embedding (the window
the engine runs: 24 padded pose frames -> 3 latent frames of tokens, through pose_proj for the
1.3B width or the identity for 14B) and the DWPose annotator.

The pose CNN is the real architecture with random weights. The DWPose networks need the two ONNX
files (`vacelive weights download pose`): with `--dwpose DIR` holding them the full annotator is
timed on the provider onnxruntime picks (CUDA when it has it); without them only our side of
the chain is timed (detector input, box decoding and NMS, the crop warp, SimCC decoding and the
DWPose drawing, with the two network calls answered by constant outputs) and the report says so.
The onnxruntime providers on the machine are always reported.

    python scripts/bench_pose.py --out results/bench_pose.json      # GPU
    python scripts/bench_pose.py --smoke                            # CPU, small, end to end
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vacelive.engine.conditioning.pose_annotator import (  # noqa: E402
    DET_SIZE, DWPoseAnnotate, DWPoseEstimator, dwpose_files, onnx_providers,
)
from vacelive.engine.pose import PoseEmbedding, chunk_pixel_range  # noqa: E402
from vacelive.engine.dit.sdpa_select import time_samples  # noqa: E402
from vacelive.engine.pose.conditioner import PoseConditioner  # noqa: E402


def timed(fn, device, iters: int, warmup: int) -> dict:
    times = time_samples(fn, iters, device, warmup)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "iters": iters}


def bench_embedding(dim: int, dtype, h: int, w: int, device, iters: int, warmup: int) -> dict:
    emb = PoseEmbedding(dim).to(device=device, dtype=dtype).eval().requires_grad_(False)
    pose = PoseConditioner(emb, width=w, height=h, frames_per_chunk=3, device=device, dtype=dtype)
    frames = (torch.rand(40, 3, h, w, device=device) > 0.97).to(torch.uint8) * 255  # sparse "limbs"
    a, b = chunk_pixel_range(0, 9)
    pose.timeline.push(a, frames[a:b])  # 33 frames: chunk 2 (latents 6..8) in steady state
    out = {}
    with torch.no_grad():
        for name, j0 in (("first_chunk", 0), ("steady_chunk", 6)):
            tokens = pose.chunk_tokens(j0, 3, "wait")
            r = timed(lambda: pose.chunk_tokens(j0, 3, "wait"), device, iters, warmup)
            x, _ = pose.timeline.window_frames(j0, 3, "wait")
            r.update(window_frames=int(x.shape[2]), tokens=list(tokens.shape))
            out[name] = r
        x, skip = pose.timeline.window_frames(6, 3, "wait")
        xx = x.to(dtype)
        out["cnn_only_steady"] = timed(lambda: emb.embed_video(xx), device, iters, warmup)
    if device.type == "cuda":
        out["param_mb"] = round(sum(p.numel() * p.element_size() for p in emb.parameters()) / 2**20, 1)
    return out


class _Input:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class ConstantSession:
    """Stands in for an onnxruntime session: fixed outputs (network time excluded)."""

    def __init__(self, in_shape, outputs):
        self._in, self._out = [_Input("x", list(in_shape))], outputs

    def get_inputs(self):
        return self._in

    def get_providers(self):
        return ["none (constant outputs)"]

    def run(self, names, feeds):
        return [o.copy() for o in self._out]


def chain_estimator() -> DWPoseEstimator:
    """DWPoseEstimator whose two networks answer constants: one person box, fixed SimCC peaks."""
    det = np.zeros((1, 8400, 6), np.float32)
    det[0, 8000] = [0.5, 0.5, np.log(4.0), np.log(8.0), 0.9, 0.9]
    sx, sy = np.random.rand(1, 133, 576).astype(np.float32), np.random.rand(1, 133, 768).astype(np.float32)
    est = DWPoseEstimator.__new__(DWPoseEstimator)
    est.det = ConstantSession((1, 3, *DET_SIZE), [det])
    est.pose = ConstantSession((1, 3, 384, 288), [sx, sy])
    est.input_wh = (288, 384)
    est.providers = est.det.get_providers()
    return est


def bench_annotator(dwpose: str | None, h: int, w: int, device, iters: int, warmup: int, frames: int) -> dict:
    import onnxruntime as ort

    info = {"onnxruntime": ort.__version__, "available_providers": ort.get_available_providers()}
    det, pose = dwpose_files(Path(dwpose)) if dwpose else (None, None)
    if det is not None and det.is_file() and pose.is_file():
        est = DWPoseEstimator(det, pose, onnx_providers(device))
        info["networks"] = "real DWPose ONNX files"
    else:
        est = chain_estimator()
        info["networks"] = "NOT timed (no DWPose files here): pre/post-processing and drawing only"
    info["providers_used"] = list(est.providers)
    ann = DWPoseAnnotate(est)
    video = torch.rand(frames, 3, h, w, device=device)
    info["per_chunk"] = timed(lambda: ann(video), torch.device("cpu") if device.type != "cuda" else device,
                              iters, warmup)
    info["frames_per_chunk"] = frames
    info["per_frame_ms"] = info["per_chunk"]["median_ms"] / frames
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--dwpose", default="", help="models folder holding DWPose/ (real ONNX files)")
    ap.add_argument("--smoke", action="store_true", help="CPU, 128x224, 2 iterations")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.height, args.width, args.iters, args.warmup = 128, 224, 2, 1
    h, w = args.height, args.width
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "height": h, "width": w, "latents_per_chunk": 3,
              "weights": "random, real architecture"}
    dtypes = {"bf16": torch.bfloat16} if device.type == "cuda" else {"fp32": torch.float32}
    if device.type == "cuda":
        dtypes["fp32"] = torch.float32
        torch.backends.cudnn.benchmark = True
    result["embedding"] = {}
    for dname, dtype in dtypes.items():
        for label, dim in (("1.3B (pose_proj 5120->1536)", 1536), ("14B (identity)", 5120)):
            key = f"{label} {dname}"
            try:
                result["embedding"][key] = bench_embedding(dim, dtype, h, w, device, args.iters, args.warmup)
            except Exception as e:  # noqa: BLE001 - report and go on
                result["embedding"][key] = {"error": f"{type(e).__name__}: {e}"}
            print(key, json.dumps(result["embedding"][key]), flush=True)
    try:
        result["annotator"] = bench_annotator(args.dwpose or None, h, w, device, max(3, args.iters // 4),
                                              args.warmup // 2 + 1, 12)
    except Exception as e:  # noqa: BLE001
        result["annotator"] = {"error": f"{type(e).__name__}: {e}"}
    print("annotator", json.dumps(result["annotator"]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
