#!/usr/bin/env python
"""Benchmark the real chunk loop (engine.generator.StreamGenerator.step) with random full-size
weights: control frames in (uint8 host frames of a synthetic moving depth video in `depth` mode),
decoded RGBA frames out (copied to pinned host memory, timed separately).

One table row per case (resolution x mode x codec) and speed variant (--compile, --fp8, --sdpa,
--hint-reuse): steady-state fps (wall clock of the loop incl. the host copy) and GPU fps (CUDA-event
chunk time), median ms per stage from ChunkResult.timings_ms (text, VACE encode, hint stream, DiT
forwards, decode, RGBA conversion) + host copy, first-chunk latency after a reset (steady state:
warm-up/compile time is reported separately as warmup_s; the warm-up fills the window and does a
prompt cut and back, so compiled variants have seen every shape), the cost of a prompt cut (KV re-cache),
peak VRAM. `--text-encoder full` also times the full-size umT5-XXL encode of one prompt (random
weights, 11 GB bf16; the stream itself uses a tiny random text encoder: text embeddings of a
random encoder carry no meaning and cached prompts cost nothing per chunk).

    python scripts/bench_stream.py --out stream.json                        # 832x480 + 576x320, text + depth, wan + tae
    python scripts/bench_stream.py --compile off,on --hint-reuse off,on --sdpa auto,cudnn --fp8 off,on
    python scripts/bench_stream.py --res 576x320 --codecs tae --modes depth --text-encoder full
    python scripts/bench_stream.py --smoke                                  # CPU, tiny model, end to end
    python scripts/bench_stream.py --pipelines reward-forcing,streamdiffusionv2 --modes depth --codecs wan \
        --variants exact,fast                                               # each pipeline, exact and fast path

--pipelines runs every case once per pipeline recipe (cache policy, chunk size, schedule of
engine.pipelines; same random DiT weights: every 1.3B pipeline has the same architecture).
--variants exact,fast replaces the --compile/--fp8/--hint-reuse product by two variants: exact
(eager, bf16 Linears, hints every step) and fast (compile + FP8 + hint reuse).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vacelive.engine.codecs import random_codec  # noqa: E402
from vacelive.engine.config import WAN_1_3B, tiny_config  # noqa: E402
from vacelive.engine.factory import make_conditioner, random_dit, random_text_encoder  # noqa: E402
from vacelive.engine.generator import SDPA_BACKENDS, StreamGenerator  # noqa: E402
from vacelive.engine.request import ChunkRequest, Prompt  # noqa: E402

PROMPT = "a neon city street at night, rain, reflections, slow camera move"
CUT_PROMPT = "a quiet forest lake at dawn, mist over the water"
STAGES = ("text", "vace", "hints", "dit", "decode", "output")


def parse_res(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def onoff(text: str) -> list[bool]:
    out = []
    for v in text.split(","):
        v = v.strip().lower()
        if v:
            if v not in ("on", "off"):
                raise SystemExit(f"expected on/off, got {v!r}")
            out.append(v == "on")
    return out


def vace_bench_model(smoke: bool, device: str | None):
    """(device, dtype, DiT + VACE, text encoder, TAE codec) of the
    VACE stream benches: a tiny model in fp32 on the CPU for --smoke, else a random full-size
    Wan2.1-1.3B + VACE in bf16 on CUDA (a tiny text encoder either way: prompts are not timed)."""
    if smoke:
        cfg, dev, dtype = tiny_config(), torch.device(device or "cpu"), torch.float32
    else:
        cfg, dev, dtype = WAN_1_3B, torch.device(device or "cuda"), torch.bfloat16
    model = random_dit(cfg, vace=True, device=dev, dtype=dtype)
    text = random_text_encoder(cfg.text_dim, size="tiny", seq_len=cfg.text_len, device=dev, dtype=dtype)
    codec = random_codec("tae", small=smoke, device=dev, dtype=dtype)
    return dev, dtype, model, text, codec


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def add_stream_args(p) -> None:
    """The generator's per-chunk work switches as bench flags: the stream shape
    (engine.pipelines.shaped_recipe) and `--clean-pass` (approximate unless default),
    `--cuda-graphs` (exact) and `--compile-codec`."""
    p.add_argument("--clean-pass", choices=("exact", "reuse"), default="exact",
                   help="the generator's clean_pass (reuse: one DiT forward fewer per chunk)")
    p.add_argument("--chunk-latents", type=int, default=None, help="latent frames per chunk after the first")
    p.add_argument("--first-chunk-latents", type=int, default=None, help="latent frames of the first chunk")
    p.add_argument("--kv-window", type=int, default=None, help="latent frames of the KV window")
    p.add_argument("--cuda-graphs", action="store_true", help="replay the DiT forwards as CUDA graphs")
    p.add_argument("--compile-codec", action="store_true", help="torch.compile the codec's chunk functions "
                   "(Codec.use_compile)")


def stream_kwargs(args) -> dict:
    """StreamGenerator keyword arguments of add_stream_args' flags."""
    return {"clean_pass": args.clean_pass, "chunk_latents": args.chunk_latents,
            "first_chunk_latents": args.first_chunk_latents, "kv_window": args.kv_window,
            "cuda_graphs": args.cuda_graphs, "compile_codec": args.compile_codec}


def depth_video(width: int, height: int, frames: int = 48) -> np.ndarray:
    """A synthetic moving depth map (near = bright): a sphere orbiting over a tilted floor, as uint8
    RGBA host frames [frames, H, W, 4] (one period, looped)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    floor = 0.25 + 0.5 * y / height
    out = np.empty((frames, height, width, 4), dtype=np.uint8)
    for i in range(frames):
        a = 2 * math.pi * i / frames
        cx, cy, r = width * (0.5 + 0.3 * math.cos(a)), height * (0.55 + 0.2 * math.sin(a)), 0.22 * height
        d2 = ((x - cx) ** 2 + (y - cy) ** 2) / r**2
        sphere = np.where(d2 < 1, 0.6 + 0.4 * np.sqrt(np.clip(1 - d2, 0, 1)), 0)
        depth = (np.maximum(floor, sphere) * 255).astype(np.uint8)
        out[i, ..., :3] = depth[..., None]
        out[i, ..., 3] = 255
    return out


class HostCopy:
    """Output frames -> pinned host memory, timed with perf_counter (the generator already synced).
    While `keep` is a list, a copy of every frame is appended to it (outside the timing): run_variant
    leaves the measured chunks' frames in `measured` for the exact-path comparison. `keep_s` adds
    up those copies' seconds, which are the bench's bookkeeping and leave its wall clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.buffers: dict[tuple, torch.Tensor] = {}
        self.keep: list[np.ndarray] | None = None
        self.measured: list[np.ndarray] = []
        self.keep_s = 0.0

    def __call__(self, frames: torch.Tensor) -> float:
        t0 = time.perf_counter()
        if self.cuda:
            buf = self.buffers.get(tuple(frames.shape))
            if buf is None:
                buf = self.buffers[tuple(frames.shape)] = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
            buf.copy_(frames, non_blocking=True)
            torch.cuda.current_stream().synchronize()
        else:
            buf = frames  # already host memory: what a sink would read
            buf.numpy()
        t1 = time.perf_counter()
        if self.keep is not None:
            self.keep.append(buf.numpy().copy())
            self.keep_s += time.perf_counter() - t1
        return (t1 - t0) * 1e3


def frame_difference(frames: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """How far a variant's output stream is from the exact path's (same weights, seed, inputs):
    max and mean absolute difference in 8-bit levels over every measured frame, and PSNR."""
    a = np.concatenate(frames).astype(np.float32)[..., :3]
    b = np.concatenate(reference).astype(np.float32)[..., :3]
    if a.shape != b.shape:
        return {"diff_error": f"shape {a.shape} vs exact {b.shape}"}
    err = np.abs(a - b)
    mse = float((err**2).mean())
    return {"diff_max": float(err.max()), "diff_mean": float(err.mean()),
            "psnr_db": float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)}


class Source:
    """Chunk requests: a fixed prompt, and in depth mode the next frames of the depth video."""

    def __init__(self, mode: str, video: np.ndarray | None, steps: int, hint_reuse: bool):
        self.mode, self.video, self.steps, self.hint_reuse = mode, video, steps, hint_reuse
        self.pos = 0

    def request(self, gen: StreamGenerator, prompt: str = PROMPT) -> ChunkRequest:
        video = None
        if self.mode == "depth":
            n, start = gen.next_chunk_frames, self.pos % len(self.video)
            self.pos += n
            if start + n <= len(self.video):  # a view: a camera's frames are not copied here either
                video = self.video[start:start + n]
            else:
                video = self.video[[(start + i) % len(self.video) for i in range(n)]]
        return ChunkRequest(prompts=[Prompt(prompt)], steps=self.steps, video=video, hint_reuse=self.hint_reuse)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(gen: StreamGenerator, source: Source, args, device, host: HostCopy) -> dict:
    row: dict = {}
    gen.reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    # Warm-up: at least one full window (12 latent frames) and a prompt cut and back, so a
    # compiled model has also seen the re-cache shape before anything is measured.
    done = 0
    while done < args.warmup or gen.frame < gen.policy.window:
        host(gen.step(source.request(gen)).frames)
        done += 1
    for prompt in (CUT_PROMPT, PROMPT):
        host(gen.step(source.request(gen, prompt)).frames)
    sync(device)
    row["warmup_s"] = round(time.perf_counter() - t0, 2)
    row["warmup_chunks"] = done + 2

    per_stage = {s: [] for s in STAGES + ("total", "host")}
    frames = 0
    chunk_frames = []
    host.keep, host.keep_s = [], 0.0  # the measured chunks' frames, for the exact-path comparison
    compiles = gen.counters["recompiles"]
    t0 = time.perf_counter()
    for _ in range(args.chunks):
        r = gen.step(source.request(gen))
        h = host(r.frames)
        frames += r.frames.shape[0]
        chunk_frames.append(r.frames.shape[0])
        for s in STAGES + ("total",):
            per_stage[s].append(r.timings_ms.get(s, 0.0))
        per_stage["host"].append(h)
    wall = time.perf_counter() - t0 - host.keep_s
    # torch.compile compilations inside the measured chunks (engine.generator; each costs seconds)
    row["recompiles_measured"] = gen.counters["recompiles"] - compiles
    host.measured, host.keep = host.keep, None
    row["fps"] = frames / wall
    row["chunk_ms"] = statistics.median(per_stage["total"])
    row["gpu_fps"] = statistics.median(chunk_frames) / (row["chunk_ms"] / 1e3)  # 12, or 4 for SDv2
    for s, values in per_stage.items():
        row[f"{s}_ms"] = statistics.median(values)
    row["frames"] = frames

    # a prompt cut: cross-attention reset + KV re-cache of the last window of latents
    r = gen.step(source.request(gen, CUT_PROMPT))
    row["cut_recache_ms"] = r.timings_ms.get("recache", 0.0)
    row["cut_chunk_ms"] = r.timings_ms["total"]

    # first decoded frames after a request to a freshly reset (warm) stream
    gen.reset()
    sync(device)
    t0 = time.perf_counter()
    r = gen.step(source.request(gen))
    host(r.frames)
    row["first_chunk_ms"] = (time.perf_counter() - t0) * 1e3
    row["first_chunk_frames"] = r.frames.shape[0]
    if device.type == "cuda":
        row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def speed_variants(args, mode: str) -> list[tuple[bool, bool, bool]]:
    """(compile, fp8, hint_reuse) combinations to run."""
    if args.variants:
        named = {"exact": (False, False, False), "fast": (True, True, mode == "depth")}
        return [named[v] for v in args.variants]
    return [(c, f, r) for c in args.compile for f in args.fp8
            for r in (args.hint_reuse if mode == "depth" else [False])]


def bench_case(model, text, codec, codec_name: str, res, mode: str, args, device, dtype, video,
               pipeline: str = "longlive", sink=None) -> list[dict]:
    w, h = res
    conditioner = None
    base = {"pipeline": pipeline, "resolution": f"{w}x{h}", "mode": mode, "codec": codec_name, "steps": args.steps,
            **stream_kwargs(args)}
    if mode == "depth":
        try:
            conditioner = make_conditioner(model, codec, width=w, height=h, device=device, dtype=dtype)
        except Exception as exc:  # the VACE conditioning module may not exist yet: say so, do not fake
            row = dict(base, skipped=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            print(format_row(row), flush=True)
            return [row]
    host = HostCopy(device)
    rows = []
    exact = None  # frames of the exact path (first variant when it is eager/bf16/no reuse/auto RoPE)
    for rope in args.rope:
        gen = StreamGenerator(model, codec, text, width=w, height=h, conditioner=conditioner, rope=rope,
                              recipe=pipeline, **stream_kwargs(args))
        try:
            for compiled, fp8, reuse in speed_variants(args, mode):
                gen.set_compile(compiled)
                try:
                    gen.set_fp8(fp8)
                except ValueError as exc:
                    rows.append(dict(base, rope=rope, compile=compiled, fp8=fp8, skipped=str(exc)))
                    continue
                for sdpa in args.sdpa:
                    gen.sdpa = sdpa
                    row = dict(base, rope=rope, compile=compiled, fp8=fp8, sdpa=sdpa, hint_reuse=reuse)
                    try:
                        row.update(run_variant(gen, Source(mode, video, args.steps, reuse), args, device, host))
                        frames = host.measured
                        if exact is None and rope == "auto" and not (compiled or fp8 or reuse):
                            exact = frames
                            row["exact_path"] = True
                        elif exact is not None:
                            row.update(frame_difference(frames, exact))
                    except Exception as exc:  # one failing variant (OOM, backend) must not end the run
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                        if args.verbose:
                            traceback.print_exc()
                    rows.append(row)
                    print(format_row(row), flush=True)
                    if sink is not None:
                        sink(row)
        finally:
            gen.set_compile(False)
            gen.set_fp8(False)
            del gen
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def bench_text_encoder(args, device, dtype) -> dict:
    """Full-size umT5-XXL (random weights) encode of one prompt: median of 5 after 2 warm-ups."""
    size = "tiny" if args.smoke else "full"
    out = {"encoder": "umT5-XXL (random)" if size == "full" else "tiny umT5 (smoke)", "tokens": 512}
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        enc = random_text_encoder(4096 if size == "full" else 32, size=size, device=device, dtype=dtype)
        sync(device)
        out["build_s"] = round(time.perf_counter() - t0, 1)
        times = []
        for i in range(7):
            sync(device)
            t0 = time.perf_counter()
            enc.encode([PROMPT])
            sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
        out["encode_ms"] = statistics.median(times[2:])
        out["first_encode_ms"] = times[0]
        out["weights_gb"] = sum(p.numel() * p.element_size() for p in enc.model.parameters()) / 2**30
        if device.type == "cuda":
            out["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        del enc
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


HEADER = (f"{'pipeline':>17} {'res':>8} {'mode':>5} {'codec':>5} {'rope':>4} {'cmp':>3} {'fp8':>3} {'sdpa':>9} {'reuse':>5} {'fps':>6} {'gpuFPS':>6} "
          f"{'chunk':>7} {'text':>5} {'vace':>6} {'hints':>6} {'dit':>7} {'decode':>6} {'out':>5} {'host':>5} "
          f"{'first':>6} {'cut':>6} {'warm s':>6} {'peakGB':>6} {'dMax':>5} {'dMean':>6} {'PSNR':>5}")


def format_row(r: dict) -> str:
    head = (f"{r.get('pipeline', 'longlive'):>17} {r['resolution']:>8} {r['mode']:>5} {r['codec']:>5} {str(r.get('rope', '-'))[:4]:>4} {_b(r.get('compile')):>3} {_b(r.get('fp8')):>3} "
            f"{str(r.get('sdpa', '-')):>9} {_b(r.get('hint_reuse')):>5}")
    if "skipped" in r:
        return f"{head}  SKIPPED {r['skipped']}"
    if "error" in r:
        return f"{head}  ERROR {r['error']}"
    peak = f"{r['peak_gb']:6.2f}" if "peak_gb" in r else "     -"
    if "diff_max" in r:
        diff = f" {r['diff_max']:5.0f} {r['diff_mean']:6.2f} {r['psnr_db']:5.1f}"
    else:
        diff = "   ref      -     -" if r.get("exact_path") else "     -      -     -"
    return (f"{head} {r['fps']:6.1f} {r['gpu_fps']:6.1f} {r['chunk_ms']:7.1f} {r['text_ms']:5.1f} {r['vace_ms']:6.1f} "
            f"{r['hints_ms']:6.1f} {r['dit_ms']:7.1f} {r['decode_ms']:6.1f} {r['output_ms']:5.1f} {r['host_ms']:5.1f} "
            f"{r['first_chunk_ms']:6.0f} {r['cut_chunk_ms']:6.0f} {r['warmup_s']:6.1f} {peak}{diff}")


def _b(v) -> str:
    return "-" if v is None else ("on" if v else "off")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="832x480,576x320", help="comma list of WxH (pixels, multiples of 16)")
    p.add_argument("--modes", default="text,depth", help="comma list of text,depth")
    p.add_argument("--codecs", default="wan,tae", help="comma list of wan,tae,lighttae")
    p.add_argument("--pipelines", default="longlive", help="comma list of engine.pipelines recipes")
    p.add_argument("--variants", default="", help="comma list of exact,fast (replaces --compile/--fp8/--hint-reuse)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--chunks", type=int, default=20, help="measured steady-state chunks per variant")
    p.add_argument("--warmup", type=int, default=3, help="chunks before measuring (compile happens here)")
    p.add_argument("--compile", default="off", help="on/off list: torch.compile of the DiT blocks")
    p.add_argument("--fp8", default="off", help="on/off list: e4m3 block Linears")
    p.add_argument("--sdpa", default="auto", help=f"comma list of {','.join(SDPA_BACKENDS)}")
    p.add_argument("--hint-reuse", default="off", help="on/off list (depth mode): hints once per chunk")
    p.add_argument("--rope", default="auto", help="comma list of auto,relative (relative = the endless "
                   "mode's steady-state cost: keys re-rotated at attention time)")
    p.add_argument("--text-encoder", choices=["tiny", "full"], default="tiny",
                   help="full: also time the full-size umT5-XXL encode of one prompt")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes on CPU (end-to-end check)")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failing variants")
    add_stream_args(p)
    args = p.parse_args(argv)
    args.compile, args.fp8, args.hint_reuse = onoff(args.compile), onoff(args.fp8), onoff(args.hint_reuse)
    args.sdpa = [v.strip() for v in args.sdpa.split(",") if v.strip()]
    args.rope = [v.strip() for v in args.rope.split(",") if v.strip()]
    bad = [s for s in args.sdpa if s not in SDPA_BACKENDS]
    if bad:
        raise SystemExit(f"unknown --sdpa {bad}; choose from {list(SDPA_BACKENDS)}")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if any(v not in ("exact", "fast") for v in args.variants):
        raise SystemExit(f"--variants takes exact,fast; got {args.variants}")
    pipelines = [v.strip() for v in args.pipelines.split(",") if v.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]

    if args.smoke:
        cfg, size = tiny_config(), "tiny"
        device = torch.device(args.device or "cpu")
        dtype = torch.float32
        resolutions = [(64, 48)]
        args.chunks, args.warmup = min(args.chunks, 3), min(args.warmup, 1)
    else:
        cfg, size = WAN_1_3B, "full"
        device = torch.device(args.device or "cuda")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
        resolutions = [parse_res(r) for r in args.res.split(",")]
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    t0 = time.perf_counter()
    model = random_dit(cfg, vace="depth" in modes, device=device, dtype=dtype)
    text = random_text_encoder(cfg.text_dim, size="tiny", seq_len=cfg.text_len, device=device, dtype=dtype)
    codec_objs = {c: random_codec(c, small=size == "tiny", device=device, dtype=dtype) for c in codecs}
    sync(device)
    build_s = time.perf_counter() - t0
    weights_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30

    print(HEADER, flush=True)
    rows = []

    def sink(row):  # results so far, so a run cut short by a time limit still leaves its rows
        if args.out:
            Path(args.out).write_text(json.dumps({"partial": True, "results": rows + [row]}, indent=2))

    for pipeline in pipelines:
        for res in resolutions:
            video = depth_video(*res) if "depth" in modes else None
            for mode in modes:
                for name, codec in codec_objs.items():
                    rows += bench_case(model, text, codec, name, res, mode, args, device, dtype, video,
                                       pipeline=pipeline, sink=sink)
    text_full = bench_text_encoder(args, device, dtype) if args.text_encoder == "full" else None

    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "dtype": str(dtype).removeprefix("torch."),
           "config": "tiny (smoke)" if args.smoke else "wan2.1-1.3b + VACE (random weights)",
           "dit_weights_gb": round(weights_gb, 2), "build_s": round(build_s, 1), "steps": args.steps,
           "chunks": args.chunks, "warmup": args.warmup, "pipelines": pipelines,
           "compile_codec": args.compile_codec}
    print(f"\n{env['device']} | torch {env['torch']} | {env['dtype']} | {env['config']} | DiT+VACE weights "
          f"{weights_gb:.2f} GB | {args.steps} steps | {args.chunks} chunks after {args.warmup} warm-up")
    print("dMax/dMean/PSNR: the variant's measured frames vs the exact path's (first variant: eager, bf16 Linears, "
          "no hint reuse; same weights, seed and inputs) in 8-bit levels; "
          "fps: wall clock of the loop incl. the host copy (not the bench's copies kept for the exact-path comparison); gpuFPS: frames per chunk / CUDA-event chunk time; stage "
          "columns: median ms per chunk; first: ms to the first decoded frames on the host after a reset; "
          "cut: chunk with a prompt cut (KV re-cache)")
    print(HEADER)
    for r in rows:
        print(format_row(r))
    if text_full is not None:
        print(f"\ntext encoder {text_full}")
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "results": rows, "text_encoder": text_full}, indent=2))
        print(f"wrote {args.out}")
    measured = [r for r in rows if "fps" in r]
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
