"""`vacelive td install DIR`: the TouchDesigner component files, the parameter schema and the
TouchOSC / Open Stage Control layouts into a folder, and how to use them (docs/touchdesigner.md)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("install", help="copy the component and layouts into DIR",
                           description="copy the TouchDesigner component files, the parameter schema "
                           "and the control-surface layouts into DIR (created if needed)")
    p.add_argument("dir", nargs="?", default="vacelive-td", metavar="DIR",
                   help="target folder (default ./vacelive-td)")


def run(args: argparse.Namespace) -> int:
    from vacelive.touchdesigner.install import install, usage, vacelive_executable

    try:
        placed = install(args.dir)
    except OSError as exc:
        print(f"vacelive td install: {exc}", file=sys.stderr)
        return 1
    root = placed[0].path.parent
    print(f"vacelive TouchDesigner files in {root.resolve()}:")
    for p in placed:
        print(f"  {p.state:<9} {p.path.relative_to(root).as_posix():<28} {p.what}")
    print()
    print(usage(root, vacelive_executable()), end="")
    return 0
