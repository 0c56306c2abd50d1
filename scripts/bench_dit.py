#!/usr/bin/env python
"""Benchmark one causal DiT chunk forward (3 latent frames, full 12-frame window: 3 sink + 6
cached + 3 current frames) with random full-size Wan2.1-1.3B weights.

Modes: `dit` (base forward through the KV cache), `vace` (the same + the 15-block VACE hint
stream computed inside the forward), `hints` (the hint stream alone). Variants: SDPA backend
(auto / flash / cudnn / efficient / math), torch.compile of the blocks' pure parts
(engine.dit.compile) and the KV-cache RoPE mode (absolute / relative). Every combination is timed with CUDA events after a warm-up, median of
`--iters` runs; peak memory per variant; achieved TFLOP/s with the FLOP formula of
docs/PERFORMANCE.md, section 1:
per token per block 12 d^2 + 4 d ffn (linear) + 4 d (M + 512) (attention; M = keys attended);
a VACE block adds after_proj (2 d^2), VACE block 0 before_proj (2 d^2).

    python scripts/bench_dit.py --out bench.json                       # H100: both resolutions
    python scripts/bench_dit.py --sdpa auto,flash,cudnn --compile none,blocks --rope absolute,relative --out b.json
    python scripts/bench_dit.py --smoke                                 # CPU, tiny model
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vacelive.engine.config import WAN_1_3B, tiny_config  # noqa: E402
from vacelive.engine.dit import CausalWanModel, SinkWindow, VaceWanModel  # noqa: E402
from vacelive.engine.dit.attention import SDPA_BACKENDS, sdpa_context  # noqa: E402
from vacelive.engine.dit.compile import compile_blocks  # noqa: E402
from vacelive.engine.dit.fp8 import Fp8Linears, relative_error  # noqa: E402

# --compile variants: torch.compile kwargs for engine.dit.compile.compile_blocks
COMPILE_VARIANTS = {
    "none": None,
    "blocks": {"dynamic": False},
    "blocks-max": {"dynamic": False, "mode": "max-autotune-no-cudagraphs"},
    # CUDA graphs per compiled region. On torch 2.11 (H200) it fails: the block methods run many
    # times per forward on different inputs and cudagraph trees overwrite outputs still in use.
    "blocks-ro": {"dynamic": False, "mode": "reduce-overhead"},
}

CHUNK = 3
WINDOW, SINK = 12, 3


def parse_res(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def flops(cfg, tokens: int, keys: int, mode: str, n_vace: int) -> float:
    d, ffn = cfg.dim, cfg.ffn_dim
    per_block = lambda m: 12 * d * d + 4 * d * ffn + 4 * d * (m + cfg.text_len)
    main = tokens * cfg.num_layers * per_block(keys)
    hints = tokens * (n_vace * (per_block(tokens) + 2 * d * d) + 2 * d * d)
    return {"dit": main, "vace": main + hints, "hints": hints}[mode]


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def run(self, fn, iters: int) -> list[float]:
        if not self.cuda:
            out = []
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1e3)
            return out
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in events]


def build(cfg, device, dtype, seed=0):
    torch.manual_seed(seed)
    with torch.device(device):
        base = CausalWanModel(cfg)
        model = VaceWanModel(base)
    with torch.no_grad():  # upstream zero-inits these; random keeps the hint path numerically live
        for n, p in model.named_parameters():
            if "_proj" in n:
                p.normal_(0, 0.02)
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return model


def bench_resolution(model, res, args, device, timer) -> list[dict]:
    cfg = model.cfg
    w, h = res
    lh, lw = h // 8, w // 8
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(1, cfg.in_dim, CHUNK, lh, lw, generator=g).to(device)
    vc = torch.randn(1, model.vace_in_dim, CHUNK, lh, lw, generator=g).to(device)
    t = torch.full((1, CHUNK), 937.5, device=device)
    text = model.prepare_text(torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(device))
    ft = (lh // 2) * (lw // 2)
    tokens, keys = CHUNK * ft, WINDOW * ft
    start = WINDOW - CHUNK  # frames 9..11: sink 0..2 + cached 3..8 + current = full window
    rows = []
    exact: dict[str, torch.Tensor] = {}  # eager, no FP8: the reference for each mode's rel_err
    for compile_mode, rope, fp8 in [(c, r, f) for c in args.compile for r in args.rope for f in args.fp8]:
        kv = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        kv = model.new_kv_cache(SinkWindow(WINDOW, SINK), latent_hw=(lh, lw), rope_mode=rope)
        with torch.inference_mode():
            for s in range(0, start, CHUNK):  # fill the window
                model(x, torch.zeros_like(t), text, kv, s)
        calls = {
            "dit": lambda: model(x, t, text, kv, start),
            "vace": lambda: model(x, t, text, kv, start, vace_context=vc),
            "hints": lambda: model.compute_hints(x, t, text, vc),
        }
        fp8_handle = Fp8Linears(model) if fp8 == "on" else None
        kwargs = COMPILE_VARIANTS[compile_mode]
        restore = compile_blocks(model, **kwargs) if kwargs is not None else (lambda: None)
        for sdpa in args.sdpa:
            for mode in args.modes:
                if mode == "hints" and rope != args.rope[0]:
                    continue  # the hint stream has no KV cache: RoPE mode does not apply
                row = {"resolution": f"{w}x{h}", "latent": [lh, lw], "tokens": tokens, "keys": keys, "mode": mode,
                       "sdpa": sdpa, "compile": compile_mode, "rope": rope, "fp8": fp8}
                try:
                    with torch.inference_mode(), sdpa_context(sdpa):
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                            torch.cuda.reset_peak_memory_stats()
                        t0 = time.perf_counter()
                        out = calls[mode]()
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        row["first_call_s"] = round(time.perf_counter() - t0, 3)
                        out = torch.cat(out, 1) if isinstance(out, (list, tuple)) else out
                        if compile_mode == "none" and fp8 == "off" and rope == "absolute" and mode not in exact:
                            exact[mode] = out.float().clone()
                        if mode in exact:
                            row["rel_err"] = relative_error(out, exact[mode])
                        timer.run(calls[mode], args.warmup)
                        ms = timer.run(calls[mode], args.iters)
                    if args.profile and device.type == "cuda" and mode == args.modes[0]:
                        row["profile"] = profile_kernels(calls[mode], sdpa)
                    ms.sort()
                    row["ms_median"] = statistics.median(ms)
                    row["ms_p10"] = ms[len(ms) // 10]
                    row["ms_p90"] = ms[(len(ms) * 9) // 10]
                    row["tflop"] = flops(cfg, tokens, keys, mode, len(model.vace_blocks)) / 1e12
                    row["tflops_per_s"] = row["tflop"] / (row["ms_median"] / 1e3)
                    if device.type == "cuda":
                        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
                except Exception as exc:  # an unsupported backend must not end the whole run
                    row["error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
                rows.append(row)
                print(format_row(row), flush=True)
        restore()
        if fp8_handle is not None:
            fp8_handle.restore()
    return rows


def profile_kernels(fn, sdpa: str, calls: int = 3, top: int = 14) -> list[dict]:
    """CUDA time per kernel (torch.profiler) over `calls` calls: where a forward's time goes."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), sdpa_context(sdpa), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events)
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    rows = [{"kernel": e.key[:90], "ms_per_call": e.device_time_total / 1e3 / calls, "share": e.device_time_total / total,
             "launches_per_call": e.count / calls} for e in events[:top]]
    print(f"    profile: {total / 1e3 / calls:.2f} ms GPU time per call, {sum(e.count for e in events) / calls:.0f} kernels per call")
    for r in rows:
        print(f"    {r['ms_per_call']:8.3f} ms {100 * r['share']:5.1f}% x{r['launches_per_call']:<5.0f} {r['kernel']}")
    return rows


def format_row(r: dict) -> str:
    head = f"{r['resolution']:>9} {r['mode']:>6} {r['sdpa']:>9} {r['compile']:>10} {r['rope'][:3]:>4} {r['fp8']:>4}"
    if "error" in r:
        return f"{head}  ERROR {r['error']}"
    mem = f"{r['peak_mem_gb']:7.2f}" if "peak_mem_gb" in r else "      -"
    err = f"{r['rel_err']:8.1e}" if "rel_err" in r else "       -"
    return (f"{head} {r['ms_median']:9.2f} {r['ms_p10']:8.2f} {r['ms_p90']:8.2f} {r['tflop']:7.3g} "
            f"{r['tflops_per_s']:8.3g} {mem} {err}")


HEADER = (f"{'res':>9} {'mode':>6} {'sdpa':>9} {'compile':>10} {'rope':>4} {'fp8':>4} {'median ms':>9} {'p10':>8} {'p90':>8} "
          f"{'TFLOP':>7} {'TFLOP/s':>8} {'peak GB':>7} {'rel_err':>8}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="832x480,576x320", help="comma list of WxH (pixels)")
    p.add_argument("--modes", default="dit,vace,hints", help="comma list of dit,vace,hints")
    p.add_argument("--sdpa", default="auto", help=f"comma list of {','.join(SDPA_BACKENDS)}")
    p.add_argument("--compile", default="none", help="comma list of " + ",".join(COMPILE_VARIANTS))
    p.add_argument("--fp8", default="off", help="comma list of off,on (FP8 e4m3 block Linears, engine.dit.fp8)")
    p.add_argument("--rope", default="absolute", help="comma list of absolute,relative (KV-cache RoPE mode)")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes on CPU (end-to-end check)")
    p.add_argument("--profile", action="store_true", help="CUDA kernel breakdown (torch.profiler) of the first mode of every variant")
    args = p.parse_args(argv)
    for name in ("modes", "sdpa", "compile", "rope", "fp8"):
        setattr(args, name, [v.strip() for v in getattr(args, name).split(",") if v.strip()])
    bad = [s for s in args.sdpa if s not in SDPA_BACKENDS]
    if bad:
        raise SystemExit(f"unknown --sdpa {bad}; choose from {list(SDPA_BACKENDS)}")
    if args.smoke:
        cfg = tiny_config(num_layers=4)
        device = torch.device(args.device or "cpu")
        dtype = torch.float32
        resolutions = [(128, 64), (96, 64)]
        args.iters, args.warmup = min(args.iters, 3), min(args.warmup, 1)
    else:
        cfg = WAN_1_3B
        device = torch.device(args.device or "cuda")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
        resolutions = [parse_res(r) for r in args.res.split(",")]
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
    model = build(cfg, device, dtype)
    weights_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    timer = Timer(device)
    print(HEADER, flush=True)
    rows = []
    for res in resolutions:
        rows += bench_resolution(model, res, args, device, timer)
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "dtype": str(dtype).replace("torch.", ""),
           "config": "tiny (smoke)" if args.smoke else "wan2.1-1.3b", "vace_blocks": len(model.vace_blocks),
           "weights_gb": weights_gb, "window": f"{SINK} sink + {WINDOW - SINK - CHUNK} cached + {CHUNK} current frames",
           "iters": args.iters, "warmup": args.warmup}
    print(f"\n{env['device']} | torch {env['torch']} | {env['dtype']} | {env['config']} | weights {weights_gb:.2f} GB | window {env['window']}")
    print(HEADER)
    for r in rows:
        print(format_row(r))
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "results": rows}, indent=2))
        print(f"wrote {args.out}")
    return 1 if rows and all("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
