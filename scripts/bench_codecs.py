#!/usr/bin/env python
"""Benchmark the streaming codecs (Wan2.1 VAE, TAEHV, lighttae) with random full-size weights.

Steady state per chunk, as the generator uses them: stream-encode 12 frames -> 3 latents and
stream-decode 3 latents -> 12 frames (the first call of each stream is run before timing and
reported separately). CUDA events, warm-up, median over iterations, peak memory per case.
Variants are switches so one GPU call compares them:
  eager            the default exact path
  channels_last    activations in channels-last (NDHWC / NHWC)
  cudnn_benchmark  torch.backends.cudnn.benchmark = True
  compile          torch.compile of the per-chunk encode/decode functions (slow to start: each
                   case compiles its shapes; opt in, e.g. --codecs wan --res 832x480)
Variants combine with '+', e.g. channels_last+cudnn_benchmark.

    python scripts/bench_codecs.py --out bench_codecs.json            # GPU, defaults
    python scripts/bench_codecs.py --variants eager,compile --codecs wan
    python scripts/bench_codecs.py --smoke                           # CPU, tiny, proves it runs
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vacelive.engine.codecs import random_codec  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
KNOWN_FLAGS = {"eager", "channels_last", "cudnn_benchmark", "compile"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codecs", default="wan,tae,lighttae")
    p.add_argument("--res", default="832x480,576x320", help="comma list of WIDTHxHEIGHT")
    p.add_argument("--wan-dtypes", default="bf16")
    p.add_argument("--tae-dtypes", default="bf16,fp16", help="dtypes for tae and lighttae")
    p.add_argument("--variants", default="eager,channels_last,cudnn_benchmark,"
                                         "channels_last+cudnn_benchmark")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode for the 'compile' variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, tiny configs and sizes, 1 iteration: proves the script runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.res, args.warmup, args.iters = "cpu", "64x32", 1, 2
        args.wan_dtypes, args.tae_dtypes = "fp32", "fp32,bf16"
        if args.variants == p.get_default("variants"):
            args.variants = "eager,channels_last"
    return args


class Timer:
    """Milliseconds of one call: CUDA events on GPU (no host sync inside the loop), wall on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def apply_variant(codec, flags: set[str], compile_mode: str, device: torch.device):
    if "compile" in flags:
        # Fresh compile caches per case: dynamo's per-function recompile limit would otherwise make
        # later cases (other dtypes/resolutions/layouts) silently fall back to eager.
        torch._dynamo.reset()
    codec.use_channels_last("channels_last" in flags)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = "cudnn_benchmark" in flags
    codec.use_compile("compile" in flags, mode=None if compile_mode == "default" else compile_mode)


def bench_case(codec, width: int, height: int, args, device: torch.device) -> dict:
    timer = Timer(device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    frames = torch.rand(1, 3, 12, height, width, generator=g, device=device) * 2 - 1
    latents = torch.randn(1, 16, 3, height // 8, width // 8, generator=g, device=device)
    out: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for what, make, data in (("encode", codec.encoder_stream, frames),
                             ("decode", codec.decoder_stream, latents)):
        call = (lambda s: s.encode(data)) if what == "encode" else (lambda s: s.decode(data))
        stream = make()
        out[f"{what}_first_ms"] = timer(lambda: call(stream))  # includes one-off set-up costs
        for _ in range(args.warmup):
            call(stream)
        times = [timer(lambda: call(stream)) for _ in range(args.iters)]
        out[f"{what}_ms"] = statistics.median(times)
        out[f"{what}_min_ms"] = min(times)
        fresh = make()  # first call again, now warm: the first-chunk latency a stream sees
        out[f"{what}_first_warm_ms"] = timer(lambda: call(fresh))
        del stream, fresh
    if device.type == "cuda":
        out["peak_activation_gb"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        out["weights_gb"] = base / 2**30
    out["chunk_fps_decode_only"] = 12_000.0 / out["decode_ms"]
    out["chunk_fps_encode_decode"] = 12_000.0 / (out["decode_ms"] + out["encode_ms"])
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; use --smoke for a CPU run", file=sys.stderr)
        return 2
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        unknown = set(v.split("+")) - KNOWN_FLAGS
        if unknown:
            print(f"unknown variant flag(s) {sorted(unknown)}; known: {sorted(KNOWN_FLAGS)}",
                  file=sys.stderr)
            return 2
    resolutions = [tuple(int(n) for n in r.lower().split("x")) for r in args.res.split(",")]
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
           platform.processor() or "cpu",
           "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
           "smoke": args.smoke, "warmup": args.warmup, "iters": args.iters}
    print(f"# bench_codecs on {env['device']} (torch {env['torch']})", flush=True)
    results = []
    torch.set_grad_enabled(False)
    for kind in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        dtypes = args.wan_dtypes if kind == "wan" else args.tae_dtypes
        for dtype_name in [d.strip() for d in dtypes.split(",") if d.strip()]:
            try:
                codec = random_codec(kind, small=args.smoke, seed=args.seed, device=device,
                                     dtype=DTYPES[dtype_name])
            except Exception as exc:  # e.g. out of memory: record and go on
                results.append({"codec": kind, "dtype": dtype_name, "error": repr(exc)})
                continue
            for width, height in resolutions:
                for variant in variants:
                    row = {"codec": kind, "dtype": dtype_name, "res": f"{width}x{height}",
                           "variant": variant}
                    try:
                        apply_variant(codec, set(variant.split("+")), args.compile_mode, device)
                        row.update(bench_case(codec, width, height, args, device))
                    except Exception as exc:  # one failing variant must not lose the others
                        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                        traceback.print_exc(limit=2)
                    finally:
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                    results.append(row)
                    print(format_row(row), flush=True)
            del codec
    print_table(results)
    if args.out:
        args.out.write_text(json.dumps({"env": env, "results": results}, indent=2))
        print(f"# wrote {args.out}")
    return 0 if all("error" not in r for r in results) else 1


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['codec']:>8} {r['dtype']:>5} {r.get('res', ''):>8} " \
               f"{r.get('variant', ''):<30} ERROR {r['error']}"
    peak = f"{r['peak_activation_gb']:7.2f}" if "peak_activation_gb" in r else "      -"
    return (f"{r['codec']:>8} {r['dtype']:>5} {r['res']:>8} {r['variant']:<30} "
            f"{r['encode_ms']:9.2f} {r['decode_ms']:9.2f} {r['encode_first_warm_ms']:9.2f} "
            f"{r['decode_first_warm_ms']:9.2f} {peak} {r['chunk_fps_decode_only']:8.1f}")


def print_table(results: list[dict]) -> None:
    print()
    print(f"{'codec':>8} {'dtype':>5} {'res':>8} {'variant':<30} {'enc12 ms':>9} {'dec3 ms':>9} "
          f"{'enc1st':>9} {'dec1st':>9} {'peak GB':>7} {'dec fps':>8}")
    for r in results:
        print(format_row(r))


if __name__ == "__main__":
    sys.exit(main())
