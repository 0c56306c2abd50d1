"""`vacelive demo`: the whole live loop on a CPU in well under a minute, no GPU, no weight files.

A tiny random-weight model, shared-memory textures in and out, real OSC over UDP (a prompt change,
a context-scale change, a preset morph, a snapshot); writes an MP4, a PNG contact sheet and a
summary into --out. The pictures are abstract (random weights); see README "Running it" for real
output. Details: bridge/run/demo.py.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="vacelive-demo", metavar="DIR",
                        help="folder for the MP4, contact sheet and summary (default ./vacelive-demo)")
    parser.add_argument("--chunks", type=int, default=8,
                        help="chunks to generate, at least 5 (default 8)")
    parser.add_argument("--width", type=int, default=256, help="generation width (multiple of 16)")
    parser.add_argument("--height", type=int, default=160, help="generation height (multiple of 16)")
    parser.add_argument("--codec", choices=("wan", "tae", "lighttae"), default="tae",
                        help="VAE of the tiny model (tae is the fastest on a CPU)")
    parser.add_argument("--fps", type=float, default=24.0,
                        help="output frame rate (0 = follow the generation rate)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="give up after this many seconds (default 120)")


def run(args: argparse.Namespace) -> int:
    from vacelive.bridge.run.demo import run_demo

    try:
        run_demo(args.out, args.chunks, width=args.width, height=args.height, codec=args.codec,
                 fps=args.fps, timeout=args.timeout)
    except (ValueError, TimeoutError, RuntimeError) as exc:
        print(f"vacelive demo: {exc}", file=sys.stderr)
        return 1
    return 0
