#!/usr/bin/env python
"""Operator's OSC test sender: send one message to vacelive and print what comes back.

    python scripts/osc_send.py /vace/prompt "a forest at dawn"
    python scripts/osc_send.py /vace/prompts "a forest" 1.0 "neon city" 0.5
    python scripts/osc_send.py --listen 1 /vace/get /vace/steps
    python scripts/osc_send.py --bundle /vace/seed 7 -- /vace/annotator pose
    python scripts/osc_send.py -s /vace/prompt 42          # send 42 as text

Arguments are typed like a human would: 3 → int, 0.5 → float, true/false → T/F, anything else
(or everything, with -s) → string. Replies (echoes, /vace/error, query answers) arrive on the
sending socket and are printed for --listen seconds (default 0.3).
"""
from __future__ import annotations

import argparse
import socket
import sys
import time

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket


def typed(text: str, as_string: bool) -> object:
    if as_string:
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def build_message(address: str, args: list[str], as_string: bool) -> OscMessage:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(typed(a, as_string))
    return b.build()


def split_messages(items: list[str]) -> list[list[str]]:
    groups, cur = [], []
    for item in items:
        if item == "--":
            groups.append(cur)
            cur = []
        else:
            cur.append(item)
    groups.append(cur)
    return [g for g in groups if g]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7700)
    ap.add_argument("--listen", type=float, default=0.3, help="seconds to print replies")
    ap.add_argument("-s", "--strings", action="store_true", help="send every arg as a string")
    ap.add_argument("--bundle", action="store_true",
                    help="send several messages separated by -- as one bundle")
    ap.add_argument("message", nargs=argparse.REMAINDER, help="address [args...] [-- address ...]")
    args = ap.parse_args(argv)
    groups = split_messages(args.message)
    if not groups or not all(g[0].startswith("/") for g in groups):
        ap.error("give an OSC address starting with '/' followed by its arguments")
    msgs = [build_message(g[0], g[1:], args.strings) for g in groups]
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if args.bundle or len(msgs) > 1:
        b = OscBundleBuilder(IMMEDIATELY)
        for m in msgs:
            b.add_content(m)
        sock.sendto(b.build().dgram, (args.host, args.port))
    else:
        sock.sendto(msgs[0].dgram, (args.host, args.port))
    deadline = time.monotonic() + args.listen
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65535)
        except (socket.timeout, ConnectionResetError):
            break
        try:
            for timed in OscPacket(data).messages:
                m = timed.message
                print(m.address, *[repr(p) for p in m.params])
        except Exception as exc:
            print(f"(unparseable reply: {exc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
