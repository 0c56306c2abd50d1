"""PatternGenerator: a deterministic Generator with no model, for link and run-loop tests, and a
development engine serving it over the link (a developer tool, not part of the installed package):

    python scripts/pattern_engine.py --listen tcp://127.0.0.1:5555 [--keys KEYS/engine]

prints `READY <endpoint> <engine id>` once it serves (the real `vacelive engine` serves the model).

Output is exact and checkable: each frame is the inverted control video when the request has
one (fitted by nearest-neighbour sampling), else a gradient from the seed; a row of 16x16 grey
"stamp" blocks in the top-left corner carries numbers a test reads back (JPEG-robust):

    block 0: chunk index % 256        block 2: checksum of the sticky refs % 256
    block 1: number of sticky refs    block 3: seed % 256          block 4: input frames % 256

References are sticky exactly as ChunkRequest says (None keeps, [] clears, a list replaces), so
a test can see whether a restarted engine got them back.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import Any

import numpy as np
import torch

from vacelive.bridge.link.server import EngineServer
from vacelive.engine.request import ChunkRequest, ChunkResult

STAMP = 16


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def refs_checksum(refs: list[Any]) -> int:
    return int(sum(int(_np(r).astype(np.int64).sum()) for r in refs) % 256)


def read_stamp(frame: Any, n: int = 5) -> list[int]:
    f = _np(frame)
    return [int(round(float(f[4:12, STAMP * i + 4:STAMP * i + 12, 0].mean()))) for i in range(n)]


class PatternGenerator:
    def __init__(self, width: int = 96, height: int = 64, step_delay: float = 0.0,
                 fail_on_seed: int | None = None) -> None:
        if width < STAMP * 5 or height < STAMP:
            raise ValueError("PatternGenerator needs at least 80x16 pixels for its stamp")
        self.width, self.height = width, height
        self.step_delay = step_delay
        self.fail_on_seed = fail_on_seed
        self.refs: list[Any] = []
        self.chunk_index = 0
        self.requests_seen: list[int] = []  # seeds of the requests actually generated

    @property
    def next_chunk_frames(self) -> int:
        return 9 if self.chunk_index == 0 else 12

    def reset(self) -> None:
        self.chunk_index = 0

    def describe(self) -> dict[str, Any]:
        return {"pipeline": "pattern", "width": self.width, "height": self.height,
                "device": "cpu", "dtype": "uint8", "chunk_index": self.chunk_index}

    def _fit(self, video: Any) -> np.ndarray:
        v = _np(video)
        if v.ndim == 3:
            v = v[None]
        if v.dtype != np.uint8:
            v = (np.clip(v, 0, 1) * 255).astype(np.uint8)
        if v.shape[-1] == 1:
            v = np.repeat(v, 3, axis=-1)
        ys = np.arange(self.height) * v.shape[1] // self.height
        xs = np.arange(self.width) * v.shape[2] // self.width
        return v[:, ys][:, :, xs, :3]

    def step(self, request: ChunkRequest) -> ChunkResult:
        t0 = time.perf_counter()
        if request.reset:
            self.reset()
        if request.seed == self.fail_on_seed:
            raise RuntimeError(f"planted failure for seed {request.seed}")
        if request.refs is not None:
            self.refs = list(request.refs)
        self.requests_seen.append(request.seed)
        n_out = self.next_chunk_frames
        frames = np.empty((n_out, self.height, self.width, 4), np.uint8)
        frames[..., 3] = 255
        n_in = 0
        if request.video is not None:
            rgb = self._fit(request.video)
            n_in = rgb.shape[0]
            idx = np.linspace(0, n_in - 1, n_out).round().astype(int)
            frames[..., :3] = 255 - rgb[idx]
        else:
            ramp = (np.arange(self.width, dtype=np.int64)[None, :] + request.seed
                    + np.arange(self.height, dtype=np.int64)[:, None]) % 256
            frames[..., :3] = ((ramp[None, ..., None] + 8 * np.arange(n_out)[:, None, None, None]) % 256)
        stamp = [self.chunk_index % 256, len(self.refs), refs_checksum(self.refs), request.seed % 256, n_in % 256]
        for i, v in enumerate(stamp):
            frames[:, :STAMP, STAMP * i:STAMP * (i + 1), :3] = v
        if self.step_delay:
            time.sleep(self.step_delay)
        result = ChunkResult(frames=torch.from_numpy(frames), chunk_index=self.chunk_index,
                             timings_ms={"step": (time.perf_counter() - t0) * 1e3})
        self.chunk_index += 1
        return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/pattern_engine.py", description=__doc__)
    p.add_argument("--listen", default="tcp://127.0.0.1:5555")
    p.add_argument("--keys", default=None, help="engine key folder (KEYS/engine) for CURVE auth")
    p.add_argument("--size", default="96x64", help="WIDTHxHEIGHT of the pattern frames")
    p.add_argument("--step-delay", type=float, default=0.0, help="seconds each step takes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w, h = (int(v) for v in args.size.lower().split("x"))
    server = EngineServer(PatternGenerator(w, h, step_delay=args.step_delay), args.listen, keys=args.keys)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    server.start()
    print(f"READY {server.endpoint} {server.engine_id}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
