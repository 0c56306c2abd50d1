#!/usr/bin/env python
"""Control-to-output latency, end to end, through the real run loop.

A simulated camera (a FrameSource that makes a new frame of a moving depth video every 1/fps
seconds, on its own clock) feeds the control FrameHistory; the run loop (bridge.run.loop.RunLoop:
parameter snapshot, newest control window, generator.step, pacer) drives a StreamGenerator with
VACE depth control; the sink copies every frame to host memory (what an NDI / shared-memory
sink does). Each control frame is stamped when the history reads it and each output frame when
the sink has taken it (bridge/latency.py); the table gives p50/p99 of output time minus arrival
time per pipeline, resolution and pacing mode (follow = output_fps 0 with the given
pacer_headroom; fixed = output_fps 24), with the output rate and held/dropped frames.

Speed settings: --variant fast (compile + fp8 auto + sdpa auto + hint reuse, TAE) or exact.
Before each measured run the generator runs --warmup chunks (a compiled model compiles its
chunk shapes there), then the stream is reset and the loop measures for --seconds.

    python scripts/bench_latency.py --res 832x480,576x320 --out lat.json
    python scripts/bench_latency.py --smoke      # CPU, tiny model, 64x48
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_stream as bs  # noqa: E402
from vacelive.bridge.run.loop import RunLoop  # noqa: E402
from vacelive.bridge.store import ParamStore  # noqa: E402
from vacelive.bridge.transports.base import FrameHistory, FrameSource  # noqa: E402
from vacelive.engine.factory import make_conditioner  # noqa: E402
from vacelive.engine.generator import StreamGenerator  # noqa: E402


class SimulatedCamera(FrameSource):
    """A camera at `fps`: read() returns a new frame once per 1/fps seconds (monotonic clock)."""

    name = "camera"

    def __init__(self, video: np.ndarray, fps: float = 30.0):
        self.video, self.interval = video, 1.0 / fps
        self._counter = 0
        self._next = time.monotonic()

    @property
    def size(self):
        return (self.video.shape[2], self.video.shape[1])

    @property
    def frame_counter(self) -> int:
        return self._counter

    def read(self):
        now = time.monotonic()
        if now < self._next:
            return None
        if now - self._next > 5 * self.interval:  # the reader stalled: re-anchor
            self._next = now
        self._next += self.interval
        self._counter += 1
        return self.video[self._counter % len(self.video)].copy()


class HostSink:
    """Copies every frame to host memory (an NDI / shared-memory sink's work)."""

    def __init__(self):
        self.frames = 0

    def send(self, frame) -> None:
        if isinstance(frame, torch.Tensor):
            frame = frame.cpu()
        np.asarray(frame).sum(dtype=np.uint64) if self.frames % 64 == 0 else None  # touch the bytes now and then
        self.frames += 1


def measure(gen: StreamGenerator, video: np.ndarray, mode: str, args) -> dict:
    store = ParamStore()
    store.set("prompt", bs.PROMPT)
    store.set("hint_reuse", args.variant == "fast")
    store.set("output_fps", 24.0 if mode == "fixed" else 0.0)
    store.set("pacer_headroom", args.headroom)
    camera = SimulatedCamera(video, args.camera_fps)
    history = FrameHistory(camera, depth=24)
    sink = HostSink()
    gen.reset()
    loop = RunLoop(gen, store, sink, control=history)
    time.sleep(0.5)  # the history fills with a chunk's worth of camera frames
    loop.start()
    t0 = time.monotonic()
    time.sleep(args.seconds)
    loop.stop(timeout=30)
    wall = time.monotonic() - t0
    history.close()
    lat = loop.latency.percentiles()
    values = np.asarray(loop.latency.values_ms() or [0.0])
    ps = loop.pacer.stats
    return {"pacing": mode, "headroom": args.headroom if mode == "follow" else None,
            "latency_p50_ms": round(lat["p50_ms"], 1), "latency_p99_ms": round(lat["p99_ms"], 1),
            "latency_min_ms": round(float(values.min()), 1), "latency_mean_ms": round(float(values.mean()), 1),
            "frames_measured": lat["frames"], "chunks": loop.chunks, "errors": loop.errors,
            "fps_out": round(sink.frames / wall, 1), "chunk_ms": round(loop.last_latency_ms, 1),
            "held": ps.repeated, "dropped": ps.dropped, "jitter_p99_ms": round(ps.jitter_p99_ms, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="832x480,576x320")
    p.add_argument("--pipelines", default="longlive")
    p.add_argument("--variant", choices=("fast", "exact"), default="fast")
    bs.add_stream_args(p)
    p.add_argument("--pacing", default="follow,fixed", help="comma list of follow,fixed")
    p.add_argument("--headroom", type=float, default=3.0, help="pacer_headroom (frames) in follow mode")
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per run")
    p.add_argument("--warmup", type=int, default=5, help="chunks before measuring (compiles)")
    p.add_argument("--camera-fps", type=float, default=30.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--budget", type=float, default=1e9, help="seconds; later runs are skipped")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    compile_options = {}
    if args.smoke:
        resolutions = [(64, 48)]
        args.seconds, args.warmup = min(args.seconds, 3.0), min(args.warmup, 1)
        compile_options = {"backend": "eager"}
    else:
        resolutions = [bs.parse_res(r) for r in args.res.split(",")]
    t_start = time.perf_counter()
    device, dtype, model, text, codec = bs.vace_bench_model(args.smoke, args.device)
    env = {"device": bs.device_name(device),
           "torch": torch.__version__, "variant": args.variant, **bs.stream_kwargs(args), "steps": args.steps, "codec": "tae",
           "camera_fps": args.camera_fps, "seconds": args.seconds, "mode": "depth",
           "config": "tiny (smoke)" if args.smoke else "wan2.1-1.3b + VACE (random weights)"}
    rows: list[dict] = []

    def write(partial: bool) -> None:
        if args.out:
            Path(args.out).write_text(json.dumps({"env": env, "partial": partial, "results": rows}, indent=2))

    fast = args.variant == "fast"
    for pipeline in [v.strip() for v in args.pipelines.split(",") if v.strip()]:
        for w, h in resolutions:
            base = {"pipeline": pipeline, "resolution": f"{w}x{h}", "variant": args.variant}
            if time.perf_counter() - t_start > args.budget:
                rows.append(dict(base, skipped=f"budget {args.budget:.0f} s spent"))
                write(True)
                continue
            try:
                conditioner = make_conditioner(model, codec, width=w, height=h, device=device, dtype=dtype)
                gen = StreamGenerator(model, codec, text, width=w, height=h, conditioner=conditioner,
                                      recipe=pipeline, sdpa="auto" if fast else "default",
                                      **bs.stream_kwargs(args))
                if fast:
                    gen.set_compile(True, **compile_options)
                    gen.set_fp8("auto" if device.type == "cuda" else "off")
                video = bs.depth_video(w, h)
                src = bs.Source("depth", video, args.steps, fast)
                t0 = time.perf_counter()
                for _ in range(args.warmup):
                    gen.step(src.request(gen))
                bs.sync(device)
                base["warmup_s"] = round(time.perf_counter() - t0, 1)
            except Exception as exc:
                rows.append(dict(base, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
                write(True)
                continue
            for mode in [m.strip() for m in args.pacing.split(",") if m.strip()]:
                if time.perf_counter() - t_start > args.budget:
                    rows.append(dict(base, pacing=mode, skipped=f"budget {args.budget:.0f} s spent"))
                    continue
                try:
                    row = dict(base, **measure(gen, video, mode, args))
                except Exception as exc:
                    row = dict(base, pacing=mode, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                rows.append(row)
                print(json.dumps(row), flush=True)
                write(True)
            gen.set_fp8("off")
            gen.set_compile(False)
            del gen
            if device.type == "cuda":
                torch.cuda.empty_cache()
    write(False)
    print(f"\n{env}")
    print(f"{'pipeline':>10} {'res':>8} {'pacing':>6} {'p50 ms':>7} {'p99 ms':>7} {'min':>6} {'fpsOut':>6} {'chunk':>6} "
          f"{'held':>5} {'drop':>5} {'jit99':>6}")
    for r in rows:
        if "latency_p50_ms" in r:
            print(f"{r['pipeline']:>10} {r['resolution']:>8} {r['pacing']:>6} {r['latency_p50_ms']:7.0f} "
                  f"{r['latency_p99_ms']:7.0f} {r['latency_min_ms']:6.0f} {r['fps_out']:6.1f} {r['chunk_ms']:6.0f} "
                  f"{r['held']:5d} {r['dropped']:5d} {r['jitter_p99_ms']:6.1f}")
        else:
            print(f"{r['pipeline']:>10} {r['resolution']:>8} {r.get('pacing', '-'):>6} {r.get('skipped') or r.get('error')}")
    return 0 if any("latency_p50_ms" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
