"""Recording the paced output to MP4 (PyAV), off the generation and pacer threads.

The pacer hands every frame it sends to `Recorder.offer()`, which only puts a reference in a
bounded queue and returns: the output never waits for the encoder. An encoder thread turns the
frames into H.264 (or MPEG-4 Part 2) and writes the file. If the encoder falls behind and the
queue is full, the *recorded* frame is dropped and counted (`dropped`), never an output frame;
the dropped frame's time slot stays in the file (presentation timestamps are the pacer's frame
numbers), so the recording keeps the show's pace and a drop shows as a held frame.

* encoder: the first that opens on this machine, in order h264_nvenc (NVIDIA),
  h264_videotoolbox (macOS), h264_qsv (Intel), h264_amf (AMD), libx264, mpeg4. The hardware
  ones are in PyAV's wheels but only open where the driver and device are present.
* files: `<folder>/vacelive-YYYYmmdd-HHMMSS-<preset>.mp4` (the last preset recalled, else "live").
* side by side: the control input (newest frame at each output frame) fitted into a panel the
  size of the output, to the right of it.
* fragmented MP4 (`movflags=frag_keyframe+empty_moov+default_base_moof`, a keyframe every
  second, `flush_packets=1` so a fragment reaches the disk when it is complete): the file is
  playable while it is written and after a crash or power loss, up to the last complete
  fragment; stop() flushes the encoder and closes it cleanly.
"""
from __future__ import annotations

import logging
import queue
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

ENCODERS = ("h264_nvenc", "h264_videotoolbox", "h264_qsv", "h264_amf", "libx264", "mpeg4")
ENCODER_OPTIONS = {
    "h264_nvenc": {"preset": "p4", "rc": "vbr", "cq": "19"},
    "libx264": {"preset": "veryfast", "crf": "18"},
    "mpeg4": {"qscale": "3"},
}
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
_usable: dict[str, bool] = {}


class RecordError(ValueError):
    """A recording request that cannot be carried out; str() is shown to the performer."""


def encoder_opens(name: str) -> bool:
    """Whether this FFmpeg encoder exists in PyAV's build and opens here (cached per process)."""
    if name not in _usable:
        import av

        ok = False
        try:
            cc = av.CodecContext.create(name, "w")
            cc.width, cc.height, cc.pix_fmt = 64, 64, "yuv420p"
            cc.time_base = Fraction(1, 24)
            cc.open()
            ok = True
        except Exception as exc:  # absent codec, no device, no driver: try the next one
            log.debug("encoder %s unavailable: %s", name, exc)
        _usable[name] = ok
    return _usable[name]


def pick_encoder(preferred: tuple[str, ...] = ENCODERS) -> str:
    for name in preferred:
        if encoder_opens(name):
            return name
    raise RecordError(f"no video encoder opens here (tried {', '.join(preferred)})")


def safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:60] or "live"


def fit(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    """frame [H',W',C] fitted (aspect kept, nearest neighbour, black bars) into [h, w, C]."""
    fh, fw = frame.shape[:2]
    if (fh, fw) == (h, w):
        return frame
    scale = min(w / fw, h / fh)
    nw, nh = max(1, int(round(fw * scale))), max(1, int(round(fh * scale)))
    ys = np.minimum((np.arange(nh) + 0.5) / scale, fh - 1).astype(np.intp)
    xs = np.minimum((np.arange(nw) + 0.5) / scale, fw - 1).astype(np.intp)
    out = np.zeros((h, w, frame.shape[2]), frame.dtype)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = frame[ys][:, xs]
    return out


@dataclass
class RecordStatus:
    active: bool
    path: str
    codec: str
    frames: int  # written to the file
    dropped: int  # offered while the queue was full (the encoder fell behind)
    queued: int
    seconds: float  # length of the recording at its frame rate
    error: str = ""


class Recording:
    """One file being written (Recorder makes them)."""

    def __init__(self, path: Path, fps: float, codec: str, side: Callable[[], Any] | None,
                 queue_frames: int, encode_hook: Callable[[int], None] | None = None) -> None:
        self.path, self.codec, self.side = path, codec, side
        self.rate = Fraction(fps).limit_denominator(1001)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._encode_hook = encode_hook
        self.offered = self.written = self.dropped = 0
        self.error = ""
        self._stager = None
        self._thread = threading.Thread(target=self._run, name=f"record:{path.name}", daemon=True)
        self._closed = threading.Event()
        self._thread.start()

    # -- producer side (the pacer thread) ---------------------------------------------------------
    def offer(self, frame: Any) -> None:
        pts = self.offered
        self.offered += 1
        side = None
        if self.side is not None:
            try:
                side = self.side()
            except Exception:  # the control input is optional decoration
                side = None
        try:
            self._queue.put_nowait((pts, frame, side))
        except queue.Full:
            self.dropped += 1

    def finish(self) -> None:
        """Ask the writer to flush what is queued and close the file (returns at once)."""
        while True:
            try:
                self._queue.put(None, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    return

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def active(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> RecordStatus:
        return RecordStatus(self.active, str(self.path), self.codec, self.written, self.dropped,
                            self._queue.qsize(), float(self.offered / self.rate),
                            self.error)

    # -- writer thread ------------------------------------------------------------------------------
    def _pixels(self, frame: Any) -> np.ndarray:
        if isinstance(frame, np.ndarray):
            return frame
        if self._stager is None:
            from vacelive.bridge.transports.staging import HostStager

            self._stager = HostStager()
        return self._stager.to_numpy(frame)

    def _run(self) -> None:
        import av

        container = stream = None
        size: tuple[int, int] | None = None
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                pts, frame, side = item
                rgba = self._pixels(frame)
                if size is None:
                    h, w = rgba.shape[:2]
                    size = (w - w % 2, h - h % 2)  # yuv420p needs even sizes
                    width = size[0] * (2 if self.side is not None else 1)
                    container, stream = self._open(av, width, size[1])
                if self._encode_hook is not None:
                    self._encode_hook(pts)
                w, h = size
                picture = fit(rgba, w, h)[..., :3] if rgba.shape[:2] != (h, w) else rgba[:h, :w, :3]
                if self.side is not None:
                    panel = np.zeros((h, w, 3), np.uint8)
                    if side is not None:
                        panel = fit(self._pixels(side)[..., :3], w, h)
                    picture = np.concatenate([picture, panel], axis=1)
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
                vf.pts = pts
                container.mux(stream.encode(vf))
                self.written += 1
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("recording %s failed", self.path)
        finally:
            if container is not None:
                try:
                    container.mux(stream.encode(None))  # flush the encoder's delayed frames
                except Exception as exc:
                    self.error = self.error or f"flush: {exc}"
                container.close()
            self._closed.set()

    def _open(self, av: Any, width: int, height: int):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), mode="w", format="mp4",
                            options={"movflags": MOVFLAGS, "flush_packets": "1"})
        stream = container.add_stream(self.codec, rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / self.rate
        stream.codec_context.gop_size = max(1, round(float(self.rate)))  # a fragment a second
        stream.codec_context.options = dict(ENCODER_OPTIONS.get(self.codec, {}))
        if self.codec == "mpeg4":
            stream.codec_context.qmin = stream.codec_context.qmax = 3
        log.info("recording %dx%d @ %s fps with %s to %s", width, height, self.rate, self.codec,
                 self.path)
        return container, stream


class Recorder:
    """Start/stop recordings of one output (OSC: /vace/record/start, /stop, /status)."""

    def __init__(self, folder: str | Path = "vacelive-recordings", *,
                 encoders: tuple[str, ...] = ENCODERS, queue_frames: int = 48,
                 now: Callable[[], datetime] = datetime.now,
                 encode_hook: Callable[[int], None] | None = None) -> None:
        self.folder = Path(folder)
        self.encoders = encoders
        self.queue_frames = queue_frames
        self._now = now
        self._encode_hook = encode_hook  # tests: slow the writer down deterministically
        self._lock = threading.Lock()
        self.current: Recording | None = None
        self.last: Recording | None = None

    def file_name(self, preset: str = "") -> Path:
        stamp = self._now().strftime("%Y%m%d-%H%M%S")
        path = self.folder / f"vacelive-{stamp}-{safe_stem(preset)}.mp4"
        n = 2
        while path.exists():
            path = self.folder / f"vacelive-{stamp}-{safe_stem(preset)}-{n}.mp4"
            n += 1
        return path

    def start(self, fps: float, *, preset: str = "", side: Callable[[], Any] | None = None,
              path: str | Path | None = None) -> Path:
        with self._lock:
            if self.current is not None and self.current.active:
                raise RecordError(f"already recording to {self.current.path}")
            if not fps or fps <= 0:
                raise RecordError("recording needs an output frame rate; none is known yet")
            codec = pick_encoder(self.encoders)
            target = Path(path).expanduser() if path else self.file_name(preset)
            if target.suffix.lower() != ".mp4":
                target = target.with_suffix(".mp4")
            self.current = Recording(target, fps, codec, side, self.queue_frames, self._encode_hook)
            return target

    def offer(self, frame: Any) -> None:
        rec = self.current
        if rec is not None:
            rec.offer(frame)

    def stop(self, wait: float | None = 0.0) -> RecordStatus | None:
        """Stop taking frames; the writer flushes what is queued and closes the file. With
        `wait` (seconds, None = until done) block until the file is closed."""
        with self._lock:
            rec, self.current = self.current, None
        if rec is None:
            return None
        self.last = rec
        rec.finish()
        if wait is None or wait > 0:
            rec.join(wait)
        return rec.status()

    def status(self) -> RecordStatus | None:
        rec = self.current or self.last
        return rec.status() if rec is not None else None

    def close(self) -> None:
        self.stop(wait=10.0)
