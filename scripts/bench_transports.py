#!/usr/bin/env python
"""Per-frame cost of the CPU transports: shared-memory ring write/read, the ZMQ link round trip
with raw and JPEG frames, and pacer jitter on real time.

    python scripts/bench_transports.py                 # 832x480 and 1280x720
    python scripts/bench_transports.py --smoke         # tiny sizes, a few iterations
    python scripts/bench_transports.py --json out.json

Link numbers are a loopback round trip of one 12-frame chunk (request with 12 RGBA control frames
in, 12 RGBA frames out) through EngineServer/RemoteGenerator with an echo generator, so they are
link cost only (serialisation, codec, TCP loopback, threads); "per frame" = chunk / 12.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from vacelive.bridge.link import EngineServer, RemoteGenerator  # noqa: E402
from vacelive.bridge.pacer import Pacer  # noqa: E402
from vacelive.bridge.transports.shm import ShmFrameSink, ShmFrameSource  # noqa: E402
from vacelive.engine.request import ChunkRequest, ChunkResult  # noqa: E402


class EchoGenerator:
    """Returns the request's control frames: the link's cost with no model in the way."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.next_chunk_frames = 12

    def step(self, request: ChunkRequest) -> ChunkResult:
        v = request.video
        frames = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
        return ChunkResult(frames=frames, chunk_index=0)

    def reset(self) -> None:
        pass

    def describe(self) -> dict:
        return {"pipeline": "echo", "width": self.width, "height": self.height}


def camera_like(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth moving gradients plus mild noise: JPEG sizes like a real control/camera feed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((n, h, w, 4), np.uint8)
    for i in range(n):
        r = 127 + 120 * np.sin((x + 7 * i) / 53.0)
        g = 127 + 120 * np.cos((y - 5 * i) / 41.0)
        b = 127 + 120 * np.sin((x + y + 3 * i) / 97.0)
        img = np.stack([r, g, b], -1) + rng.normal(0, 4, (h, w, 3))
        frames[i, ..., :3] = np.clip(img, 0, 255)
        frames[i, ..., 3] = 255
    return frames


def stats_ms(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"median_ms": statistics.median(s) * 1e3, "p95_ms": s[int(0.95 * (len(s) - 1))] * 1e3, "n": len(s)}


def bench_shm(w: int, h: int, iters: int) -> dict:
    name = "vlb" + uuid.uuid4().hex[:8]
    sink, src = ShmFrameSink(name, slots=3), ShmFrameSource(name)
    frames = camera_like(2, h, w)
    writes, reads = [], []
    try:
        for i in range(iters + 5):
            t0 = time.perf_counter()
            sink.send(frames[i % 2])
            t1 = time.perf_counter()
            out = src.read()
            t2 = time.perf_counter()
            assert out is not None
            if i >= 5:
                writes.append(t1 - t0)
                reads.append(t2 - t1)
    finally:
        src.close()
        sink.close()
    return {"write": stats_ms(writes), "read": stats_ms(reads)}


def bench_link(w: int, h: int, iters: int, codec: str) -> dict:
    server = EngineServer(EchoGenerator(w, h), "tcp://127.0.0.1:0").start()
    video = camera_like(12, h, w)
    times = []
    try:
        with RemoteGenerator(server.endpoint, codec=codec, connect_timeout=10) as gen:
            for i in range(iters + 3):
                t0 = time.perf_counter()
                res = gen.step(ChunkRequest(video=video, seed=i))
                dt = time.perf_counter() - t0
                assert res.frames.shape == (12, h, w, 4)
                if i >= 3:
                    times.append(dt)
            if codec == "raw":
                assert np.array_equal(res.frames.numpy(), video)
    finally:
        server.stop()
    st = stats_ms(times)
    st["per_frame_ms"] = st["median_ms"] / 12
    st["chunk_mb_each_way"] = video.nbytes / 1e6 if codec == "raw" else None
    return st


def bench_pacer(seconds: float, w: int, h: int, gen_fps: float = 24.0) -> dict:
    """Real-time pacer fed 12-frame chunks at gen_fps with ±15 % chunk-interval jitter, sending
    into a shared-memory sink (the output thread does real copies, like a live show)."""
    name = "vlp" + uuid.uuid4().hex[:8]
    sink = ShmFrameSink(name)
    chunk = camera_like(12, h, w)
    stop = threading.Event()
    rng = np.random.default_rng(1)
    pacer = Pacer(sink, target_fps=None, initial_fps=gen_fps)

    def producer() -> None:
        while not stop.is_set():
            pacer.push(chunk)
            time.sleep(12 / gen_fps * rng.uniform(0.85, 1.15))

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    st = pacer.stats
    pacer.stop()
    sink.close()
    return {"fps_generation": st.fps_generation, "fps_out": st.fps_out, "emitted": st.emitted,
            "repeated": st.repeated, "dropped": st.dropped, "jitter_p50_ms": st.jitter_p50_ms,
            "jitter_p99_ms": st.jitter_p99_ms, "seconds": seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and few iterations (CI/CPU check)")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--json", default=None, help="write results to this JSON file")
    args = ap.parse_args()
    sizes = [(96, 64)] if args.smoke else [(832, 480), (1280, 720)]
    iters = args.iters or (5 if args.smoke else 60)
    link_iters = args.iters or (3 if args.smoke else 20)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    env = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
           "cores": os.cpu_count(), "torch": torch.__version__}
    results: dict = {"env": env, "sizes": {}}
    print(f"# bench_transports  ({env['cores']} cores, python {env['python']}, torch {env['torch']})")
    print("| size | shm write | shm read | ZMQ raw chunk (per frame) | ZMQ JPEG chunk (per frame) |")
    print("|---|---|---|---|---|")
    for w, h in sizes:
        shm = bench_shm(w, h, iters)
        raw = bench_link(w, h, link_iters, "raw")
        jpg = bench_link(w, h, link_iters, "jpeg")
        results["sizes"][f"{w}x{h}"] = {"shm": shm, "zmq_raw": raw, "zmq_jpeg": jpg}
        print(f"| {w}x{h} | {shm['write']['median_ms']:.3f} ms | {shm['read']['median_ms']:.3f} ms | "
              f"{raw['median_ms']:.1f} ms ({raw['per_frame_ms']:.2f}) | "
              f"{jpg['median_ms']:.1f} ms ({jpg['per_frame_ms']:.2f}) |", flush=True)
    pw, ph = sizes[-1] if not args.smoke else sizes[0]
    pac = bench_pacer(1.5 if args.smoke else 8.0, pw, ph)
    results["pacer"] = pac
    print(f"\npacer on real time ({pw}x{ph} into shm, chunks of 12 at ~24 fps ±15 %): "
          f"fps_out {pac['fps_out']:.2f}, jitter p50 {pac['jitter_p50_ms']:.3f} ms, "
          f"p99 {pac['jitter_p99_ms']:.3f} ms, repeated {pac['repeated']}, dropped {pac['dropped']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
