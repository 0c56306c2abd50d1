"""Development engine: `python -m bridge.link --listen tcp://127.0.0.1:5555 [--keys KEYS/engine]`
serves the deterministic PatternGenerator over the link (tests and link benchmarks use it; the real
`vacelive engine` command serves the model)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from .server import EngineServer
from .testgen import PatternGenerator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.link", description=__doc__)
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
