"""`vacelive` command line. Each subcommand lives in its own module under bridge/commands and is
imported only when used, so `vacelive --help` stays instant and one broken optional dependency
never takes the other commands down.

A command module provides `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help). Keep in the order a new user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("vacelive.bridge.commands.demo", "the whole live loop on CPU in under a minute: no GPU, no weights"),
    "serve": ("vacelive.bridge.commands.serve", "run the engine with textures in/out and OSC control (one box)"),
    "weights": ("vacelive.bridge.commands.weights", "list, check and download the weight files of a pipeline"),
    "keys": ("vacelive.bridge.commands.keys", "create CURVE keys for the remote engine link"),
    "engine": ("vacelive.bridge.commands.engine", "serve the model on a GPU box to a remote relay (ZMQ)"),
    "relay": ("vacelive.bridge.commands.relay", "textures and OSC beside TouchDesigner, model on a remote engine"),
    "td": ("vacelive.bridge.commands.td", "copy the TouchDesigner component and OSC control-surface layouts into a folder"),
    "doctor": ("vacelive.bridge.commands.doctor", "check GPU, torch, attention kernels, weights, ports and transports"),
}

# top-level modules of the `engine` extra: a relay-only install lacks them
ENGINE_EXTRA = ("torch", "safetensors", "peft", "transformers", "sentencepiece",
                "huggingface_hub")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vacelive",
        description="Headless real-time causal Wan2.1 + VACE video engine for live performance.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # keep the other commands usable
            p.set_defaults(_import_error=f"`vacelive {name}` is unavailable: {exc}")
            continue
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_import_error", None):
        print(args._import_error, file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ENGINE_EXTRA:
            raise
        print(f"vacelive {args.command}: needs {exc.name}, which the engine extra installs (this "
              "is a relay-only install): install torch (README, Quick start), then "
              "pip install -e '.[engine]' in the vacelive checkout", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
