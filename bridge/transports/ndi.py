"""NDI (any OS) through cyndilib, whose wheel ships the NDI runtime (libndi): a receiver source and
a sender sink, so the GPU box can run apart from TouchDesigner / Resolume / OBS on the network.

Spec: `ndi:NAME[?option=value&...]`

* NAME: the NDI source. A full NDI name "MACHINE (stream)" matches exactly; a bare "stream" matches
  that stream on any machine; an empty name receives the first source found. As a sink, NAME is
  the stream name the sender advertises (receivers see "THIS-MACHINE (NAME)").
* `groups=a,b`: NDI groups (sender: the groups it is announced in; receiver: the groups searched).
* `ips=10.0.0.5,10.0.0.6`: extra machines to query by address (unicast discovery). Use it where
  mDNS does not cross the network (VLANs, some Wi-Fi) or where no mDNS responder runs (a Linux
  box without avahi-daemon: there `ips=127.0.0.1` finds senders on the same machine).
* `discovery=HOST[:PORT]`: an NDI Discovery Server to use instead of mDNS (networks where
  multicast is filtered).
* `fourcc=RGBA|BGRA|UYVY` (sink): the pixel layout sent; UYVY halves the bytes handed to the
  encoder (BT.709 limited range, see pixels.py). Default RGBA (keeps alpha).
* `fps=30` (sink): the frame rate announced to receivers (the pacer sets the actual rate).

Groups and `ips` of receivers are settings of the NDI runtime, read once when it starts, so they
are process-wide: they are written to a private NDI config (NDI_CONFIG_DIR) before cyndilib is
first imported, merged over the user's ~/.ndi/ndi-config.v1.json; a later spec asking for other
values gets a warning. A user-set NDI_CONFIG_DIR is left alone.

Receiver (NdiSource): reads through the SDK's frame synchroniser (NDIlib_framesync), which
always holds the newest decoded frame: read() takes it if its timestamp is new, so there is never
a backlog. (The plain capture queue delivered about a third of a 30 fps stream while the
framesync delivered 137 of 144 frames, on the development VM: docs/PERFORMANCE.md, section 8.) Frames
that came and went between two reads count in `skipped` (from the timestamps and the stream's frame rate) and step
the frame counter, so FrameHistory counts them as gaps. The SDK is asked for RGBX/RGBA (it
converts UYVY and BGRA senders itself); any other layout handed over is converted here (BGRA/BGRX
swizzle, UYVY by pixels.uyvy_to_rgba). A frame of another size or layout just arrives (the
FrameHistory restarts on a size change). While the sender is gone read() returns None (the
framesync would repeat its last frame); when it comes back under the same name it is received
again. Latency: each frame carries the sender's NDI timestamp (UTC, set by the SDK when the
frame was submitted); `latency_ms` is receive time minus that, meaningful when both ends share a
clock (one machine, or NTP/PTP-synced machines).

Sender (NdiSink): sends asynchronously (the pacer thread pays a copy, the runtime compresses on
its own thread); a size change re-creates the sender (cyndilib fixes the frame layout while it
is open); NDI receivers reconnect to the same name by themselves.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from .base import FrameSink, FrameSource, TransportUnavailable, check_rgba
from .pixels import bgra_to_rgba, rgba_to_uyvy, uyvy_to_rgba
from .staging import HostStager

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install cyndilib"
FOURCCS = ("RGBA", "BGRA", "UYVY")
_OPTIONS = {"groups", "ips", "discovery", "fourcc", "fps"}


@dataclass(frozen=True)
class NdiSpec:
    name: str
    groups: str = ""
    ips: str = ""
    fourcc: str = "RGBA"
    fps: float = 30.0
    discovery: str = ""


def parse_spec(text: str) -> NdiSpec:
    """`NAME?groups=a,b&ips=1.2.3.4&fourcc=UYVY&fps=30` (the part after `ndi:`)."""
    name, _, query = text.partition("?")
    opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = set(opts) - _OPTIONS
    if unknown:
        raise ValueError(f"ndi:{text}: unknown option(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(_OPTIONS))}")
    fourcc = opts.get("fourcc", "RGBA").upper()
    if fourcc not in FOURCCS:
        raise ValueError(f"ndi:{text}: fourcc must be one of {', '.join(FOURCCS)}")
    try:
        fps = float(opts.get("fps", 30.0))
    except ValueError:
        raise ValueError(f"ndi:{text}: fps must be a number") from None
    if not 0 < fps <= 240:
        raise ValueError(f"ndi:{text}: fps {fps:g} is not in (0, 240]")
    return NdiSpec(name.strip(), opts.get("groups", "").strip(), opts.get("ips", "").strip(),
                   fourcc, fps, opts.get("discovery", "").strip())


# -- the NDI runtime (process-wide) --------------------------------------------------------------
_runtime_lock = threading.Lock()
_runtime: dict[str, Any] = {}  # {"module": cyndilib namespace, "ips": str, "groups": str}


def _write_config(ips: str, groups: str, discovery: str = "") -> str:
    """A private NDI config dir holding the user's config with our discovery settings on top.
    Keys as the runtime reads them from ndi-config.v1.json (its strings name them):
    ndi.networks.ips, ndi.networks.discovery, ndi.groups.recv."""
    data: dict[str, Any] = {}
    user = Path.home() / ".ndi" / "ndi-config.v1.json"
    try:
        data = json.loads(user.read_text())
    except (OSError, ValueError):
        pass
    ndi = data.setdefault("ndi", {})
    if ips:
        ndi.setdefault("networks", {})["ips"] = ips
    if discovery:
        ndi.setdefault("networks", {})["discovery"] = discovery
    if groups:
        ndi.setdefault("groups", {})["recv"] = groups
    folder = tempfile.mkdtemp(prefix="vacelive-ndi-")
    Path(folder, "ndi-config.v1.json").write_text(json.dumps(data))
    return folder


def load_runtime(ips: str = "", groups: str = "", module: Any = None, discovery: str = "") -> Any:
    """The cyndilib modules (sender, receiver, finder, video_frame, wrapper) as one namespace,
    importing (and so starting the NDI runtime) once per process with the given discovery settings."""
    if module is not None:
        return module
    with _runtime_lock:
        if _runtime:
            if (ips and ips != _runtime["ips"]) or (groups and groups != _runtime["groups"]):
                log.warning("ndi: the NDI runtime already runs with ips=%r groups=%r; ips=%r "
                            "groups=%r apply from the next start (they are process-wide)",
                            _runtime["ips"], _runtime["groups"], ips, groups)
            return _runtime["module"]
        if (ips or groups or discovery) and "NDI_CONFIG_DIR" not in os.environ:
            os.environ["NDI_CONFIG_DIR"] = _write_config(ips, groups, discovery)
        try:
            import types

            from cyndilib import finder, receiver, sender, video_frame, wrapper
        except ImportError as exc:
            raise TransportUnavailable(f"`cyndilib` is not importable: {exc}. Install it with: "
                                       f"{INSTALL_HINT}") from exc
        ns = types.SimpleNamespace(finder=finder, receiver=receiver, sender=sender,
                                   video_frame=video_frame, wrapper=wrapper)
        _runtime.update(module=ns, ips=ips, groups=groups)
        return ns


def name_matches(pattern: str, full_name: str) -> bool:
    """`MACHINE (stream)` matches exactly; a bare `stream` matches it on any machine; "" anything."""
    if not pattern:
        return True
    if pattern == full_name:
        return True
    if "(" in pattern:
        return False
    head, sep, tail = full_name.partition(" (")
    return bool(sep) and tail.endswith(")") and tail[:-1] == pattern


class LatencyMeter:
    """Rolling receive-minus-send-timestamp latencies (ms)."""

    def __init__(self, window: int = 512) -> None:
        self._values: deque[float] = deque(maxlen=window)

    def add(self, ms: float) -> None:
        self._values.append(ms)

    def summary(self) -> dict[str, float]:
        if not self._values:
            return {"latency_ms_p50": 0.0, "latency_ms_p99": 0.0, "latency_ms_last": 0.0}
        arr = np.asarray(self._values)
        p50, p99 = np.percentile(arr, [50, 99])
        return {"latency_ms_p50": float(p50), "latency_ms_p99": float(p99),
                "latency_ms_last": float(arr[-1])}


class NdiSource(FrameSource):
    SCAN_INTERVAL = 0.25  # seconds between looks at the NDI source list while not connected
    def __init__(self, spec: str | NdiSpec = "", *, module: Any = None, timeout_ms: int = 5,
                 recv_name: str = "vacelive") -> None:
        self.spec = spec if isinstance(spec, NdiSpec) else parse_spec(spec)
        self.name = self.spec.name
        self._mod = load_runtime(self.spec.ips, self.spec.groups, module, self.spec.discovery)
        w = self._mod.wrapper
        self._progressive = w.FrameFormat.progressive
        self.timeout_ms = timeout_ms  # kept for API compatibility: framesync reads never wait
        self._receiver = self._mod.receiver.Receiver(
            color_format=w.RecvColorFormat.RGBX_RGBA, bandwidth=w.RecvBandwidth.highest,
            recv_name=recv_name)
        self._vf = self._mod.video_frame.VideoFrameSync()
        self._receiver.frame_sync.set_video_frame(self._vf)
        self._last_ts: float | None = None
        self._next_scan = 0.0
        self._finder = self._mod.finder.Finder()
        self._finder.open()
        self._lock = threading.Lock()
        self._source: Any = None
        self.source_name: str | None = None
        self._size: tuple[int, int] | None = None
        self._format = "RGBA8"
        self._counter = 0
        self.received = 0  # frames taken from the runtime (newest kept, the rest skipped)
        self.skipped = 0
        self.reconnects = 0
        self.latency = LatencyMeter()
        self._closed = False

    # -- connection --------------------------------------------------------------------------------
    def list_sources(self) -> list[str]:
        self._finder.update_sources()
        return list(self._finder.get_source_names())

    def _connect(self) -> bool:
        src = self._source
        if src is not None and src.valid:
            return True
        now = time.monotonic()
        if now < self._next_scan:  # FrameHistory polls every few ms; the source list needs less
            return False
        self._next_scan = now + self.SCAN_INTERVAL
        for full in self.list_sources():
            if name_matches(self.name, full):
                source = self._finder.get_source(full)
                if source is None or not source.valid:
                    continue
                self._receiver.set_source(source)
                if self._source is not None:
                    self.reconnects += 1
                self._source, self.source_name = source, full
                log.info("ndi: receiving %r", full)
                return True
        return False

    # -- FrameSource -----------------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int] | None:
        return self._size

    @property
    def format(self) -> str:
        return self._format

    @property
    def frame_counter(self) -> int:
        return self._counter

    @property
    def connected(self) -> bool:
        return self._source is not None and bool(self._receiver.is_connected())

    def read(self) -> np.ndarray | None:
        with self._lock:
            if self._closed or not self._connect():
                return None
            vf = self._vf
            self._receiver.frame_sync.capture_video(self._progressive)
            if not vf.xres or not self._receiver.is_connected():
                return None
            ts = vf.get_timestamp_posix()
            if ts == self._last_ts:
                return None  # the frame already read: nothing new
            w, h = vf.get_resolution()
            fourcc = self._mod.wrapper.FourCC(vf.get_fourcc()).name
            stride = vf.get_line_stride()
            frame = _to_rgba(np.asarray(vf.get_array()), w, h, stride, fourcc)  # a copy
            missed = 0
            if self._last_ts is not None and ts > self._last_ts:
                try:
                    rate = float(vf.get_frame_rate())
                except (ValueError, ZeroDivisionError):
                    rate = 0.0
                if 0 < rate <= 240:
                    missed = max(0, int(round((ts - self._last_ts) * rate)) - 1)
            self._last_ts = ts
        got = 1 + missed
        self.received += 1
        self.skipped += missed
        self._counter += got
        if (w, h) != self._size or fourcc != self._format:
            log.info("ndi: %s is %dx%d %s", self.source_name, w, h, fourcc)
        self._size, self._format = (w, h), fourcc
        if ts > 0:
            self.latency.add((time.time() - ts) * 1e3)
        return frame

    @property
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source_name, "received": self.received,
                               "skipped": self.skipped, "reconnects": self.reconnects}
        out.update(self.latency.summary())
        return out

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._receiver.disconnect()
            finally:
                self._finder.close()


def _to_rgba(buf: np.ndarray, w: int, h: int, stride: int, fourcc: str) -> np.ndarray:
    """A received buffer of any layout the SDK hands over -> [H,W,4] RGBA (owned by the caller)."""
    if fourcc in ("UYVY", "UYVA"):
        # UYVA appends an 8-bit alpha plane after the UYVY plane
        rows = buf[: h * stride].reshape(h, stride)[:, : w * 2]
        alpha = 255
        frame = uyvy_to_rgba(rows.reshape(h, w, 2), alpha)
        if fourcc == "UYVA":
            frame[..., 3] = buf[h * stride: h * stride + w * h].reshape(h, w)
        return frame
    if fourcc not in ("RGBA", "RGBX", "BGRA", "BGRX"):
        raise ValueError(f"ndi: unsupported pixel layout {fourcc} (asked the SDK for RGBA)")
    rows = buf[: h * stride].reshape(h, stride)[:, : w * 4].reshape(h, w, 4)
    frame = bgra_to_rgba(rows) if fourcc.startswith("BGR") else rows.copy()
    if fourcc.endswith("X"):
        frame[..., 3] = 255
    return frame


class NdiSink(FrameSink):
    def __init__(self, spec: str | NdiSpec = "vacelive", *, module: Any = None) -> None:
        self.spec = spec if isinstance(spec, NdiSpec) else parse_spec(spec)
        if not self.spec.name:
            raise ValueError("an NDI sender needs a name: ndi:NAME")
        self.name = self.spec.name
        self._mod = load_runtime(self.spec.ips, "", module, self.spec.discovery)
        self._fourcc = self._mod.wrapper.FourCC[self.spec.fourcc]
        self._lock = threading.Lock()
        self._sender: Any = None
        self._size: tuple[int, int] | None = None
        self._stager = HostStager()
        self.frames_sent = 0
        self.reopens = 0

    def _open(self, w: int, h: int) -> None:
        self._release()
        sender = self._mod.sender.Sender(self.name, ndi_groups=self.spec.groups, clock_video=False)
        vf = self._mod.video_frame.VideoSendFrame()
        vf.set_resolution(w, h)
        vf.set_fourcc(self._fourcc)
        vf.set_frame_rate(Fraction(self.spec.fps).limit_denominator(1001))
        sender.set_video_frame(vf)
        sender.open()
        if self._size is not None:
            self.reopens += 1
        self._sender, self._size = sender, (w, h)

    def send(self, frame: Any) -> None:
        check_rgba(frame)
        pixels = self._stager.to_numpy(frame)
        h, w = pixels.shape[:2]
        if self.spec.fourcc == "UYVY":
            data = rgba_to_uyvy(pixels)
        elif self.spec.fourcc == "BGRA":
            data = bgra_to_rgba(pixels)
        else:
            data = pixels
        with self._lock:
            if self._sender is None or self._size != (w, h):
                self._open(w, h)
            # asynchronous: the runtime compresses on its own thread while the pacer goes on
            # (cyndilib copies the pixels into a buffer it keeps until the next send)
            if not self._sender.write_video_async(data.reshape(-1)):
                raise RuntimeError(f"ndi: sending to {self.name!r} failed")
            self.frames_sent += 1

    def connections(self, timeout: float = 0.0) -> int:
        with self._lock:
            return int(self._sender.get_num_connections(timeout)) if self._sender else 0

    def _release(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def close(self) -> None:
        with self._lock:
            self._release()
