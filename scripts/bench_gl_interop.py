#!/usr/bin/env python
"""GPU -> OpenGL texture copy time: the CUDA-GL interop path (no CPU copy) against the CPU path
(pinned non_blocking D2H, then glTexSubImage2D), on a headless EGL context.

    python scripts/bench_gl_interop.py                  # CUDA + EGL, 832x480 and 1280x720
    python scripts/bench_gl_interop.py --smoke          # no GPU: CPU path on a software EGL context
    python scripts/bench_gl_interop.py --json out.json

Each size: the texture is read back and compared with the tensor first (a wrong copy fails the
run), then `--iters` uploads are timed. "interop" times map + cudaMemcpy2DToArrayAsync + unmap:
host wall time per call (after a stream sync) and GPU time from CUDA events; "cpu path" is the
fallback the Spout sink uses without interop. Exits 2 with the precise reason when EGL, PyOpenGL,
cuda-bindings or CUDA is missing (see docs/transports.md for carrying libEGL to a GPU box).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def fail(reason: str) -> int:
    print(f"bench_gl_interop: CANNOT RUN: {reason}", file=sys.stderr)
    return 2


def pattern(h: int, w: int):
    import numpy as np

    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, (3 * y) % 256, (x ^ y) % 256, np.full_like(x, 255)], -1).astype(np.uint8)


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="no GPU needed: tiny size, CPU path only")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import numpy as np
    import torch

    from vacelive.bridge.transports import gl_interop
    from vacelive.bridge.transports.base import TransportUnavailable
    from vacelive.bridge.transports.staging import HostStager

    cuda = torch.cuda.is_available()
    if not args.smoke:
        reason = gl_interop.interop_unavailable_reason()
        if reason:
            return fail(reason)
    sizes = [(96, 64)] if args.smoke else [(832, 480), (1280, 720)]
    iters = args.iters or (10 if args.smoke else 300)
    try:
        ctx = gl_interop.EGLContext(cuda_device=torch.cuda.current_device() if cuda else None)
    except TransportUnavailable as exc:
        return fail(str(exc))
    GL = gl_interop._gl()
    env = {"gpu": torch.cuda.get_device_name() if cuda else None, "gl_renderer": ctx.renderer,
           "gl_version": ctx.version, "torch": torch.__version__, "python": platform.python_version()}
    if not args.smoke and "llvmpipe" in ctx.renderer.lower():
        return fail(f"EGL gave a software renderer ({ctx.renderer}), not the GPU: check the NVIDIA EGL vendor "
                    "file (__EGL_VENDOR_LIBRARY_FILENAMES) described in docs/transports.md")
    print(f"# bench_gl_interop  GPU: {env['gpu']}  GL: {ctx.renderer} ({ctx.version})")
    results: dict = {"env": env, "sizes": {}}
    stager = HostStager()
    print("| size | interop host ms (median) | interop GPU ms (events) | cpu path ms (pinned D2H + glTexSubImage2D) |")
    print("|---|---|---|---|")
    for w, h in sizes:
        tex = gl_interop.GLTexture(w, h)
        host = torch.from_numpy(pattern(h, w))
        row: dict = {}
        if cuda and not args.smoke:
            frame = host.cuda()
            tex.upload(frame)
            if not np.array_equal(tex.read(), host.numpy()):
                return fail(f"{w}x{h}: texture content differs from the CUDA tensor after interop upload")
            for _ in range(20):
                tex.upload(frame)
            torch.cuda.synchronize()
            walls, gpus = [], []
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(iters):
                t0 = time.perf_counter()
                start.record()
                tex.upload(frame)
                end.record()
                t1 = time.perf_counter()
                end.synchronize()
                walls.append(t1 - t0)
                gpus.append(start.elapsed_time(end) / 1e3)
            GL.glFinish()
            row["interop_host_ms"] = median_ms(walls)
            row["interop_gpu_ms"] = median_ms(gpus)
            src = frame
        else:
            src = host
        # CPU path: what SpoutSink does without interop (pinned D2H for CUDA input) + GL upload
        tex.upload(stager.to_numpy(src))
        if not np.array_equal(tex.read(), host.numpy()):
            return fail(f"{w}x{h}: texture content differs after the CPU-path upload")
        cpu = []
        for _ in range(iters):
            t0 = time.perf_counter()
            tex.upload(stager.to_numpy(src))
            GL.glFinish()
            cpu.append(time.perf_counter() - t0)
        row["cpu_path_ms"] = median_ms(cpu)
        tex.close()
        results["sizes"][f"{w}x{h}"] = row
        print(f"| {w}x{h} | {row.get('interop_host_ms', float('nan')):.3f} | "
              f"{row.get('interop_gpu_ms', float('nan')):.3f} | {row['cpu_path_ms']:.3f} |", flush=True)
    ctx.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
