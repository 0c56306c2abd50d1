"""`vacelive serve`: the engine and the live I/O in one process (the GPU box beside TouchDesigner).

Textures in (control, mask, reference) → parameter snapshot per chunk → StreamGenerator → paced
texture out, steered over OSC. See docs/running.md.
"""
from __future__ import annotations

import argparse
import logging
import sys

from vacelive.bridge import config
from vacelive.bridge.config import ConfigError

log = logging.getLogger("vacelive.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, "model", "io", "osc", "run")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective settings as a TOML config file and exit")


def run(args: argparse.Namespace) -> int:
    return run_session(args, "serve")


def run_session(args: argparse.Namespace, command: str) -> int:
    """Shared by serve and relay: resolve settings, build the generator, run until a signal."""
    from vacelive.bridge.run.session import Session, SessionOptions

    try:
        cfg = config.resolve(args)
        if getattr(args, "print_config", False):
            print(config.to_toml(config.effective_settings(cfg), cfg.params), end="")
            return 0
        options = SessionOptions.from_config(cfg)
        if command == "relay":
            from vacelive.bridge.run.generators import build_remote_generator

            generator = build_remote_generator(cfg)
        else:
            from vacelive.bridge.run.generators import build_local_generator, resolve_dtype
            from vacelive.bridge.run.parallel import run_torchrun_worker

            code = run_torchrun_worker(cfg, resolve_dtype(cfg.dtype, cfg.device))
            if code is not None:  # a torchrun rank >= 1 serves its DiT blocks, not the bridge
                return code
            generator = build_local_generator(cfg)
            options.load_time.update(pipeline=cfg.pipeline, codec=cfg.codec,
                                     dtype=resolve_dtype(cfg.dtype, cfg.device), models_dir=cfg.models or "")
        session = Session(generator, options)
        session.start()
    except ConfigError as exc:
        print(f"vacelive {command}: {exc}", file=sys.stderr)
        return 2
    print(f"vacelive {command} running: {session.describe_io()}. Ctrl+C to stop.", flush=True)
    return session.run_until_signal()
