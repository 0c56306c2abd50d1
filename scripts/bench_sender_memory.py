"""Memory held after a large control sender stops: a 2560x1600 RGBA sender writes into shared
memory from another process; the run loop steers the tiny random-weight model with it; then the
sender stops and the loop runs on. Reports process RSS and CUDA allocated/reserved memory before,
while sending, and after the stop, with the release on stop (the default) and without it
(`--mode keep-backlog`: the history keeps its last 24 frames, the loop sends n full-size copies of a
still, nothing is handed back), so the difference is the fix.

    python scripts/bench_sender_memory.py --out sender_memory.json           # CUDA if present
    python scripts/bench_sender_memory.py --device cpu --seconds 4 --size 1280x800
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SENDER = """
import sys, time, numpy as np
from vacelive.bridge.transports.shm import ShmFrameSink
w, h, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sink = ShmFrameSink(sys.argv[1])
frame = np.full((h, w, 4), 90, np.uint8)
end = time.monotonic() + seconds
while time.monotonic() < end:
    frame[..., 0] += 1
    sink.send(frame)
    time.sleep(1 / 30)
sink.close()
"""


def rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run(args: argparse.Namespace, keep_backlog: bool) -> dict:
    import torch

    from vacelive.bridge.run import loop as loop_mod
    from vacelive.bridge.run.loop import RunLoop
    from vacelive.bridge.store import ParamStore
    from vacelive.bridge.transports.base import FrameHistory
    from vacelive.bridge.transports.shm import ShmFrameSource
    from vacelive.engine.generator import StreamGenerator

    cuda = args.device.startswith("cuda")

    def memory() -> dict:
        out = {"rss_mb": round(rss_mb(), 1)}
        if cuda:
            torch.cuda.synchronize()
            out["cuda_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
            out["cuda_reserved_mb"] = round(torch.cuda.memory_reserved() / 2**20, 1)
        return out

    w, h = (int(v) for v in args.size.lower().split("x"))
    name = f"bsm{int(time.time() * 1000) % 10**7}"
    generator = StreamGenerator.random("tiny", width=args.width, height=args.height, codec="tae",
                                       device=args.device, vace=True)
    history = FrameHistory(ShmFrameSource(name), depth=24,
                           stale_after=float("inf") if keep_backlog else 1.0)
    if keep_backlog:  # the behaviour before the fix
        history._keep_newest_only = lambda: None
        plain_window = history.window
        history.window = lambda n, still_as_one=False: plain_window(n)
        loop_mod._release_memory = lambda: None
    loop = RunLoop(generator, ParamStore(), lambda frame: None, control=history,
                   pacer_options={"start": False})
    before = memory()
    sender = subprocess.Popen([sys.executable, "-c", SENDER, name, str(w), str(h), str(args.seconds)])
    sending = None
    chunks_sending = 0
    while sender.poll() is None:
        if history.stats["received"]:
            loop.run_once()
            chunks_sending += 1
            sending = memory() if sending is None or chunks_sending == 3 else sending
        else:
            time.sleep(0.01)
    while history.stats["buffered"] > 1 and not keep_backlog and history.releases == 0:
        time.sleep(0.01)
    for _ in range(args.chunks_after):
        loop.run_once()
    after = memory()
    loop.stop()
    history.close(close_source=True)
    return {"keep_backlog": keep_backlog, "before": before, "while_sending": sending,
            "after_stop": after, "chunks_while_sending": chunks_sending,
            "history_frames_after_stop": history.stats["buffered"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    p.add_argument("--size", default="2560x1600", help="sender frame size WIDTHxHEIGHT")
    p.add_argument("--width", type=int, default=256, help="generation width")
    p.add_argument("--height", type=int, default=160, help="generation height")
    p.add_argument("--seconds", type=float, default=6.0, help="how long the sender sends")
    p.add_argument("--chunks-after", type=int, default=4, help="chunks run after the stop")
    p.add_argument("--out", default=None, help="write the JSON here")
    p.add_argument("--mode", choices=("both", "release", "keep-backlog"), default="both",
                   help="both (each in its own process), or only the release on stop (the fix) or "
                   "only the behaviour before it")
    args = p.parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    modes = {"both": [False, True], "release": [False], "keep-backlog": [True]}[args.mode]
    results = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
               "sender": args.size, "generation": f"{args.width}x{args.height}", "runs": []}
    for keep in modes:  # each in its own process: allocator state does not leak between them
        if len(modes) == 1:
            results["runs"].append(run(args, keep))
            continue
        cmd = [sys.executable, __file__, "--device", args.device, "--size", args.size,
               "--width", str(args.width), "--height", str(args.height),
               "--seconds", str(args.seconds), "--chunks-after", str(args.chunks_after)]
        cmd += ["--mode", "keep-backlog" if keep else "release"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results["runs"].append(json.loads(out.strip().splitlines()[-1])["runs"][0])
    text = json.dumps(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
