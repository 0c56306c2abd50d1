#!/usr/bin/env python
"""Krea Realtime 14B + VACE-14B on one GPU: peak VRAM and fps of the real chunk loop
(engine.generator.StreamGenerator with the krea-realtime recipe: KV recompute every chunk,
kv_cache_attention_bias 0.3) at 832x480 and 576x320, in bf16 and with compact FP8 Linears
(engine.dit.fp8, keep_originals=False), VACE depth-style control on every chunk, 4 steps, eager.

Weights are random and made directly on the GPU: the model is built on the meta device, then
`to_empty(cuda)` and initialised in place parameter by parameter (no host copy, no fp32 copy),
the way real weights stream from safetensors (engine.checkpoint.load_matching: one tensor at a time, assign=True).
The full Wan2.1 VAE is random too (decode and VACE encode cost). The text encoder is off the GPU
(placement "cpu"; a small random umT5 with the 4096-wide output, since only the embeddings reach
the GPU). Reported per row: peak allocated / reserved VRAM over the measured chunks (weights
included), fps (wall clock, incl. decode), ms per chunk, and for bf16 the same with bias 1.0
(plain attention, no float mask) to show what the bias costs. Load peaks are reported separately.

    python scripts/bench_memory_14b.py --out $OUT/krea14b.json      # H200: about 2 minutes
    python scripts/bench_memory_14b.py --smoke                      # CPU, tiny config, end to end

Rows are written to the JSON (and a markdown table next to it) as they finish; a run cut short by
the time limit keeps them.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vacelive.engine.codecs import random_codec  # noqa: E402
from vacelive.engine.config import WAN_14B, tiny_config  # noqa: E402
from vacelive.engine.dit.fp8 import Fp8Linears, fp8_supported  # noqa: E402
from vacelive.engine.factory import make_conditioner, random_dit_in_place, random_text_encoder  # noqa: E402
from vacelive.engine.generator import StreamGenerator  # noqa: E402
from vacelive.engine.request import ChunkRequest, Prompt  # noqa: E402

PROMPT = "a dancer in a flooded warehouse, volumetric light, slow dolly"
GB = 2**30


def gib(n: int) -> float:
    return round(n / GB, 2)


def control_frames(n: int, h: int, w: int, t: int) -> np.ndarray:
    """A moving depth-like gradient, uint8 [n, h, w, 1]."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    out = np.empty((n, h, w, 1), np.uint8)
    for i in range(n):
        phase = (t * n + i) * 0.05
        out[i, :, :, 0] = (255 * (0.5 + 0.5 * np.sin(6 * x + 3 * y + phase))).astype(np.uint8)
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(model, codec, text, device, dtype, w, h, chunks, warmup, bias):
    cond = make_conditioner(model, codec, width=w, height=h, device=device, dtype=dtype)
    gen = StreamGenerator(model, codec, text, recipe="krea-realtime", width=w, height=h, conditioner=cond)
    t = 0

    def step():
        nonlocal t
        r = gen.step(ChunkRequest(prompts=[Prompt(PROMPT)], video=control_frames(gen.next_chunk_frames, h, w, t),
                                  kv_cache_attention_bias=bias))
        t += 1
        return r

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    frames, t0 = 0, time.perf_counter()
    stages: dict[str, list[float]] = {}
    for _ in range(chunks):
        r = step()
        frames += r.frames.shape[0]
        for k, v in r.timings_ms.items():
            stages.setdefault(k, []).append(v)
    sync(device)
    dt = time.perf_counter() - t0
    row = {"width": w, "height": h, "bias": bias, "chunks": chunks, "frames": frames,
           "fps": round(frames / dt, 2), "ms_per_chunk": round(1e3 * dt / chunks, 1),
           "stages_ms": {k: round(float(np.median(v)), 1) for k, v in stages.items()},
           "kv_cache_gb": gib(gen.kv.nbytes)}
    if device.type == "cuda":
        row["peak_allocated_gb"] = gib(torch.cuda.max_memory_allocated(device))
        row["peak_reserved_gb"] = gib(torch.cuda.max_memory_reserved(device))
    del gen, cond
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def write(out: Path, doc: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    lines = [f"# Krea Realtime 14B + VACE-14B ({doc['device']}, {doc['steps']} steps, eager, VACE control every chunk, "
             "text encoder on the CPU)", "",
             "| mode | resolution | bias | fps | ms/chunk | peak allocated GB | peak reserved GB | KV cache GB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['mode']} | {r['width']}x{r['height']} | {r['bias']} | {r['fps']} | {r['ms_per_chunk']} | "
                     f"{r.get('peak_allocated_gb', '-')} | {r.get('peak_reserved_gb', '-')} | {r['kv_cache_gb']} |")
    lines += ["", f"weights: {json.dumps(doc.get('weights', {}))}"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", default="832x480,576x320")
    ap.add_argument("--modes", default="bf16,fp8")
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=135.0, help="stop starting new cases after this")
    ap.add_argument("--out", default="krea14b.json")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny config, tiny codec")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    cfg = tiny_config(num_layers=4, vace_layers=(0, 2), text_dim=64) if args.smoke else WAN_14B
    out = Path(args.out)
    doc = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "steps": 4, "rows": [], "weights": {}}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = random_dit_in_place(cfg, vace=True, device=device, dtype=dtype)
    sync(device)
    n_params = sum(p.numel() for p in model.parameters())
    doc["weights"]["params_billion"] = round(n_params / 1e9, 3)
    doc["weights"]["build_s"] = round(time.perf_counter() - t_start, 1)
    if device.type == "cuda":
        doc["weights"]["bf16_allocated_gb"] = gib(torch.cuda.memory_allocated(device))
        doc["weights"]["bf16_build_peak_gb"] = gib(torch.cuda.max_memory_allocated(device))
    codec = random_codec("tae" if args.smoke else "wan", small=args.smoke, seed=1, device=device, dtype=dtype)
    text = random_text_encoder(cfg.text_dim, size="tiny", seq_len=cfg.text_len, device=device,
                               dtype=torch.float32, placement="cpu")
    resolutions = [tuple(int(v) for v in r.split("x")) for r in args.res.split(",")]
    if args.smoke:
        resolutions = [(64, 48)]
    modes = args.modes.split(",")
    write(out, doc)
    for mode in modes:
        if mode == "fp8":
            if not fp8_supported(device):
                doc["rows"].append({"mode": "fp8", "skipped": f"FP8 matmuls not supported on {device}"})
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            handle = Fp8Linears(model, keep_originals=False)
            sync(device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                doc["weights"]["fp8_allocated_gb"] = gib(torch.cuda.memory_allocated(device))
                doc["weights"]["fp8_convert_peak_gb"] = gib(torch.cuda.max_memory_allocated(device))
            doc["weights"]["fp8_linears"] = handle.count
        for w, h in resolutions:
            for bias in ((0.3, 1.0) if mode == "bf16" else (0.3,)):
                if time.perf_counter() - t_start > args.budget_s:
                    doc["rows"].append({"mode": mode, "width": w, "height": h, "bias": bias,
                                        "skipped": "time budget", "fps": "-", "ms_per_chunk": "-", "kv_cache_gb": "-"})
                    continue
                try:
                    row = run_case(model, codec, text, device, dtype, w, h, args.chunks, args.warmup, bias)
                except torch.cuda.OutOfMemoryError as exc:
                    row = {"width": w, "height": h, "bias": bias, "error": f"OOM: {str(exc)[:200]}",
                           "fps": "-", "ms_per_chunk": "-", "kv_cache_gb": "-"}
                    torch.cuda.empty_cache()
                row["mode"] = mode
                doc["rows"].append(row)
                write(out, doc)
                print(json.dumps(row), flush=True)
    doc["total_s"] = round(time.perf_counter() - t_start, 1)
    write(out, doc)
    bad = [r for r in doc["rows"] if "fps" in r and isinstance(r["fps"], float) and not math.isfinite(r["fps"])]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
