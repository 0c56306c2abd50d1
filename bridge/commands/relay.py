"""`vacelive relay`: the run loop beside TouchDesigner, with the model on a remote `vacelive engine`.

Transports, OSC and files (references, anchors) stay on this machine; chunk requests and frames
travel over the ZMQ link. If the engine goes away the output holds its last frame and the relay
reconnects by itself, re-sending parameters and references. See docs/running.md.
"""
from __future__ import annotations

import argparse

from vacelive.bridge import config
from vacelive.bridge.commands.serve import run_session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, "link", "io", "osc", "run")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective settings as a TOML config file and exit")


def run(args: argparse.Namespace) -> int:
    return run_session(args, "relay")
