"""`vacelive doctor`: one report of what this machine can run (GPU, driver, torch, attention
kernels, FP8, weights, ports, texture transports) and what to do about each problem. Exit code 1
only for real problems. Checks: bridge/doctor.py; docs/running.md."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", metavar="DIR",
                        help="models folder (default: $VACELIVE_MODELS or ~/.vacelive/models)")
    parser.add_argument("--pipeline", help="check this pipeline's weights (missing files are then a "
                        "problem); default: report every pipeline")
    parser.add_argument("--codec", choices=("wan", "tae", "lighttae"), default="wan",
                        help="VAE the run will use (changes the files needed; default wan)")
    parser.add_argument("--text-encoder", choices=("bf16", "fp8"), default="bf16",
                        help="umT5 checkpoint the run will use (default bf16)")
    parser.add_argument("--osc-host", default="127.0.0.1", help="OSC bind address to test (default 127.0.0.1)")
    parser.add_argument("--osc-port", type=int, default=7700, help="OSC UDP port to test (default 7700)")
    parser.add_argument("--oscquery-port", type=int, default=7701, help="OSCQuery TCP port (default 7701)")
    parser.add_argument("--link-port", type=int, default=5555,
                        help="engine link TCP port (`vacelive engine --listen`; default 5555)")


def run(args: argparse.Namespace) -> int:
    from vacelive.bridge import doctor

    opts = doctor.Options(models=args.models, pipeline=args.pipeline, codec=args.codec,
                          text_encoder=args.text_encoder, osc_host=args.osc_host, osc_port=args.osc_port,
                          oscquery_port=args.oscquery_port, link_port=args.link_port)
    checks = doctor.run_checks(opts)
    print(doctor.format_report(checks, doctor.header()))
    return doctor.exit_code(checks)
