"""NDI through the real cyndilib runtime: a sender in another process (tests/ndi_peer.py) and an
NdiSource here exchange frames while the size and pixel layout change, and the sender dies and
comes back.

Discovery: NDI finds senders by mDNS, which on Linux goes through avahi-daemon; CI's sandbox runs
none. So both sides ask for discovery by address (`ips=127.0.0.1`, NDI's unicast "extra IPs"),
the documented way to reach machines mDNS cannot see. The frames themselves take NDI's normal
TCP/UDP path, compressed by the runtime (SpeedHQ): pixel checks allow its error.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vacelive.bridge.transports import open_sink, open_source
from vacelive.bridge.transports.ndi import name_matches, parse_spec
from vacelive.bridge.transports.pixels import rgba_to_uyvy, uyvy_to_rgba

cyndilib = pytest.importorskip("cyndilib")

PEER = Path(__file__).with_name("ndi_peer.py")
WAIT = 30.0  # bound for a frame to show up (a failure, never a timing assertion)


def test_spec_options():
    s = parse_spec("stage-out?groups=a,b&ips=10.0.0.5&fourcc=uyvy&fps=25&discovery=10.0.0.2")
    assert (s.name, s.groups, s.ips, s.fourcc, s.fps, s.discovery) == \
        ("stage-out", "a,b", "10.0.0.5", "UYVY", 25.0, "10.0.0.2")
    with pytest.raises(ValueError, match="unknown option"):
        parse_spec("x?colour=red")
    with pytest.raises(ValueError, match="fourcc"):
        parse_spec("x?fourcc=NV12")
    with pytest.raises(ValueError, match="needs a name"):
        open_sink("ndi:")


def test_runtime_config_file(tmp_path, monkeypatch):
    import json

    from vacelive.bridge.transports.ndi import _write_config

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ndi").mkdir()
    (tmp_path / ".ndi" / "ndi-config.v1.json").write_text('{"ndi": {"machinename": "stage"}}')
    folder = _write_config("10.0.0.5", "vj", "10.0.0.2:5959")
    data = json.loads((tmp_path.__class__(folder) / "ndi-config.v1.json").read_text())
    assert data == {"ndi": {"machinename": "stage", "networks": {"ips": "10.0.0.5",
                                                                  "discovery": "10.0.0.2:5959"},
                            "groups": {"recv": "vj"}}}


def test_name_matching():
    assert name_matches("cam", "STUDIO (cam)")
    assert name_matches("STUDIO (cam)", "STUDIO (cam)")
    assert not name_matches("OTHER (cam)", "STUDIO (cam)")
    assert not name_matches("cam", "STUDIO (cam2)")
    assert name_matches("", "STUDIO (cam)")


def test_uyvy_round_trip_is_bt709_limited_range():
    rgb = np.array([[[255, 255, 255, 255], [255, 255, 255, 255], [0, 0, 0, 255], [0, 0, 0, 255]]], np.uint8)
    packed = rgba_to_uyvy(rgb)
    assert packed[0, :, 1].tolist() == [235, 235, 16, 16]  # Y: limited range white / black
    assert packed[0, :, 0].tolist() == [128, 128, 128, 128]  # no chroma in greys
    red = np.zeros((1, 2, 4), np.uint8)
    red[..., 0] = 255
    y = rgba_to_uyvy(red)[0, 0, 1]
    assert y == round(16 + 219 * 0.2126)  # BT.709 Kr
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    frame[:, 1::2] = frame[:, 0::2]  # pairs share chroma: then the round trip is exact to 1 LSB
    back = uyvy_to_rgba(rgba_to_uyvy(frame))
    assert np.abs(back[..., :3].astype(int) - frame[..., :3]).max() <= 2


def test_fixed_point_uyvy_matches_the_float_formula():
    """The sender's integer conversion against the BT.709 formulas in floating point."""
    from vacelive.bridge.transports.pixels import KB, KG, KR

    frame = np.random.default_rng(1).integers(0, 256, (16, 32, 4), dtype=np.uint8)
    rgb = frame[..., :3].astype(np.float64) / 255
    y = KR * rgb[..., 0] + KG * rgb[..., 1] + KB * rgb[..., 2]
    cb = (rgb[..., 2] - y) / (2 * (1 - KB))
    cr = (rgb[..., 0] - y) / (2 * (1 - KR))
    want = np.empty((16, 32, 2))
    want[..., 1] = 16 + 219 * y
    want[:, 0::2, 0] = 128 + 224 * (cb[:, 0::2] + cb[:, 1::2]) / 2
    want[:, 1::2, 0] = 128 + 224 * (cr[:, 0::2] + cr[:, 1::2]) / 2
    assert np.abs(rgba_to_uyvy(frame) - want).max() <= 0.5 + 1e-6 + 0.5  # rounding, 1 LSB


class Peer:
    def __init__(self, name: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, str(PEER), name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def cmd(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer.startswith(f"ok {line}"), answer
        return answer

    def quit(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        assert self.proc.wait(20) == 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def wait_frame(src, want=lambda f: True):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        frame = src.read()
        if frame is not None and want(frame):
            return frame
    raise AssertionError(f"no matching NDI frame within {WAIT:.0f} s (stats {src.stats})")


def colour_of(frame):
    h = frame.shape[0]
    return frame[3 * h // 4:, :, :3].reshape(-1, 3).mean(axis=0)


def near(rgb, want, tol=24):
    return bool(np.all(np.abs(np.asarray(rgb) - np.asarray(want)) <= tol))


def test_two_processes_sizes_formats_and_a_sender_that_returns():
    from ndi_peer import read_index

    name = f"vl-test-{os.getpid()}"
    src = open_source(f"ndi:{name}?ips=127.0.0.1")
    peer = Peer(name)
    try:
        phases = [  # size and layout change mid-stream, one sender name throughout
            (320, 240, "RGBA", (220, 30, 30)),
            (480, 272, "RGBA", (30, 220, 30)),  # same sender, new size: it re-opens
            (640, 360, "UYVY", (30, 30, 220)),  # the receiver gets the SDK's RGB conversion
            (256, 128, "BGRA", (220, 200, 30)),  # sent as BGRA: red must stay red
        ]
        for w, h, fourcc, rgb in phases:
            peer.cmd(f"send {w} {h} {fourcc} {rgb[0]} {rgb[1]} {rgb[2]}")
            frame = wait_frame(src, lambda f: f.shape[:2] == (h, w) and near(colour_of(f), rgb))
            assert frame.dtype == np.uint8 and frame.shape == (h, w, 4)
            assert (frame[..., 3] == 255).all()
            assert src.size == (w, h)
        assert src.source_name.endswith(f"({name})")

        # newest frame only: while nobody reads, the sender goes on; the next read returns a frame
        # from the end of that span, not the first one queued after the last read
        peer.cmd("send 320 240 RGBA 200 200 200")
        for _ in range(5):  # a steady flow first (a re-created sender takes NDI seconds to rejoin)
            wait_frame(src, lambda f: f.shape[:2] == (240, 320))
        paused_at = int(peer.cmd("where").split()[-1])
        while int(peer.cmd("where").split()[-1]) < paused_at + 40:
            time.sleep(0.05)  # let 40 frames go by unread
        index = read_index(wait_frame(src))
        # (what was queued meanwhile is dropped by the runtime's own short queue or by read()'s
        # drain, counted in stats["skipped"]; either way no old frame comes out)
        assert index >= paused_at + 30, f"read frame {index}: an old queued frame, not the newest"
        later = read_index(wait_frame(src))
        assert later > index
        assert src.stats["latency_ms_p50"] > 0

        # the sender dies ...
        peer.kill()
        for _ in range(50):
            assert src.read() is None or True  # never raises while the sender is gone
        # ... and comes back under the same name
        peer = Peer(name)
        peer.cmd("send 320 240 RGBA 10 240 240")
        frame = wait_frame(src, lambda f: near(colour_of(f), (10, 240, 240)))
        assert frame.shape == (240, 320, 4)
        peer.quit()
    finally:
        peer.proc.kill()
        src.close()
