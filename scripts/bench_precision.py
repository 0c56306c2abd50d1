#!/usr/bin/env python
"""The kernel / precision / work-saving choices side by side, so a user can choose knowingly.

For each resolution (VACE depth control, TAE, 4 steps, LongLive, random full-size Wan2.1-1.3B +
VACE weights) and each variant below, one table row with:
  fps / gpu_fps      steady-state stream rate (scripts/bench_stream.run_variant: wall clock incl.
                     the host copy, and frames per CUDA-event chunk time)
  fwd_max / fwd_rel  one DiT forward (3 latent frames, t = 500, text only, no cache) under the
                     variant's kernel/precision settings against the exact settings on the same
                     input: max absolute difference and relative L2 error of the flow
  psnr / diff_max    the variant's output stream over the measured chunks against the exact
                     stream (same weights, seed, control video), 8-bit RGB
  kernels chosen     --sdpa auto's per-shape kernel and --fp8 auto's whole-block bf16/FP8 timings
                     per token count, with the choice (in the JSON)

Variants (exact = eager, bf16 Linears, PyTorch's default attention kernel, hints every step, a
clean K/V pass, the recipe's KV window): sdpa-auto, sdpa-cudnn, fp8-on, fp8-auto, hint-reuse,
clean-reuse, window-9 (a 9-frame KV window instead of 12), and the compiled fast paths fast
(compile + fp8 on + hint reuse + sdpa auto), fast-reuse (+ clean pass reuse), fast-auto (fp8 auto
instead of on), fast-auto-reuse and fast-auto-reuse-w9 (+ the 9-frame window). Suffixes: "-cc"
compiles the codec too, "-graphs" (last) replays the DiT as CUDA graphs. Rows that would start
after --budget seconds are listed as skipped; the JSON is rewritten after every row.

    python scripts/bench_precision.py --res 832x480 --out prec.json
    python scripts/bench_precision.py --smoke          # CPU, tiny model (end-to-end check)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_stream as bs  # noqa: E402
from vacelive.engine.dit.attention import sdpa_context, sdpa_selector  # noqa: E402
from vacelive.engine.dit.fp8 import relative_error  # noqa: E402
from vacelive.engine.factory import make_conditioner  # noqa: E402
from vacelive.engine.generator import StreamGenerator  # noqa: E402

VARIANTS = {  # in the default run order: the reference, the fast paths, then one switch at a time
    # name: (compile, fp8, sdpa, hint_reuse, clean_pass, kv_window)
    "exact": (False, "off", "default", False, "exact", None),
    "fast-auto": (True, "auto", "auto", True, "exact", None),
    "fast-auto-reuse": (True, "auto", "auto", True, "reuse", None),
    "fast-auto-reuse-w9": (True, "auto", "auto", True, "reuse", 9),
    "fast": (True, "on", "auto", True, "exact", None),
    "fast-reuse": (True, "on", "auto", True, "reuse", None),
    "fast-bf16": (True, "off", "auto", True, "exact", None),  # the bar --fp8 auto must not fall under
    "fast-bf16-reuse": (True, "off", "auto", True, "reuse", None),
    "sdpa-auto": (False, "off", "auto", False, "exact", None),
    "fp8-auto": (False, "auto", "default", False, "exact", None),
    "fp8-on": (False, "on", "default", False, "exact", None),
    "clean-reuse": (False, "off", "default", False, "reuse", None),
    "window-9": (False, "off", "default", False, "exact", 9),
    "hint-reuse": (False, "off", "default", True, "exact", None),
    "sdpa-cudnn": (False, "off", "cudnn", False, "exact", None),
}
GRAPHS = "-graphs"  # any variant name + "-graphs": the same with --cuda-graphs (engine.dit.graphs)
CODEC = "-cc"  # any variant name + "-cc" (before -graphs): the codec compiled too (--compile-codec)


def spec(variant: str) -> tuple:
    """(compile, fp8, sdpa, hint_reuse, clean_pass, kv_window, cuda_graphs, compile_codec) of a
    variant name."""
    graphs = variant.endswith(GRAPHS)
    base = variant.removesuffix(GRAPHS)
    codec = base.endswith(CODEC)
    return VARIANTS[base.removesuffix(CODEC)] + (graphs, codec)


def forward_error(gen: StreamGenerator, x, t, text_state, ref) -> dict:
    """One cache-free DiT forward of `x` under the generator's current settings vs `ref`."""
    with torch.no_grad(), sdpa_context(gen.sdpa):
        out = gen.model(x, t, text_state).float()
    if ref is None:
        return {"flow": out}
    return {"flow": out, "fwd_max": float((out - ref).abs().max()), "fwd_rel": relative_error(out, ref)}


def configure(gen: StreamGenerator, variant: str, compile_options: dict) -> None:
    compiled, fp8, sdpa, _, clean, _, graphs, compile_codec = spec(variant)
    gen.set_fp8("off")
    gen.set_compile(False)
    if compiled:
        # TorchDynamo keeps every earlier variant's graphs per code object; past its accumulated
        # limit later variants would silently run eagerly (seen on an H200: a "fast" row at eager
        # speed), so each compiled variant starts from empty caches.
        torch._dynamo.reset()
    gen.set_compile(compiled, **(compile_options if compiled else {}))
    gen.codec.use_compile(compile_codec, **{k: v for k, v in compile_options.items() if k == "backend"})
    gen.sdpa = sdpa
    gen.clean_pass = clean
    try:
        gen.set_fp8(fp8)
    except ValueError as exc:  # no FP8 matmuls on this device
        raise RuntimeError(str(exc)) from exc
    gen.set_cuda_graphs(graphs)


def bench_resolution(model, text, codec, res, args, device, dtype, t_start, sink) -> list[dict]:
    w, h = res
    conditioner = make_conditioner(model, codec, width=w, height=h, device=device, dtype=dtype)
    video = bs.depth_video(w, h)
    host = bs.HostCopy(device)
    gens: dict = {}

    def generator(window):
        for key, other in gens.items():  # the model's FP8 swap and compile belong to one at a time
            if key != window:
                other.set_fp8("off")
                other.set_compile(False)
        if window not in gens:
            gens[window] = StreamGenerator(model, codec, text, width=w, height=h, conditioner=conditioner,
                                           kv_window=window)
        return gens[window]
    g = torch.Generator(device="cpu").manual_seed(7)
    x = torch.randn(1, model.cfg.in_dim, 3, h // 8, w // 8, generator=g).to(device)
    t = torch.full((), 500.0, device=device)
    emb = torch.randn(1, 16, model.cfg.text_dim, generator=g).to(device=device, dtype=dtype)
    rows: list[dict] = []
    exact_frames = exact_flow = None
    for variant in args.variants:
        row = {"resolution": f"{w}x{h}", "mode": "depth", "codec": "tae", "steps": args.steps, "variant": variant}
        compiled, fp8, sdpa, reuse, clean, window, graphs, compile_codec = spec(variant)
        row.update(compile=compiled, fp8=fp8, sdpa=sdpa, hint_reuse=reuse, clean_pass=clean, kv_window=window,
                   cuda_graphs=graphs, compile_codec=compile_codec)
        if time.perf_counter() - t_start > args.budget:
            row["skipped"] = f"budget {args.budget:.0f} s spent"
            rows.append(row)
            sink(rows)
            continue
        t0 = time.perf_counter()
        try:
            gen = generator(window)
            configure(gen, variant, args.compile_options)
            with torch.no_grad():
                text_state = model.prepare_text(emb)
            fe = forward_error(gen, x, t, text_state, exact_flow)
            if exact_flow is None:
                exact_flow = fe["flow"]
            row.update({k: v for k, v in fe.items() if k != "flow"})
            row.update(bs.run_variant(gen, bs.Source("depth", video, args.steps, reuse), args, device, host))
            if exact_frames is None:
                exact_frames = host.measured
                row["exact_path"] = variant == "exact"
            else:
                row.update(bs.frame_difference(host.measured, exact_frames))
            row["fp8_linears"] = gen._fp8.count if gen._fp8 is not None else 0
            row["graphs"] = gen.describe()["cuda_graphs"]
            if fp8 == "auto":
                row["fp8_auto"] = gen.fp8_report
        except Exception as exc:  # one failing variant must not end the run
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if args.verbose:
                traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(format_row(row), flush=True)
        if row.get("fp8_auto"):  # what --fp8 auto timed and chose, per token count of a forward
            print("    fp8 auto, one block bf16/fp8/ffn-fp8 ms: " + ", ".join(
                f"{r['rows']}: {r.get('bf16_ms')}/{r.get('fp8_ms')}/{r.get('ffn_ms')} {r.get('choice', 'bf16')}"
                for r in row["fp8_auto"]), flush=True)
        sink(rows)
    for gen in gens.values():
        gen.set_fp8("off")
        gen.set_compile(False)
    return rows


HEADER = (f"{'res':>8} {'variant':>16} {'fps':>6} {'gpuFPS':>6} {'chunk':>7} {'dit':>7} {'fwdMax':>8} {'fwdRel':>8} "
          f"{'PSNR':>6} {'dMax':>5} {'fp8Lin':>6} {'s':>5}")


def format_row(r: dict) -> str:
    head = f"{r['resolution']:>8} {r['variant']:>16}"
    if "skipped" in r:
        return f"{head}  SKIPPED {r['skipped']}"
    if "error" in r:
        return f"{head}  ERROR {r['error']}"
    fwd = (f"{r['fwd_max']:8.4f} {r['fwd_rel']:8.2e}" if "fwd_max" in r else f"{'ref':>8} {'-':>8}")
    psnr = (f"{r['psnr_db']:6.1f} {r['diff_max']:5.0f}" if "psnr_db" in r else f"{'ref':>6} {'-':>5}")
    return (f"{head} {r['fps']:6.1f} {r['gpu_fps']:6.1f} {r['chunk_ms']:7.1f} {r['dit_ms']:7.1f} {fwd} {psnr} "
            f"{r.get('fp8_linears', 0):6d} {r.get('seconds', 0):5.0f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="832x480,576x320")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {','.join(VARIANTS)} "
                   f"(the first is the reference: keep exact first), each also as NAME{GRAPHS}")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--chunks", type=int, default=6, help="measured chunks per variant (the stream PSNR's N)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--budget", type=float, default=1e9, help="seconds; later variants are skipped")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.compile_options = {}
    bad = [v for v in args.variants if v.removesuffix(GRAPHS).removesuffix(CODEC) not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; choose from {list(VARIANTS)}")
    if args.smoke:
        resolutions = [(64, 48)]
        args.chunks, args.warmup = min(args.chunks, 2), min(args.warmup, 1)
        args.compile_options = {"backend": "eager"}  # CPU smoke: TorchDynamo only, no compiler
    else:
        resolutions = [bs.parse_res(r) for r in args.res.split(",")]
    t_start = time.perf_counter()
    device, dtype, model, text, codec = bs.vace_bench_model(args.smoke, args.device)
    env = {"device": bs.device_name(device),
           "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."), "steps": args.steps,
           "chunks": args.chunks, "config": "tiny (smoke)" if args.smoke else "wan2.1-1.3b + VACE (random weights)",
           "pipeline": "longlive", "codec": "tae", "mode": "depth"}
    all_rows: list[dict] = []

    def sink(rows):
        if args.out:
            Path(args.out).write_text(json.dumps({"env": env, "partial": True, "results": all_rows + rows,
                                                  "sdpa_auto": sdpa_selector().describe()}, indent=2, default=str))

    print(HEADER, flush=True)
    for res in resolutions:
        all_rows += bench_resolution(model, text, codec, res, args, device, dtype, t_start, sink)
    print("\nfwdMax/fwdRel: one DiT forward vs the exact settings; PSNR/dMax: the output stream over "
          f"{args.chunks} chunks vs the exact stream (8-bit RGB); fps incl. host copy; gpuFPS per CUDA-event chunk")
    print(HEADER)
    for r in all_rows:
        print(format_row(r))
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "results": all_rows,
                                              "sdpa_auto": sdpa_selector().describe()}, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0 if any("fps" in r for r in all_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
