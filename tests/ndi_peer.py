"""An NDI sender in its own process for tests/test_ndi.py, driven over stdin, one command a line:

    send W H FOURCC R G B    keep sending W x H frames of colour (R,G,B) in FOURCC (RGBA|BGRA|UYVY)
                             through an NdiSink, each with its index in the top bands, until the
                             next command
    where                    answer with the index of the next frame to be sent
    quit

It answers "ok <command>" on stdout once a command has taken effect ("ok where N" for where).
"""
from __future__ import annotations

import sys
import threading

import numpy as np

from vacelive.bridge.transports.ndi import NdiSink

BANDS = 12  # frame index bits, written as black/white vertical bands over the top half


def make_frame(w: int, h: int, rgb: tuple[int, int, int], index: int) -> np.ndarray:
    frame = np.empty((h, w, 4), np.uint8)
    frame[..., :3] = rgb
    frame[..., 3] = 255
    band = w // BANDS
    for bit in range(BANDS):
        frame[: h // 2, bit * band:(bit + 1) * band, :3] = 255 if index >> bit & 1 else 0
    return frame


def read_index(frame: np.ndarray) -> int:
    h, w = frame.shape[:2]
    band = w // BANDS
    top = frame[: h // 4, :, :3].astype(np.int32).mean(axis=(0, 2))
    return sum(1 << bit for bit in range(BANDS)
               if top[bit * band + band // 4: (bit + 1) * band - band // 4].mean() > 127)


def main() -> None:
    name = sys.argv[1]
    sinks: dict[str, NdiSink] = {}
    state = {"frame": None}
    stop = threading.Event()
    lock = threading.Lock()
    index = 0

    def pump() -> None:
        nonlocal index
        while not stop.wait(1 / 60):
            with lock:
                job = state["frame"]
                if job is not None:
                    sink, w, h, rgb = job
                    sink.send(make_frame(w, h, rgb, index))
                    index += 1

    def sink_for(fourcc: str) -> NdiSink:
        if fourcc not in sinks:
            for other in sinks.values():  # one sender of this name at a time
                other.close()
            sinks.clear()
            sinks[fourcc] = NdiSink(f"{name}?fourcc={fourcc}&ips=127.0.0.1")
        return sinks[fourcc]

    threading.Thread(target=pump, daemon=True).start()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "send":
            w, h, fourcc, r, g, b = int(cmd[1]), int(cmd[2]), cmd[3], *map(int, cmd[4:7])
            with lock:
                state["frame"] = (sink_for(fourcc), w, h, (r, g, b))
        elif cmd[0] == "where":
            with lock:
                line = f"where {index}"
        elif cmd[0] == "quit":
            break
        print("ok", line.strip(), flush=True)
    stop.set()
    for sink in sinks.values():
        sink.close()


if __name__ == "__main__":
    main()
