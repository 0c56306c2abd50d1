#!/usr/bin/env python
"""Pacer jitter while the generator really runs: the run loop (RunLoop) with a StreamGenerator,
a control texture arriving over shared memory at 30 fps, and the paced output going to a
shared-memory sink, timed at the sink.

    python scripts/bench_pacer_live.py                       # CUDA, random full-size 1.3B, 832x480
    python scripts/bench_pacer_live.py --model real --models ~/.vacelive/models   # real weights
    python scripts/bench_pacer_live.py --smoke               # CPU, tiny random model, 256x160
    python scripts/bench_pacer_live.py --smoke --json pacer.json

Each case runs for --seconds after a warm-up (the first chunks: allocation, compile, cache fill)
and reports, from the sink's own timestamps:
  * interval p50/p99/max: time between two frames reaching the sink;
  * jitter p50/p99: |interval - intended interval| (1/fps in fixed mode; in follow mode the median
    interval of the run, as the rate itself follows the generator);
  * stalls: intervals longer than 1.5x the intended one;
  * held / dropped: pacer underruns (last frame re-sent) and overruns (oldest dropped);
plus the pacer's own jitter (|actual - intended| of its ticks), the generation rate and the chunk
latency. Where the generator lives on the GPU the output frames are CUDA tensors and the shm sink
pays the device-to-host copy on the pacer thread (pinned staging), as `vacelive serve` does on Linux.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from vacelive.bridge.run.loop import RunLoop  # noqa: E402
from vacelive.bridge.store import ParamStore  # noqa: E402
from vacelive.bridge.transports import FrameHistory, ShmFrameSink, ShmFrameSource  # noqa: E402


class TimedSink:
    """The output as a receiver sees it: a real sink, plus the arrival time of every frame."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.times: list[float] = []

    def send(self, frame) -> None:
        self.sink.send(frame)
        self.times.append(time.perf_counter())


class ControlFeed:
    """A sender writing a moving pattern into shm at `fps` (like TouchDesigner's TOP)."""

    def __init__(self, name: str, w: int, h: int, fps: float = 30.0) -> None:
        self.sink = ShmFrameSink(name)
        self.w, self.h, self.fps = w, h, fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        frame = np.zeros((self.h, self.w, 4), np.uint8)
        frame[..., 3] = 255
        i = 0
        nxt = time.perf_counter()
        while not self._stop.is_set():
            frame[..., 0] = i % 256
            frame[:, (i * 4) % self.w, :3] = 255
            self.sink.send(frame)
            i += 1
            nxt += 1.0 / self.fps
            self._stop.wait(max(0.0, nxt - time.perf_counter()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sink.close()


def build(args):
    from vacelive.engine.generator import StreamGenerator

    from vacelive.bridge.run.generators import resolve_dtype, vace_available

    dtype = getattr(torch, resolve_dtype(args.dtype, args.device))
    if args.model == "real":
        return StreamGenerator.from_recipe(args.pipeline, args.models, width=args.width,
                                           height=args.height, codec=args.codec, device=args.device,
                                           dtype=dtype, vace=vace_available())
    return StreamGenerator.random(args.model, width=args.width, height=args.height, codec=args.codec,
                                  device=args.device, dtype=dtype, vace=vace_available(),
                                  recipe=args.pipeline)


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run_case(generator, fps: float, args, tag: str) -> dict:
    ctl, out = f"bp{os.getpid() % 10000}{tag}c", f"bp{os.getpid() % 10000}{tag}o"
    feed = ControlFeed(ctl, args.width * 3 // 2, args.height * 3 // 2) if args.control else None
    history = FrameHistory(ShmFrameSource(ctl), depth=24) if args.control else None
    sink = TimedSink(ShmFrameSink(out))
    store = ParamStore(initial={"output_fps": fps, "prompt": "a bench of light", "steps": args.steps,
                                "video_enabled": bool(args.control)})
    records = []
    loop = RunLoop(generator, store, sink, control=history)
    loop.add_observer(records.append)
    loop.start()
    try:
        deadline = time.monotonic() + args.warmup_timeout
        while len([r for r in records if r.error is None]) < args.warmup_chunks:
            if time.monotonic() > deadline:
                raise TimeoutError("warm-up chunks did not finish")
            time.sleep(0.01)
        t0 = time.perf_counter()
        chunks0 = len(records)
        stats0 = loop.pacer.stats
        time.sleep(args.seconds)
        t1 = time.perf_counter()
        stats1 = loop.pacer.stats
        run = [r for r in records[chunks0:] if r.error is None]
    finally:
        loop.stop()
        sink.sink.close()
        if history:
            history.close(close_source=True)
        if feed:
            feed.close()
    times = np.array([t for t in sink.times if t0 <= t <= t1])
    iv = np.diff(times)
    intended = 1.0 / fps if fps else (float(np.median(iv)) if iv.size else float("nan"))
    jit = np.abs(iv - intended)
    frames = sum(len(r.result.frames) for r in run)
    gen_s = sum(r.latency_ms for r in run) / 1e3
    return {
        "mode": f"fixed {fps:g} fps" if fps else "follow generation",
        "frames_out": int(times.size),
        "fps_out": (times.size - 1) / (times[-1] - times[0]) if times.size > 1 else 0.0,
        "intended_interval_ms": intended * 1e3,
        "interval_ms": {"p50": pct(iv, 50) * 1e3, "p99": pct(iv, 99) * 1e3,
                        "max": float(iv.max() * 1e3) if iv.size else float("nan")},
        "jitter_ms": {"p50": pct(jit, 50) * 1e3, "p99": pct(jit, 99) * 1e3},
        "stalls": int((iv > 1.5 * intended).sum()),
        "held": stats1.repeated - stats0.repeated,
        "dropped": stats1.dropped - stats0.dropped,
        "pacer_jitter_ms": {"p50": stats1.jitter_p50_ms, "p99": stats1.jitter_p99_ms},
        "chunks": len(run),
        "generation_fps": frames / gen_s if gen_s else 0.0,
        "chunk_latency_ms": {"p50": pct([r.latency_ms for r in run], 50),
                             "max": max((r.latency_ms for r in run), default=float("nan"))},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny random model, 256x160, short")
    p.add_argument("--model", choices=("tiny", "full", "real"), default="full",
                   help="random tiny / random full-size 1.3B / real weights from --models")
    p.add_argument("--pipeline", default="longlive")
    p.add_argument("--models", default=None, help="models folder for --model real")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None)
    p.add_argument("--codec", choices=("wan", "tae", "lighttae"), default="wan")
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--fps", default="0,24", help="comma list of output fps cases (0 = follow)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per case")
    p.add_argument("--warmup-chunks", type=int, default=3)
    p.add_argument("--warmup-timeout", type=float, default=600.0)
    p.add_argument("--no-control", dest="control", action="store_false",
                   help="text only (no control texture)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    if args.smoke:
        args.model, args.device, args.codec = "tiny", "cpu", "tae"
        args.width, args.height = 256, 160
        args.seconds = min(args.seconds, 6.0)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke for the CPU path", file=sys.stderr)
        return 2
    generator = build(args)
    info = {
        "host": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "model": args.model, "pipeline": args.pipeline, "codec": args.codec,
        "size": f"{args.width}x{args.height}", "steps": args.steps, "control": args.control,
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    results = {"info": info, "cases": []}
    print(json.dumps(info))
    for i, fps in enumerate(float(x) for x in args.fps.split(",")):
        case = run_case(generator, fps, args, str(i))
        results["cases"].append(case)
        print(f"{case['mode']:>18}: out {case['fps_out']:6.2f} fps | interval p50 "
              f"{case['interval_ms']['p50']:6.2f} p99 {case['interval_ms']['p99']:6.2f} max "
              f"{case['interval_ms']['max']:6.2f} ms | jitter p50 {case['jitter_ms']['p50']:5.2f} "
              f"p99 {case['jitter_ms']['p99']:6.2f} ms | stalls {case['stalls']} held {case['held']} "
              f"dropped {case['dropped']} | pacer jitter p50 {case['pacer_jitter_ms']['p50']:.2f} "
              f"p99 {case['pacer_jitter_ms']['p99']:.2f} ms | gen {case['generation_fps']:.1f} fps, "
              f"chunk p50 {case['chunk_latency_ms']['p50']:.0f} ms", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
