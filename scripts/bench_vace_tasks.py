#!/usr/bin/env python
"""Benchmark the chunk loop for every VACE task (random full-size weights), with the measurement
loop of scripts/bench_stream.py (steady-state fps, CUDA-event stage times, first chunk, cut, VRAM).

Modes (synthetic host frames, uint8 RGBA, as a texture input would deliver them):
  text        no VACE input (baseline)
  r2v         one reference image (sticky: sent once after each reset)
  r2v3        three reference images
  depth       a moving synthetic depth map as control video (bench_stream's depth_video)
  r2v+depth   both
  inpaint     a moving synthetic camera picture + a static mask (centre box regenerated)
  scribble    the camera picture through the GPU scribble annotator (Canny-style) as control
  extension   lastframe anchors: a new 2-chunk extension every 2 chunks (anchor in every 2nd chunk)
Each row also reports the conditioner's counters: real encoder calls vs all-zero encodes served
from the exact fixed-point cache, reference encodes.

    python scripts/bench_vace_tasks.py --out vace.json                     # 832x480 + 576x320, wan + tae
    python scripts/bench_vace_tasks.py --res 832x480 --codecs tae --hint-reuse off,on
    python scripts/bench_vace_tasks.py --smoke                             # CPU, tiny model, end to end
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stream import HEADER, HostCopy, depth_video, format_row, onoff, parse_res, run_variant, sync  # noqa: E402

from vacelive.engine.codecs import random_codec  # noqa: E402
from vacelive.engine.config import WAN_1_3B, tiny_config  # noqa: E402
from vacelive.engine.factory import make_conditioner, random_dit, random_text_encoder  # noqa: E402
from vacelive.engine.generator import StreamGenerator  # noqa: E402
from vacelive.engine.request import ChunkRequest, Extension, Prompt  # noqa: E402

MODES = ("text", "r2v", "r2v3", "depth", "r2v+depth", "inpaint", "scribble", "extension")
PROMPT = "a neon city street at night, rain, reflections, slow camera move"


def camera_video(width: int, height: int, frames: int = 48) -> np.ndarray:
    """A synthetic moving 'camera' picture: drifting colour bands and a bright disc (RGBA uint8)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 4), dtype=np.uint8)
    for i in range(frames):
        a = 2 * math.pi * i / frames
        r = 0.5 + 0.5 * np.sin(x / width * 6 + a)
        g = 0.5 + 0.5 * np.sin(y / height * 5 - a)
        b = 0.5 + 0.5 * np.sin((x + y) / (width + height) * 8 + 2 * a)
        cx, cy = width * (0.5 + 0.25 * math.cos(a)), height * 0.5
        disc = ((x - cx) ** 2 + (y - cy) ** 2) < (0.15 * height) ** 2
        rgb = np.stack([r, g, b], -1)
        rgb[disc] = 1.0
        out[i, ..., :3] = (rgb * 255).astype(np.uint8)
        out[i, ..., 3] = 255
    return out


def reference_images(width: int, height: int, count: int) -> list[np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    refs = []
    for k in range(count):
        rgb = np.stack([(x / width + 0.3 * k) % 1, (y / height + 0.5 * k) % 1, np.full_like(x, 0.2 + 0.3 * k)], -1)
        refs.append((rgb * 255).astype(np.uint8))
    return refs


class TaskSource:
    """Chunk requests of one VACE mode (see module doc)."""

    def __init__(self, mode: str, res: tuple[int, int], steps: int, hint_reuse: bool):
        w, h = res
        self.mode, self.steps, self.hint_reuse = mode, steps, hint_reuse
        self.depth = depth_video(w, h) if "depth" in mode else None
        self.camera = camera_video(w, h) if mode in ("inpaint", "scribble") else None
        self.refs = reference_images(w, h, 3 if mode == "r2v3" else 1)
        self.mask = np.zeros((h, w), np.uint8)
        self.mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
        self.pos = 0

    def _frames(self, video: np.ndarray, n: int) -> np.ndarray:
        idx = [(self.pos + i) % len(video) for i in range(n)]
        return video[idx]

    def request(self, gen: StreamGenerator, prompt: str = PROMPT) -> ChunkRequest:
        n, fresh = gen.next_chunk_frames, gen.chunk_index == 0
        kw: dict = {}
        if self.mode.startswith("r2v") and fresh:
            kw["refs"] = self.refs  # sticky: a reset clears them, so send them again
        if self.depth is not None:
            kw["video"] = self._frames(self.depth, n)
        if self.camera is not None:
            kw["video"] = self._frames(self.camera, n)
            if self.mode == "inpaint":
                kw["mask"], kw["mask_channel"] = self.mask, "luma"
            else:
                kw["annotator"] = "scribble"
        if self.mode == "extension" and gen.chunk_index % 2 == 0:
            kw["extension"] = Extension("lastframe", last=self.refs[0], chunks=2)
        self.pos += n
        return ChunkRequest(prompts=[Prompt(prompt)], steps=self.steps, hint_reuse=self.hint_reuse, **kw)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="832x480,576x320", help="comma list of WxH (multiples of 16)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {','.join(MODES)}")
    p.add_argument("--codecs", default="wan,tae", help="comma list of wan,tae,lighttae")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--chunks", type=int, default=20, help="measured steady-state chunks per variant")
    p.add_argument("--warmup", type=int, default=12, help="chunks before measuring (the zero-encode cache "
                   "of the Wan VAE needs ~10 chunks to reach its fixed point)")
    p.add_argument("--hint-reuse", default="off", help="on/off list: VACE hints once per chunk")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes on CPU (end-to-end check)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    reuse_list = onoff(args.hint_reuse)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown --modes {bad}; choose from {MODES}")
    if args.smoke:
        cfg, size, device, dtype = tiny_config(), "tiny", torch.device(args.device or "cpu"), torch.float32
        resolutions = [(64, 48)]
        args.chunks, args.warmup = min(args.chunks, 2), min(args.warmup, 1)
    else:
        cfg, size, device = WAN_1_3B, "full", torch.device(args.device or "cuda")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
        resolutions = [parse_res(r) for r in args.res.split(",")]
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    model = random_dit(cfg, vace=True, device=device, dtype=dtype)
    text = random_text_encoder(cfg.text_dim, size="tiny", seq_len=cfg.text_len, device=device, dtype=dtype)
    codecs = {c.strip(): random_codec(c.strip(), small=size == "tiny", device=device, dtype=dtype)
              for c in args.codecs.split(",") if c.strip()}
    print(HEADER + "  encodes(real/zero-cached) refs", flush=True)
    rows = []
    for w, h in resolutions:
        for name, codec in codecs.items():
            for mode in modes:
                for reuse in (reuse_list if mode != "text" else [False]):
                    row = {"resolution": f"{w}x{h}", "mode": mode, "codec": name, "steps": args.steps, "hint_reuse": reuse}
                    try:
                        cond = None if mode == "text" else make_conditioner(model, codec, width=w, height=h, device=device, dtype=dtype)
                        gen = StreamGenerator(model, codec, text, width=w, height=h, conditioner=cond)
                        row.update(run_variant(gen, TaskSource(mode, (w, h), args.steps, reuse), args, device, HostCopy(device)))
                        if cond is not None:
                            row["conditioner"] = cond.stats()
                    except Exception as exc:  # one failing case (OOM, ...) must not end the run
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                        if args.verbose:
                            traceback.print_exc()
                    rows.append(row)
                    st = row.get("conditioner")
                    extra = "" if st is None else (f"  {st['inactive_encodes'] + st['reactive_encodes']}/{st['zero_hits']}"
                                                   f" {st['reference_encodes']}")
                    print(format_row(row) + extra, flush=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "dtype": str(dtype).removeprefix("torch."), "config": "tiny (smoke)" if args.smoke else "wan2.1-1.3b + VACE (random weights)",
           "steps": args.steps, "chunks": args.chunks, "warmup": args.warmup}
    print(f"\n{env}")
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "results": rows}, indent=2))
        print(f"wrote {args.out}")
    sync(device)
    return 0 if any("fps" in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
