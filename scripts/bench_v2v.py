#!/usr/bin/env python
"""Benchmark V2V restyle (engine/v2v.py) with random full-size weights: fps and the latency from a
frame entering the input texture to the first output frame shaped by it.

A simulated camera delivers frames at --camera-fps on the wall clock (frame j "enters the input
texture" at t0 + j / fps). The loop does what the run loop does: at each chunk boundary it takes
the newest `next_chunk_frames` frames that have entered (never a backlog), sends them as
`input_video` with input_mode video, and runs StreamGenerator.step (which returns once the chunk's
frames are decoded on the GPU). Every camera frame's latency is the time from its entry to the end
of the first chunk whose window held it: its output frame exists from then on (the pacer plays a
chunk out over its duration after that). Frames that fell between two windows (the loop slower than
the camera) are counted as skipped input frames, they are never queued.

Rows: pipeline x resolution x path. exact = the Wan VAE, eager, bf16 Linears; fast = TAE,
torch.compile of the DiT blocks, FP8 Linears. LongLive runs 4 steps at noise_scale 0.7 (its V2V
plan [700, 625]: 2 denoising passes + the clean pass); StreamDiffusionV2 its own V2V defaults,
--step 2 at noise_scale 0.8 ([700, 500] on 1-latent chunks of 4 frames). Rows are written to
--out as they finish; rows that would start after --budget seconds (a compiled row: 45 s before
it) are listed as skipped.

    python scripts/bench_v2v.py --out v2v.json
    python scripts/bench_v2v.py --pipelines longlive --res 576x320 --paths exact
    python scripts/bench_v2v.py --smoke          # CPU, tiny model, end to end
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vacelive.engine.codecs import random_codec  # noqa: E402
from vacelive.engine.config import WAN_1_3B, tiny_config  # noqa: E402
from vacelive.engine.factory import random_dit, random_text_encoder  # noqa: E402
from vacelive.engine.generator import StreamGenerator  # noqa: E402
from vacelive.engine.pipelines import RECIPES  # noqa: E402
from vacelive.engine.request import ChunkRequest, Prompt  # noqa: E402

PROMPT = "an oil painting of a city street, thick brush strokes"
# Per pipeline: (live steps, noise_scale) of its V2V defaults (module doc).
V2V_DEFAULTS = {"longlive": (4, 0.7), "self-forcing": (4, 0.7), "streamdiffusionv2": (2, 0.8),
                "reward-forcing": (2, 0.7)}
PATHS = {"exact": ("wan", False, False), "fast": ("tae", True, True)}  # codec, compile, fp8


def camera_clip(width: int, height: int, frames: int = 60) -> np.ndarray:
    """A moving test scene as uint8 RGBA host frames: a disc and a bar over a turning gradient."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 4), np.uint8)
    for i in range(frames):
        a = 2 * math.pi * i / frames
        grad = (math.cos(a) * x / width + math.sin(a) * y / height) * 0.5 + 0.5
        cx, cy = width * (0.5 + 0.3 * math.cos(a)), height * (0.5 + 0.3 * math.sin(2 * a))
        disc = (x - cx) ** 2 + (y - cy) ** 2 < (0.2 * height) ** 2
        bar = np.abs(x - width * (i / frames)) < 0.03 * width
        out[i, ..., 0] = 40 + 150 * grad
        out[i, ..., 1] = 30 + 100 * (1 - grad)
        out[i, ..., 2] = 80 + 120 * grad
        out[i, disc, :3] = (240, 220, 120)
        out[i, bar, :3] = 255
        out[i, ..., 3] = 255
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_row(gen: StreamGenerator, clip: np.ndarray, steps: int, noise: float, args, device) -> dict:
    def request(frames):
        return ChunkRequest(prompts=[Prompt(PROMPT)], steps=steps, input_mode="video", input_video=frames,
                            noise_scale=noise, seed=1)

    t_w = time.perf_counter()
    pos = 0
    for _ in range(args.warmup):  # compile happens here (first chunk and steady-state shapes)
        n = gen.next_chunk_frames
        gen.step(request(clip[[(pos + i) % len(clip) for i in range(n)]]))
        pos += n
    sync(device)
    warmup_s = time.perf_counter() - t_w

    fps = args.camera_fps
    entered: dict[int, float] = {}
    latency: dict[int, float] = {}
    newest_latency, chunk_ms, frames_out, used_scale = [], [], 0, None
    t0 = time.perf_counter()
    last_newest = -1
    for _ in range(args.chunks):
        n = gen.next_chunk_frames
        now = time.perf_counter()
        k = int((now - t0) * fps)  # the newest frame that has entered the input texture
        window = list(range(k - n + 1, k + 1))
        frames = clip[[j % len(clip) for j in window]]  # (negative j: pre-roll frames)
        t_step = time.perf_counter()
        result = gen.step(request(frames))
        t_out = time.perf_counter()
        chunk_ms.append((t_out - t_step) * 1e3)
        frames_out += len(result.frames)
        used_scale = result.noise_scale
        for j in window:
            if j >= 0 and j not in latency:
                entered[j] = t0 + j / fps
                latency[j] = t_out - entered[j]
        newest_latency.append((t_out - (t0 + k / fps)) * 1e3)
        last_newest = k
    wall = time.perf_counter() - t0
    seen = [latency[j] * 1e3 for j in sorted(latency)]
    skipped = (last_newest + 1) - len(latency)
    return {
        "warmup_s": round(warmup_s, 1),
        "fps": frames_out / wall,
        "chunk_ms_p50": pct(chunk_ms, 50),
        "frames_per_chunk": gen.next_chunk_frames,
        "latency_ms_p50": pct(seen, 50), "latency_ms_p95": pct(seen, 95), "latency_ms_max": max(seen, default=float("nan")),
        "latency_newest_ms_p50": pct(newest_latency, 50),
        "input_frames_used": len(latency), "input_frames_skipped": int(max(0, skipped)),
        "noise_scale_used": used_scale,
        "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


HEADER = (f"{'pipeline':>17} {'res':>8} {'path':>5} {'fps':>6} {'chunk ms':>8} {'lat p50':>8} {'lat p95':>8} "
          f"{'newest':>7} {'skip in':>7} {'warm s':>6}")


def fmt(r: dict) -> str:
    if "skipped" in r:
        return f"{r['pipeline']:>17} {r['resolution']:>8} {r['path']:>5}  skipped: {r['skipped']}"
    return (f"{r['pipeline']:>17} {r['resolution']:>8} {r['path']:>5} {r['fps']:6.1f} {r['chunk_ms_p50']:8.1f} "
            f"{r['latency_ms_p50']:8.1f} {r['latency_ms_p95']:8.1f} {r['latency_newest_ms_p50']:7.1f} "
            f"{r['input_frames_skipped']:7d} {r['warmup_s']:6.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipelines", default="longlive,streamdiffusionv2")
    p.add_argument("--res", default="832x480,576x320")
    p.add_argument("--paths", default="exact,fast", help="comma list of exact,fast")
    p.add_argument("--chunks", type=int, default=0, help="measured chunks per row (0: 10 for 3-latent "
                   "chunks, 30 for 1-latent chunks)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--camera-fps", type=float, default=30.0)
    p.add_argument("--budget", type=float, default=130.0, help="seconds; later rows are skipped")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 32x32, 2 chunks")
    args = p.parse_args(argv)
    start = time.perf_counter()
    pipelines = [s.strip() for s in args.pipelines.split(",") if s.strip()]
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    unknown = [x for x in pipelines if x not in RECIPES] + [x for x in paths if x not in PATHS]
    if unknown:
        raise SystemExit(f"unknown pipeline/path {unknown}; pipelines: {list(RECIPES)}, paths: {list(PATHS)}")
    if args.smoke:
        device, dtype, cfg, small = torch.device(args.device or "cpu"), torch.float32, tiny_config(), True
        resolutions = [(32, 32)]
        args.warmup, paths = 1, [x for x in paths if x == "exact"] or ["exact"]
    else:
        device, dtype, cfg, small = torch.device(args.device or "cuda"), torch.bfloat16, WAN_1_3B, False
        resolutions = [tuple(int(v) for v in r.lower().split("x")) for r in args.res.split(",") if r.strip()]
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    t_build = time.perf_counter()
    model = random_dit(cfg, vace=False, device=device, dtype=dtype)
    text = random_text_encoder(cfg.text_dim, size="tiny", seq_len=cfg.text_len, device=device, dtype=dtype)
    codecs = {name: random_codec(name, small=small, device=device, dtype=dtype)
              for name in {PATHS[x][0] for x in paths}}
    sync(device)
    build_s = time.perf_counter() - t_build

    rows: list[dict] = []
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
           "config": "tiny (smoke)" if args.smoke else "wan2.1-1.3b (random weights), text-to-video DiT, no VACE",
           "camera_fps": args.camera_fps, "build_s": round(build_s, 1)}

    def save(partial: bool) -> None:
        if args.out:
            Path(args.out).write_text(json.dumps({"partial": partial, "env": env, "results": rows}, indent=2))

    print(HEADER, flush=True)
    order = [(x, res, pl) for x in paths for res in resolutions for pl in pipelines]  # exact rows first
    for path, (w, h), pipeline in order:
        base = {"pipeline": pipeline, "resolution": f"{w}x{h}", "path": path}
        steps, noise = V2V_DEFAULTS.get(pipeline, (4, RECIPES[pipeline].v2v_noise_scale))
        base.update(steps=steps, noise_scale=noise)
        codec_name, compiled, fp8 = PATHS[path]
        need = 45.0 if compiled and not args.smoke else 0.0  # a compiled row's warm-up is long
        if time.perf_counter() - start > args.budget - need:
            rows.append(dict(base, skipped=f"time budget {args.budget:.0f} s spent"))
            print(fmt(rows[-1]), flush=True)
            continue
        gen = None
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            gen = StreamGenerator(model, codecs[codec_name], text, recipe=pipeline, width=w, height=h,
                                  compile=compiled, fp8=fp8)
            chunks = args.chunks or (30 if gen.frames_per_chunk == 1 else 10)
            if args.smoke:
                chunks = 2
            args_row = argparse.Namespace(**{**vars(args), "chunks": chunks})
            row = dict(base, codec=codec_name, compile=compiled, fp8=fp8, chunks=chunks,
                       **run_row(gen, camera_clip(w, h), steps, noise, args_row, device))
        except Exception as exc:  # one failing row must not lose the others
            traceback.print_exc()
            row = dict(base, skipped=f"{type(exc).__name__}: {exc}")
        finally:
            if gen is not None:
                gen.set_compile(False)
                gen.set_fp8(False)
            del gen
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(fmt(row), flush=True)
        save(partial=True)
    env["total_s"] = round(time.perf_counter() - start, 1)
    save(partial=False)
    print(f"\n{env['device']} | torch {env['torch']} | {env['dtype']} | {env['config']} | camera {args.camera_fps:g} fps"
          f" | latency: camera frame entering the input -> its chunk's frames decoded (p50/p95 over frames; "
          f"newest = the window's newest frame)")
    if args.out:
        md = Path(args.out).with_suffix(".md")
        md.write_text("```\n" + "\n".join([HEADER] + [fmt(r) for r in rows]) + "\n```\n")
    return 0 if any("skipped" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
