"""`vacelive demo`: the real live loop end to end on a CPU, with no GPU and no weight files.

What runs is exactly what `vacelive serve` runs, with embedded defaults:
* generator: StreamGenerator.random("tiny") on the CPU (random weights: abstract output);
* input: a synthetic moving control video, written into a shared-memory ring by a thread
  (a different size than the generation size, so it is fitted like a real texture would be);
* the Session: FrameHistory → ChunkRequest per parameter snapshot → generator → Pacer → a
  shared-memory output ring, which the demo reads back like TouchDesigner would;
* control: real OSC datagrams over UDP to the running server (python-osc), from a "surface" that
  registers for feedback with /vace/hello: a prompt change, a context-scale change, a preset load
  with a 2-chunk morph, a V2V strength change, and a snapshot;
* V2V restyle: input_mode video restyles the control video (it is VACE's control map and the
  V2V input at once); /vace/noise_scale lowers the strength mid-run;
* results: an MP4 of the output (PyAV), a PNG contact sheet of input/output per chunk (Pillow),
  summary.json, and a printed summary of what each OSC message changed and when it took effect.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from vacelive.bridge.osc import OscConfig
from vacelive.bridge.run.loop import ChunkRecord
from vacelive.bridge.run.media import to_numpy_rgba
from vacelive.bridge.run.session import Session, SessionOptions
from vacelive.bridge.transports import FrameSource, ShmFrameSink, ShmFrameSource

log = logging.getLogger("vacelive.demo")

FIRST_PROMPT = "ink drops blooming in clear water, macro photograph"
SECOND_PROMPT = "a glowing jellyfish drifting through deep blue water"
PRESET = "demo-dream"
V2V_STRENGTH = 0.7  # the demo restyles its control video (input_mode video) from the start
# Saved into OUT/presets by the demo (the user preset folder of its session), then loaded over
# OSC like any preset; it keeps the control video on so the contact sheet shows input and output.
PRESET_VALUES = {
    "prompts": (("liquid gold flowing over black velvet", 1.0), ("soft studio light", 0.3)),
    "context_scale": 1.5,
    "seed": 7,
    "transition_chunks": 2,
}
RANDOM_WEIGHTS_NOTE = (
    "This demo runs a tiny model with RANDOM weights: the pictures are abstract noise-art, not "
    "images of the prompts. Everything around the model is the real thing. For real output on a "
    "GPU: `vacelive weights download longlive`, then `vacelive serve` (see README: Running it).")


@dataclass
class Cue:
    after_chunk: int  # sent once this many chunks are done (so it lands while the next one runs)
    address: str
    args: list[Any]
    what: str
    params: tuple[str, ...] = ()  # parameters whose change marks the effect (empty: preset/snapshot)
    sent_at: float | None = None
    sent_seq: int | None = None  # run-loop attempts finished when it was sent


def default_cues() -> list[Cue]:
    return [
        Cue(1, "/vace/prompt", [SECOND_PROMPT], "prompt change", ("prompts",)),
        Cue(2, "/vace/context_scale", [0.4], "VACE context scale 1.0 -> 0.4", ("context_scale",)),
        Cue(3, "/vace/preset/load", [PRESET, 2], f"user preset '{PRESET}', 2-chunk morph"),
        Cue(4, "/vace/noise_scale", [0.35], f"V2V strength (noise_scale) {V2V_STRENGTH} -> 0.35",
            ("noise_scale",)),
        Cue(5, "/vace/snapshot", [], "snapshot of the output frame"),
    ]


# ---------------------------------------------------------------------------------------------
class SyntheticControl:
    """A moving test pattern written into a shared-memory ring at `fps` (like a TOP into Spout):
    a bright disc orbiting over a slowly turning gradient, with a sweeping bar."""

    def __init__(self, sink: ShmFrameSink, size: tuple[int, int], fps: float = 30.0) -> None:
        self.sink, self.fps = sink, fps
        w, h = size
        self._yy, self._xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self._w, self._h = w, h
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-control", daemon=True)
        self.frames = 0

    def render(self, t: float) -> np.ndarray:
        w, h, xx, yy = self._w, self._h, self._xx, self._yy
        out = np.empty((h, w, 4), np.uint8)
        angle = 0.6 * t
        grad = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) * 0.5 + 0.5
        cx, cy = w * (0.5 + 0.3 * math.cos(1.7 * t)), h * (0.5 + 0.3 * math.sin(1.7 * t))
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < (0.18 * h) ** 2
        bar = np.abs(xx - (w * ((0.25 * t) % 1.0))) < w * 0.03
        out[..., 0] = (40 + 120 * grad).astype(np.uint8)
        out[..., 1] = (20 + 60 * (1 - grad)).astype(np.uint8)
        out[..., 2] = (90 + 100 * grad).astype(np.uint8)
        out[disc, :3] = (250, 230, 120)
        out[bar, :3] = 255
        out[..., 3] = 255
        return out

    def _run(self) -> None:
        t0 = time.monotonic()
        period = 1.0 / self.fps
        next_due = t0
        while not self._stop.is_set():
            self.sink.send(self.render(time.monotonic() - t0))
            self.frames += 1
            next_due += period
            self._stop.wait(max(0.0, next_due - time.monotonic()))

    def start(self) -> "SyntheticControl":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.sink.close()


class ReadBack:
    """Reads an output like a receiver (TouchDesigner) would, on its own thread: every new frame
    as `items` (arrival time, source counter, frame), the first `max_frames` of them (None: all)."""

    def __init__(self, source: FrameSource, max_frames: int | None = 2000) -> None:
        self.source, self.max_frames = source, max_frames
        self.items: list[tuple[float, int, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readback", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                time.sleep(0.001)
                continue
            if self.max_frames is None or len(self.items) < self.max_frames:
                self.items.append((time.monotonic(), self.source.frame_counter, frame))

    @property
    def frames(self) -> list[np.ndarray]:
        return [frame for _, _, frame in list(self.items)]

    @property
    def times(self) -> list[float]:
        return [t for t, _, _ in list(self.items)]

    def count(self) -> int:
        return len(self.items)

    def since(self, t: float) -> list[tuple[float, int, np.ndarray]]:
        """The items that arrived at or after monotonic time t."""
        return [item for item in list(self.items) if item[0] >= t]

    def start(self) -> "ReadBack":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.source.close()


class OscSurface:
    """A control surface over real UDP: sends OSC messages, collects what the server sends back
    in `inbox` (arrival time, address, arguments). With `hello` it registers for echoes and
    status at once (/vace/hello with its port)."""

    def __init__(self, target: tuple[str, int], hello: bool = True) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.inbox: list[tuple[float, str, list[Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osc-surface", daemon=True)
        self._thread.start()
        if hello:
            self.send("/vace/hello", self.port)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, address: str, *args: Any) -> float:
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        dgram = b.build().dgram
        t = time.monotonic()  # before sending: a reply can arrive before sendto() returns
        self.sock.sendto(dgram, self.target)
        return t

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (socket.timeout, OSError):
                continue
            try:
                for m in OscPacket(data).messages:
                    self.inbox.append((time.monotonic(), m.message.address, list(m.message.params)))
            except Exception:  # a reply we cannot parse is not the demo's business
                continue

    def received(self, prefix: str) -> list[tuple[float, str, list[Any]]]:
        return [item for item in list(self.inbox) if item[1].startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.sock.close()


@dataclass
class ChunkNote:
    """What the demo keeps of one run-loop attempt (thumbnails instead of whole chunks)."""

    seq: int
    boundary: float
    finished: float
    chunk_index: int | None
    error: str | None
    latency_ms: float
    changed: frozenset[str]
    morph: tuple[str, int, int] | None
    prompts: list[tuple[str, float]]
    context_scale: float
    video_enabled: bool
    video_shape: tuple[int, ...] | None
    noise_scale: float | None  # V2V strength asked for (None: input_mode text)
    noise_used: float | None  # what the engine used (None: the chunk was text-to-video)
    n_frames: int
    notices: list[str]
    input_thumb: np.ndarray | None = None
    output_thumb: np.ndarray | None = None


class ChunkLog:
    def __init__(self) -> None:
        self.notes: list[ChunkNote] = []
        self._cond = threading.Condition()

    def __call__(self, rec: ChunkRecord) -> None:
        req, res = rec.request, rec.result
        note = ChunkNote(
            seq=rec.seq, boundary=rec.boundary, finished=rec.finished,
            chunk_index=None if res is None else int(res.chunk_index), error=rec.error,
            latency_ms=rec.latency_ms, changed=rec.snapshot.changed, morph=rec.snapshot.morph,
            prompts=[(p.text, p.weight) for p in req.prompts] if req else [],
            context_scale=req.context_scale if req else float("nan"),
            video_enabled=bool(rec.snapshot["video_enabled"]),
            video_shape=tuple(req.video.shape) if req is not None and req.video is not None else None,
            noise_scale=req.noise_scale if req is not None and req.input_mode == "video" else None,
            noise_used=None if res is None else res.noise_scale,
            n_frames=0 if res is None else len(res.frames), notices=list(res.notices) if res else [],
        )
        source = None if req is None else (req.input_video if req.input_video is not None else req.video)
        if source is not None:  # what the chunk restyled (V2V) or was steered by (VACE)
            note.input_thumb = np.asarray(source[-1]).copy()
        if res is not None and len(res.frames):
            note.output_thumb = to_numpy_rgba(res.frames[len(res.frames) // 2])
        with self._cond:
            self.notes.append(note)
            self._cond.notify_all()

    @property
    def done(self) -> int:
        return sum(1 for n in self.notes if n.error is None)

    def wait_done(self, count: int, deadline: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.done >= count, max(0.0, deadline - time.monotonic()))


# ---------------------------------------------------------------------------------------------
def write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> None:
    import av

    h, w = frames[0].shape[:2]
    w2, h2 = w - w % 2, h - h % 2  # yuv420p needs even sizes
    rate = max(1, int(round(fps)))
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=rate)
            stream.options = {"crf": "18", "preset": "veryfast"}
        except Exception:  # an FFmpeg build without x264
            stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h2, :w2, :3]), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_contact_sheet(notes: list[ChunkNote], path: Path, max_tiles: int = 12) -> tuple[int, int]:
    """One tile per chunk (evenly sampled): control input | generated output, with a caption."""
    from PIL import Image, ImageDraw

    good = [n for n in notes if n.output_thumb is not None]
    if len(good) > max_tiles:
        idx = np.linspace(0, len(good) - 1, max_tiles).round().astype(int)
        good = [good[i] for i in idx]
    oh, ow = good[0].output_thumb.shape[:2]
    scale = max(1, 192 // max(oh, 1))
    th, tw = oh * scale, ow * scale
    cap = 30
    tile_w, tile_h = 2 * tw + 12, th + cap + 8
    cols = min(3, len(good))
    rows = math.ceil(len(good) / cols)
    sheet = Image.new("RGB", (cols * tile_w + 8, rows * tile_h + 8), (18, 18, 22))
    draw = ImageDraw.Draw(sheet)
    for i, n in enumerate(good):
        x0, y0 = 8 + (i % cols) * tile_w, 8 + (i // cols) * tile_h
        if n.input_thumb is not None:
            inp = Image.fromarray(n.input_thumb[..., :3]).resize((tw, th))
            sheet.paste(inp, (x0, y0))
        else:
            draw.text((x0 + 6, y0 + th // 2), "no video input", fill=(150, 150, 150))
        sheet.paste(Image.fromarray(n.output_thumb[..., :3]).resize((tw, th), Image.NEAREST),
                    (x0 + tw + 4, y0))
        text = n.prompts and max(n.prompts, key=lambda p: p[1])[0] or ""
        draw.text((x0, y0 + th + 2), f"chunk {n.chunk_index}  ctx {n.context_scale:.2f}"
                  + (f"  v2v {n.noise_used:.2f}" if n.noise_used is not None else "")
                  + (f"  morph {n.morph[1]}/{n.morph[2]}" if n.morph else ""), fill=(230, 230, 230))
        draw.text((x0, y0 + th + 15), text[:2 * tw // 6], fill=(160, 200, 255))
    sheet.save(path, format="PNG")
    return sheet.size


# ---------------------------------------------------------------------------------------------
def _effect(cue: Cue, notes: list[ChunkNote], surface: OscSurface) -> dict[str, Any]:
    """Which chunk first used a cue, and what changed."""
    during = next((n for n in reversed(notes) if n.boundary <= cue.sent_at), None)
    out: dict[str, Any] = {"sent_during_chunk": during.chunk_index if during else None}
    later = [n for n in notes if n.boundary > cue.sent_at and n.error is None]
    if cue.params:
        hit = next((n for n in later if set(cue.params) & n.changed), None)
        if hit is not None:
            out.update(chunk=hit.chunk_index, after_ms=(hit.boundary - cue.sent_at) * 1e3)
            if "prompts" in cue.params:
                out["value"] = hit.prompts
            if "context_scale" in cue.params:
                out["value"] = hit.context_scale
            if "noise_scale" in cue.params:
                out["value"] = hit.noise_scale
    elif cue.address == "/vace/preset/load":
        steps = [n for n in later if n.morph and n.morph[0] == cue.args[0]]
        if steps:
            out.update(chunk=steps[0].chunk_index, after_ms=(steps[0].boundary - cue.sent_at) * 1e3,
                       morph=[{"chunk": n.chunk_index, "step": f"{n.morph[1]}/{n.morph[2]}",
                               "prompts": n.prompts, "video_enabled": n.video_enabled} for n in steps])
        loaded = [m for m in surface.received("/vace/preset/loaded") if m[0] >= cue.sent_at]
        out["reply"] = loaded[0][2] if loaded else None
    elif cue.address == "/vace/snapshot":
        saved = _snapshot_notices(surface, cue.sent_at)
        out["file"] = saved[0].split(": ", 1)[1] if saved else None
    return out


def _snapshot_notices(surface: OscSurface, since: float) -> list[str]:
    return [str(m[2][0]) for m in surface.received("/vace/notice")
            if m[0] >= since and m[2] and str(m[2][0]).startswith("snapshot saved")]


def _settled(cue: Cue, notes: list[ChunkNote], surface: OscSurface) -> bool:
    """Has the cue had its full effect (change used, morph finished, snapshot written)?"""
    later = [n for n in notes if n.boundary > cue.sent_at and n.error is None]
    if cue.params:
        return any(set(cue.params) & n.changed for n in later)
    if cue.address == "/vace/preset/load":
        return any(n.morph and n.morph[0] == cue.args[0] and n.morph[1] == n.morph[2] for n in later)
    return bool(_snapshot_notices(surface, cue.sent_at))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def run_demo(out_dir: str | Path = "vacelive-demo", chunks: int = 8, *, width: int = 256,
             height: int = 160, codec: str = "tae", fps: float = 24.0, generator: Any = None,
             timeout: float = 120.0, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to OUT/summary.json)."""
    if chunks < 5:
        raise ValueError("the demo needs at least 5 chunks (its OSC cues go out after chunks 1-5)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    if generator is None:
        from vacelive.bridge.run.generators import vace_available
        from vacelive.engine.generator import StreamGenerator

        generator = StreamGenerator.random("tiny", width=width, height=height, codec=codec,
                                           device="cpu", vace=vace_available())
    desc = dict(generator.describe())
    tag = f"vld{os.getpid() % 100000}"
    ctl_spec, out_spec = f"shm:{tag}c", f"shm:{tag}o"
    control = SyntheticControl(ShmFrameSink(f"{tag}c"),
                               (generator.width * 5 // 4, generator.height * 5 // 4)).start()
    options = SessionOptions(
        control=ctl_spec, mask=None, ref=None, output=out_spec,
        osc=OscConfig(host="127.0.0.1", port=0, oscquery_port=None, status_hz=4.0),
        presets_dir=str(out / "presets"), fps=fps, snapshots=str(out / "snapshots"),
        params={"prompt": FIRST_PROMPT, "input_mode": "video", "noise_scale": V2V_STRENGTH},
    )
    from vacelive.bridge.presets import PresetLibrary

    PresetLibrary(user_dir=out / "presets").save(PRESET, PRESET_VALUES, "vacelive demo preset", 2)
    session = reader = surface = None
    notes = ChunkLog()
    cues = default_cues()
    try:
        session = Session(generator, options).start()
        session.loop.add_observer(notes)
        reader = ReadBack(ShmFrameSource(f"{tag}o")).start()
        surface = OscSurface(session.osc.address)
        echo(f"vacelive demo: {session.describe_io()}")
        echo(f"  model: {desc.get('pipeline')} tiny random weights, {generator.width}x"
             f"{generator.height}, codec {desc.get('codec')}, {desc.get('device')}, "
             f"{'VACE' if desc.get('vace') else 'text-only (no VACE in this build)'}")
        deadline = t_start + timeout
        for cue in cues:
            if not notes.wait_done(cue.after_chunk, deadline):
                raise TimeoutError(f"the demo did not reach chunk {cue.after_chunk} in {timeout:.0f} s")
            cue.sent_seq = len(notes.notes)
            cue.sent_at = surface.send(cue.address, *cue.args)
            echo(f"  OSC -> {cue.address} {' '.join(repr(a) for a in cue.args)}   ({cue.what})")
        if not notes.wait_done(chunks, deadline):
            raise TimeoutError(f"the demo did not reach {chunks} chunks in {timeout:.0f} s")
        # Let the last cues finish (a morph's last step, the snapshot file), a few chunks at most.
        extra = notes.done + 4
        while not all(_settled(c, notes.notes, surface) for c in cues) and notes.done < extra \
                and time.monotonic() < deadline:
            notes.wait_done(notes.done + 1, min(deadline, time.monotonic() + 0.5))
        session.loop.stop(drain=5.0)
        time.sleep(0.1)  # the last paced frame reaches the reader
        status = session.loop.status()
        pacer = session.loop.pacer.stats
    finally:
        for closer in (reader and reader.stop, surface and surface.close,
                       session and session.close, control.stop):
            if closer:
                try:
                    closer()
                except Exception:
                    log.exception("demo cleanup failed")
    elapsed = time.monotonic() - t_start

    frames = reader.frames
    if not frames:
        raise RuntimeError("no output frame came back from the shared-memory output")
    mp4 = out / "vacelive-demo.mp4"
    span = reader.times[-1] - reader.times[0] if len(frames) > 1 else 0.0
    out_fps = (len(frames) - 1) / span if span > 0 else fps
    write_mp4(frames, mp4, out_fps)
    sheet = out / "contact-sheet.png"
    sheet_size = write_contact_sheet(notes.notes, sheet)

    good = [n for n in notes.notes if n.error is None]
    latencies = [n.latency_ms for n in good]
    gen_time = sum(latencies) / 1e3
    generated = sum(n.n_frames for n in good)
    osc_status = {m[1].rsplit("/", 1)[1]: m[2][0] for m in surface.received("/vace/status/")}
    summary = {
        "random_weights": True,
        "model": {k: desc.get(k) for k in ("pipeline", "width", "height", "codec", "device", "dtype", "vace")},
        "chunks": len(good),
        "failed_chunks": len(notes.notes) - len(good),
        "frames_generated": generated,
        "generation_fps": generated / gen_time if gen_time else 0.0,
        "chunk_latency_ms": {"p50": _percentile(latencies, 50), "max": max(latencies, default=0.0)},
        "output": {"spec": out_spec, "frames_read_back": len(frames), "fps": out_fps,
                   "target_fps": fps, "held_frames": pacer.repeated, "dropped_frames": pacer.dropped,
                   "jitter_p50_ms": pacer.jitter_p50_ms, "jitter_p99_ms": pacer.jitter_p99_ms},
        "control_input": {"spec": ctl_spec, "frames_written": control.frames,
                          "size": [generator.width * 5 // 4, generator.height * 5 // 4],
                          "window_shapes": sorted({str(n.video_shape) for n in good})},
        "osc": [{"address": c.address, "args": c.args, "what": c.what,
                 "sent_s": (c.sent_at - t_start) if c.sent_at else None,
                 **_effect(c, notes.notes, surface)} for c in cues],
        "osc_feedback": {"messages": len(surface.inbox), "status": osc_status,
                         "notices": sorted({m[2][0] for m in surface.received("/vace/notice")}),
                         "errors": [m[2][0] for m in surface.received("/vace/error")]},
        "v2v": v2v_summary(good),
        "engine_notices": sorted({x for n in good for x in n.notices}),
        "status": status,
        "files": {"mp4": str(mp4), "mp4_frames": len(frames), "contact_sheet": str(sheet),
                  "contact_sheet_size": list(sheet_size), "size": [frames[0].shape[1], frames[0].shape[0]]},
        "elapsed_s": elapsed,
        "note": RANDOM_WEIGHTS_NOTE,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for line in format_summary(summary):
        echo(line)
    return summary


def v2v_summary(notes: list[ChunkNote]) -> dict[str, Any]:
    """The V2V strength per chunk: spans of equal strength and the chunks where it changed."""
    used = [(n.chunk_index, n.noise_used) for n in notes if n.noise_used is not None]
    spans: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    for chunk, value in used:
        if spans and abs(spans[-1]["noise_scale"] - value) < 1e-9:
            spans[-1]["last_chunk"] = chunk
            continue
        if spans:
            changes.append({"chunk": chunk, "from": spans[-1]["noise_scale"], "to": value})
        spans.append({"first_chunk": chunk, "last_chunk": chunk, "noise_scale": value})
    return {"input_mode": "video" if used else "text", "spans": spans, "changes": changes}


def format_summary(s: dict[str, Any]) -> list[str]:
    o = s["output"]
    lines = [
        "",
        f"Done in {s['elapsed_s']:.1f} s: {s['chunks']} chunks, {s['frames_generated']} frames generated "
        f"at {s['generation_fps']:.1f} fps (chunk latency p50 {s['chunk_latency_ms']['p50']:.0f} ms, "
        f"max {s['chunk_latency_ms']['max']:.0f} ms)" + (f", {s['failed_chunks']} failed" if s["failed_chunks"] else ""),
        f"Output {o['spec']}: {o['frames_read_back']} frames read back at {o['fps']:.1f} fps "
        f"(target {o['target_fps']:g}); held {o['held_frames']}, dropped {o['dropped_frames']}, "
        f"pacer jitter p50 {o['jitter_p50_ms']:.2f} ms / p99 {o['jitter_p99_ms']:.2f} ms",
        f"Control input {s['control_input']['spec']}: {s['control_input']['frames_written']} frames of "
        f"{s['control_input']['size'][0]}x{s['control_input']['size'][1]} written; windows sent: "
        f"{', '.join(s['control_input']['window_shapes'])}",
        "What the OSC messages did (real UDP; a change applies at the next chunk boundary):",
    ]
    for c in s["osc"]:
        head = f"  {c['address']} {' '.join(repr(a) for a in c['args'])}"
        when = f"sent at {c['sent_s']:.2f} s during chunk {c.get('sent_during_chunk')}"
        if c["address"] == "/vace/snapshot":
            lines.append(f"{head}: {when} -> " + (f"wrote {c['file']}" if c.get("file") else "no reply yet"))
        elif "chunk" not in c:
            lines.append(f"{head}: {when} -> not used within the run (run more --chunks)")
        elif c.get("morph"):
            steps = "; ".join(f"chunk {m['chunk']} step {m['step']}: "
                              + " + ".join(f"{t[:28]!r} x{w:.2f}" for t, w in m["prompts"])
                              + ("" if m["video_enabled"] else ", video input off")
                              for m in c["morph"])
            lines.append(f"{head}: {when} -> morph {steps}")
        else:
            value = c.get("value")
            if isinstance(value, list):
                value = " + ".join(f"{t[:40]!r} x{w:.2f}" for t, w in value)
            lines.append(f"{head}: {when} -> used from chunk {c['chunk']} "
                         f"({c['after_ms']:.0f} ms later): {value}")
    fb = s["osc_feedback"]
    st = fb["status"]
    lines.append(f"OSC feedback to the surface: {fb['messages']} messages; last status fps "
                 f"{st.get('fps', 0):.1f}, fps_out {st.get('fps_out', 0):.1f}, latency "
                 f"{st.get('latency_ms', 0):.0f} ms, chunk {st.get('chunk', '-')}"
                 + (f"; errors: {fb['errors']}" if fb["errors"] else ""))
    v = s.get("v2v") or {}
    if v.get("spans"):
        spans = "; ".join(f"chunks {a['first_chunk']}-{a['last_chunk']}: {a['noise_scale']:.2f}"
                          for a in v["spans"])
        changes = ", ".join(f"{c['from']:.2f} -> {c['to']:.2f} at chunk {c['chunk']}" for c in v["changes"])
        lines.append(f"V2V restyle of the control input (contact sheet: input | output): strength {spans}"
                     + (f" (changed {changes})" if changes else ""))
    for n in s["engine_notices"]:
        lines.append(f"Engine notice: {n}")
    f = s["files"]
    lines += [f"Files: {f['mp4']} ({f['mp4_frames']} frames, {f['size'][0]}x{f['size'][1]}), "
              f"{f['contact_sheet']}, {Path(f['mp4']).parent / 'summary.json'}", "", s["note"]]
    return lines
