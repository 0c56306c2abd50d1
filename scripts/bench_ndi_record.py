"""CPU cost of NDI send/receive per frame, end-to-end NDI latency on loopback, and recording
cost per frame (no GPU needed).

    python scripts/bench_ndi_record.py [--seconds 6] [--fps 30] [--json out.json]

NDI: a sender process (NdiSink) sends moving frames at --fps to a receiver in this process
(NdiSource, polled the way FrameHistory polls). Send cost = wall time of NdiSink.send (RGBA ->
the runtime's compressor; UYVY adds our conversion); receive cost = wall time of a read() that
returned a frame (drain + copy + layout conversion); latency = receive time minus the frame's
NDI timestamp (same machine, one clock). Discovery by address (ips=127.0.0.1): no mDNS needed.

Recording: frames through Recording's writer thread (fit + RGB->YUV + encode + mux), per encoder
that opens here; cost = writer time / frames.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = ((832, 480), (1280, 720))

SENDER = r"""
import json, sys, time, numpy as np
from vacelive.bridge.transports.ndi import NdiSink
name, w, h, fourcc, fps, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
sink = NdiSink(f"{name}?fourcc={fourcc}&ips=127.0.0.1&fps={fps:g}")
rng = np.random.default_rng(0)
base = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
costs = []
t_end = time.monotonic() + seconds
due = time.monotonic()
i = 0
while time.monotonic() < t_end:
    frame = np.roll(base, i * 4, axis=1)  # moving content: the compressor has work every frame
    t0 = time.perf_counter()
    sink.send(frame)
    costs.append(time.perf_counter() - t0)
    i += 1
    due += 1.0 / fps
    time.sleep(max(0.0, due - time.monotonic()))
sink.close()
c = np.asarray(costs[int(fps * 3):]) * 1e3  # the first 3 s: the receiver connects
print(json.dumps({"frames": i, "send_ms_mean": float(c.mean()), "send_ms_p50": float(np.median(c)),
                  "send_ms_p99": float(np.percentile(c, 99))}))
"""


def bench_ndi(w: int, h: int, fourcc: str, fps: float, seconds: float) -> dict:
    from vacelive.bridge.transports.ndi import NdiSource

    name = f"vl-bench-{os.getpid()}-{w}-{fourcc}"
    src = NdiSource(f"{name}?ips=127.0.0.1", timeout_ms=0)  # cost of a read, not of waiting
    proc = subprocess.Popen([sys.executable, "-c", SENDER, name, str(w), str(h), fourcc, str(fps),
                             str(seconds + 3)], stdout=subprocess.PIPE, text=True)
    costs, latencies = [], []
    first = None
    t_end = time.monotonic() + seconds + 8
    while time.monotonic() < t_end and proc.poll() is None:
        t0 = time.perf_counter()
        frame = src.read()
        dt = time.perf_counter() - t0
        if frame is not None:
            first = first or time.monotonic()
            if time.monotonic() - first > 1.0:  # past the connection's first second
                costs.append(dt)
                latencies.append(src.latency._values[-1])
        else:
            time.sleep(0.002)
    sender = json.loads(proc.communicate(timeout=30)[0].strip().splitlines()[-1])
    src.close()
    c = np.asarray(costs) * 1e3
    lat = np.asarray(latencies)
    return {"size": f"{w}x{h}", "fourcc": fourcc, **sender, "received": len(costs),
            "recv_ms_mean": float(c.mean()) if c.size else None,
            "recv_ms_p50": float(np.median(c)) if c.size else None,
            "latency_ms_p50": float(np.median(lat)) if lat.size else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "skipped": src.skipped}


def bench_record(w: int, h: int, codec: str, frames: int) -> dict:
    from vacelive.bridge.record import Recording

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    clip = [np.roll(base, i * 4, axis=1) for i in range(frames)]
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recording(Path(tmp) / "bench.mp4", 30.0, codec, None, queue_frames=frames + 1)
        t0 = time.perf_counter()
        for f in clip:
            rec.offer(f)  # what the pacer thread pays
        offer_ms = (time.perf_counter() - t0) * 1e3 / frames
        rec.finish()
        rec.join()
        total = time.perf_counter() - t0
        size = (Path(tmp) / "bench.mp4").stat().st_size
    return {"size": f"{w}x{h}", "codec": codec, "frames": rec.written, "dropped": rec.dropped,
            "encode_ms_per_frame": total * 1e3 / frames, "offer_ms_per_frame": offer_ms,
            "realtime_fps": frames / total, "mbit_per_s_at_30fps": size * 8 / (frames / 30) / 1e6}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--record-frames", type=int, default=90)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from vacelive.bridge.record import ENCODERS, encoder_opens

    out = {"machine": machine(), "ndi": [], "record": []}
    for w, h in SIZES:
        for fourcc in ("RGBA", "UYVY"):
            r = bench_ndi(w, h, fourcc, args.fps, args.seconds)
            out["ndi"].append(r)
            print(json.dumps(r), flush=True)
    for w, h in SIZES:
        for codec in [c for c in ENCODERS if encoder_opens(c)]:
            r = bench_record(w, h, codec, args.record_frames)
            out["record"].append(r)
            print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
