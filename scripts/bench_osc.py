#!/usr/bin/env python
"""OSC control-path benchmark on the CPU over real UDP (127.0.0.1).

    python scripts/bench_osc.py            # 5 s per phase
    python scripts/bench_osc.py --smoke    # 0.5 s per phase (proves it runs end to end)

The server (OscServer + ParamStore, echoes on) runs in this process like in `vacelive serve`;
the sender is a separate process, like TouchDesigner. Phases:

1. sustained: the sender blasts `/vace/seed i` as fast as it can; reported are the datagrams the
   server handled per second and how many the kernel dropped (latest-value-wins makes drops
   harmless: the last value still lands).
2. paced at --rate msg/s (default 1,000): a run-loop thread calls `store.snapshot()` every
   --poll-ms (default 1 ms); for each value first seen in a snapshot, delay = snapshot time -
   send time (CLOCK_MONOTONIC, shared by both processes on Linux/macOS). A second reader at
   chunk rate (every --chunk-ms, default 100 ms) reports the age of the value a chunk would get
   and how many messages it lags behind the newest one sent: no backlog means ~1 ms and 0-1.
No GPU is involved: OSC never touches it.
"""
from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing as mp
import platform
import socket
import statistics
import threading
import time

from pythonosc.osc_message_builder import OscMessageBuilder


def _dgram(i: int) -> bytes:
    b = OscMessageBuilder("/vace/seed")
    b.add_arg(i)
    return b.build().dgram


def _blast(target, seconds: float, conn) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    packets = [_dgram(i) for i in range(1, 4097)]
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(256):
            try:
                sock.sendto(packets[sent % 4096], target)
            except OSError:  # ENOBUFS under overload: count as not sent
                continue
            sent += 1
    conn.send(sent)


def _paced(target, rate: float, seconds: float, conn) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = int(rate * seconds)
    packets = [_dgram(i) for i in range(1, n + 1)]
    sent_at = [0] * n
    period = 1.0 / rate
    start = time.monotonic() + 0.05
    for k in range(n):
        due = start + k * period
        while (left := due - time.monotonic()) > 0:
            time.sleep(left if left > 0.0005 else 0)
        sent_at[k] = time.monotonic_ns()
        sock.sendto(packets[k], target)
    conn.send(sent_at)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="paced messages per second")
    ap.add_argument("--poll-ms", type=float, default=1.0, help="fast snapshot period")
    ap.add_argument("--chunk-ms", type=float, default=100.0, help="chunk-rate snapshot period")
    ap.add_argument("--smoke", action="store_true", help="0.5 s phases")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    seconds = 0.5 if args.smoke else args.seconds

    from vacelive.bridge.osc import OscConfig, OscServer
    from vacelive.bridge.store import ParamStore

    store = ParamStore()
    server = OscServer(store, None, OscConfig(port=0, oscquery_port=None)).start()
    ctx = mp.get_context("spawn")
    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {mp.cpu_count()} cores",
        "python": platform.python_version(),
    }
    try:
        # 1. sustained
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_blast, args=(server.address, seconds, child))
        r0 = server.received
        proc.start()
        sent = parent.recv()
        t_stop = time.monotonic()
        proc.join()
        while True:  # let the server finish what the kernel buffered
            before = server.received
            time.sleep(0.2)
            if server.received == before:
                break
        handled = server.received - r0
        drain = max(0.0, time.monotonic() - t_stop - 0.2)
        results["sustained"] = {
            "sent": sent, "handled": handled, "dropped_by_kernel": sent - handled,
            "sent_per_s": round(sent / seconds), "handled_per_s": round(handled / (seconds + drain)),
            "last_value_landed": store.get("seed") == (sent - 1) % 4096 + 1,
        }

        # 2. paced
        store.snapshot()
        fast: list[tuple[int, int]] = []  # (snapshot ns, seed)
        chunky: list[tuple[int, int]] = []
        stop = threading.Event()

        def reader(period_s: float, out: list) -> None:
            nxt = time.monotonic()
            while not stop.is_set():
                snap = store.snapshot() if out is fast else None
                values = snap.values if snap else store.values()
                out.append((time.monotonic_ns(), values["seed"]))
                nxt += period_s
                time.sleep(max(0.0, nxt - time.monotonic()))

        threads = [threading.Thread(target=reader, args=(args.poll_ms / 1000, fast)),
                   threading.Thread(target=reader, args=(args.chunk_ms / 1000, chunky))]
        parent, child = ctx.Pipe()
        store.set("seed", 0)
        proc = ctx.Process(target=_paced, args=(server.address, args.rate, seconds, child))
        proc.start()
        for t in threads:
            t.start()
        sent_at = parent.recv()
        proc.join()
        time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        delays, seen = [], set()
        for t_ns, seed in fast:
            if seed and seed not in seen:
                seen.add(seed)
                delays.append((t_ns - sent_at[seed - 1]) / 1e6)
        age, behind = [], []  # what a chunk-rate run loop gets
        for t_ns, seed in chunky:
            newest = bisect.bisect_right(sent_at, t_ns)  # values sent before this read
            if seed and newest:
                age.append((t_ns - sent_at[seed - 1]) / 1e6)
                behind.append(newest - seed)
        actual = (len(sent_at) - 1) / ((sent_at[-1] - sent_at[0]) / 1e9)
        results["paced"] = {
            "rate_target": args.rate, "rate_actual": round(actual, 1), "sent": len(sent_at),
            "values_seen": len(delays), "poll_ms": args.poll_ms,
            "delay_ms_p50": round(statistics.median(delays), 3) if delays else None,
            "delay_ms_p99": round(pct(delays, 99), 3), "delay_ms_max": round(max(delays), 3),
            "chunk_ms": args.chunk_ms,
            "chunk_reads": len(age),
            "chunk_value_age_ms_p50": round(statistics.median(age), 3) if age else None,
            "chunk_value_age_ms_max": round(max(age), 3) if age else None,
            "chunk_msgs_behind_p50": statistics.median(behind) if behind else None,
            "chunk_msgs_behind_max": max(behind) if behind else None,
            "final_value_landed": store.get("seed") == len(sent_at),
        }
    finally:
        server.stop()

    s, p = results["sustained"], results["paced"]
    print(f"vacelive OSC benchmark ({results['machine']}, Python {results['python']}, "
          f"{seconds:g} s per phase, echoes on)")
    print(f"sustained: sent {s['sent_per_s']:,}/s, handled {s['handled_per_s']:,} msg/s, "
          f"kernel dropped {s['dropped_by_kernel']:,} of {s['sent']:,}")
    print(f"paced {p['rate_actual']:.0f} msg/s, snapshot every {p['poll_ms']:g} ms: "
          f"datagram→snapshot p50 {p['delay_ms_p50']} ms, p99 {p['delay_ms_p99']} ms, "
          f"max {p['delay_ms_max']} ms ({p['values_seen']} values seen)")
    print(f"chunk-rate reads every {p['chunk_ms']:g} ms ({p['chunk_reads']}): value age p50 "
          f"{p['chunk_value_age_ms_p50']} ms, max {p['chunk_value_age_ms_max']} ms; messages "
          f"behind the newest sent p50 {p['chunk_msgs_behind_p50']}, max "
          f"{p['chunk_msgs_behind_max']}; final value landed: {p['final_value_landed']}")
    print(f"sustained last value landed: {s['last_value_landed']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
