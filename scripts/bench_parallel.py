#!/usr/bin/env python
"""Benchmark the parallel DiT (engine.parallel: --modes pipeline = blocks over the GPUs, sequence =
Ulysses token shards) on 1, 2, 4 GPUs of one host:
random full-size Wan2.1-1.3B + VACE weights, a synthetic moving depth map as VACE control (depth
mode of scripts/bench_stream.py), 4 steps, LongLive recipe.

Per resolution x rank count: steady-state fps (output frames / wall time of the measured chunks),
median and p90 per-chunk latency (ChunkResult wall), the first chunk after start-up, speed-up and
scaling efficiency against 1 GPU (fps_N / (N * fps_1)), per-rank placement, peak memory of rank
0, and how far the output is from the 1-GPU stream (same weights, seed, inputs; 8-bit levels).

    python scripts/bench_parallel.py --out $OUT/parallel.json                 # 832x480 + 576x320 on 1,2,4 GPUs, both modes
    python scripts/bench_parallel.py --gpus 1,2 --res 576x320 --chunks 12
    python scripts/bench_parallel.py --smoke                                  # CPU, gloo, tiny model, 1 and 2 ranks, both modes

Ranks are processes on this host (torch.multiprocessing spawn, NCCL). Nothing here is timed by
the test suite; the smoke path only checks that the script runs and the numbers are well formed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stream import depth_video, frame_difference, parse_res  # noqa: E402

from vacelive.engine.generator import StreamGenerator  # noqa: E402
from vacelive.engine.parallel.launch import ShardSpec, start_local  # noqa: E402
from vacelive.engine.request import ChunkRequest, Prompt  # noqa: E402

PROMPT = "a dancer made of liquid glass in a dark studio, volumetric light"


def requests(gen, video: np.ndarray, steps: int, count: int):
    pos = 0
    for _ in range(count):
        n = gen.next_chunk_frames
        idx = [(pos + i) % len(video) for i in range(n)]
        pos += n
        yield ChunkRequest(prompts=[Prompt(PROMPT)], steps=steps, video=video[idx])


def build(world: int, spec: ShardSpec):
    if world == 1:
        dev = "cuda" if spec.backend == "nccl" else "cpu"
        return StreamGenerator.random(spec.random_size, width=spec.width, height=spec.height, codec=spec.codec,
                                      device=dev, dtype=spec.torch_dtype(), seed=spec.seed, vace=True,
                                      cfg=spec.cfg, recipe=spec.recipe, sdpa=spec.sdpa)
    return start_local(spec, world)


def run(world: int, spec: ShardSpec, args) -> tuple[dict, list[np.ndarray]]:
    video = depth_video(spec.width, spec.height)
    cuda = spec.backend == "nccl"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    gen = build(world, spec)
    start_s = time.perf_counter() - t0
    try:
        reqs = requests(gen, video, args.steps, args.warmup + args.chunks)
        first = None
        for _ in range(args.warmup):
            r = gen.step(next(reqs))
            first = r.timings_ms["wall"] if first is None else first
        lat, frames, kept = [], 0, []
        t0 = time.perf_counter()
        for r in (gen.step(q) for q in reqs):
            lat.append(r.timings_ms["wall"])
            frames += r.frames.shape[0]
            kept.append(r.frames.cpu().numpy())
        wall = time.perf_counter() - t0
        desc = gen.describe()
    finally:
        if world > 1:
            gen.close()
    lat.sort()
    row = {"ranks": world, "width": spec.width, "height": spec.height, "steps": args.steps, "chunks": len(lat),
           "fps": frames / wall, "latency_ms_median": statistics.median(lat),
           "latency_ms_p90": lat[min(len(lat) - 1, int(0.9 * len(lat)))], "first_chunk_ms": first,
           "start_s": start_s, "placement": (desc.get("parallel") or {}).get("placement"),
           "peak_mem_gb_rank0": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    return row, kept


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", default="1,2,4", help="comma list of rank counts")
    p.add_argument("--modes", default="pipeline,sequence", help="comma list of pipeline,sequence")
    p.add_argument("--res", default="832x480,576x320", help="comma list of WxH")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--chunks", type=int, default=10, help="measured chunks per case")
    p.add_argument("--warmup", type=int, default=3, help="chunks before measuring")
    p.add_argument("--codec", default="wan", choices=("wan", "tae", "lighttae"))
    p.add_argument("--sdpa", default="default", help="attention backend (fixed, so runs compare)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a rank may stay silent")
    p.add_argument("--out", help="write the rows as JSON here (and a markdown table beside it)")
    p.add_argument("--smoke", action="store_true", help="CPU, gloo, tiny model, 32x32, ranks 1 and 2")
    args = p.parse_args(argv)

    if args.smoke:
        from vacelive.engine.config import tiny_config

        worlds, sizes = [1, 2], [(32, 32)]
        args.chunks, args.warmup = 2, 1
        base = ShardSpec(random_size="tiny", cfg=tiny_config(num_layers=4), codec="tae", device="cpu",
                         dtype="float32", timeout_s=args.timeout, sdpa="auto")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench_parallel needs CUDA GPUs (or --smoke)")
        worlds = [int(v) for v in args.gpus.split(",") if v.strip()]
        worlds = [w for w in worlds if w <= torch.cuda.device_count()]
        sizes = [parse_res(r) for r in args.res.split(",") if r.strip()]
        base = ShardSpec(random_size="full", codec=args.codec, device="cuda", dtype="bfloat16",
                         timeout_s=args.timeout, sdpa=args.sdpa)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    meta = {"torch": torch.__version__, "gpus_visible": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "recipe": base.recipe, "codec": base.codec, "control": "depth (synthetic, VACE)"}
    rows = []
    for width, height in sizes:
        spec = ShardSpec(**{**base.__dict__, "width": width, "height": height})
        ref_fps, ref_frames = None, None
        cases = [(1, "single")] * (1 in worlds) + [(w, m) for w in worlds if w > 1 for m in modes]
        for world, mode in cases:
            try:
                row, frames = run(world, ShardSpec(**{**spec.__dict__, "mode": mode if world > 1 else "pipeline"}), args)
            except Exception as exc:  # noqa: BLE001 - one failed case must not lose the others
                traceback.print_exc()
                rows.append({"ranks": world, "mode": mode, "width": width, "height": height,
                             "error": f"{type(exc).__name__}: {exc}"})
                continue
            row["mode"] = mode
            if world == 1:
                ref_fps, ref_frames = row["fps"], frames
            if ref_fps:
                row["speedup"] = row["fps"] / ref_fps
                row["scaling_efficiency"] = row["fps"] / (world * ref_fps)
            if ref_frames is not None and world > 1:
                row.update(frame_difference(frames, ref_frames))
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"meta": meta, "rows": rows}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0 if all("error" not in r for r in rows) else 1


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [f"bench_parallel: {m['gpu']} x{m['gpus_visible']}, torch {m['torch']}, {m['recipe']}, codec {m['codec']}, "
             f"{m['control']}", "",
             "| WxH | ranks | mode | fps | speed-up | efficiency | chunk ms (median / p90) | first chunk ms | max diff vs 1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['width']}x{r['height']} | {r['ranks']} | {r['mode']} | error: {r['error']} |||||| ")
            continue
        lines.append(f"| {r['width']}x{r['height']} | {r['ranks']} | {r['mode']} | {r['fps']:.1f} | {r.get('speedup', 1):.2f} | "
                     f"{r.get('scaling_efficiency', 1):.2f} | {r['latency_ms_median']:.0f} / {r['latency_ms_p90']:.0f} | "
                     f"{r['first_chunk_ms']:.0f} | {r.get('diff_max', 0):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
