"""The demo's report: what each chunk did (ChunkLog), the MP4, the contact sheet, the summary.

The contact sheet shows, per chunk, the control input, the chunk's mean output frame and a strip
of all its output frames: nothing is picked, so a flickering output looks flickering.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vacelive.bridge.run.demo_props import Cue, OscSurface
from vacelive.bridge.run.loop import ChunkRecord
from vacelive.bridge.run.media import to_numpy_rgba

THUMB_WIDTH = 128  # output frames are kept at about this width for the sheet


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
    output_frames: np.ndarray | None = None  # every output frame of the chunk, reduced in size

    @property
    def output_mean(self) -> np.ndarray | None:
        """The chunk's mean output frame: what the eye integrates of a flickering chunk."""
        if self.output_frames is None:
            return None
        return self.output_frames.astype(np.float32).mean(axis=0).round().astype(np.uint8)


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
            frames = to_numpy_rgba(res.frames)
            step = max(1, frames.shape[2] // THUMB_WIDTH)
            note.output_frames = np.ascontiguousarray(frames[:, ::step, ::step, :3])
        with self._cond:
            self.notes.append(note)
            self._cond.notify_all()

    @property
    def done(self) -> int:
        return sum(1 for n in self.notes if n.error is None)

    def wait_done(self, count: int, deadline: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.done >= count, max(0.0, deadline - time.monotonic()))



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
    """One tile per chunk (evenly sampled): control input | the chunk's MEAN output frame, and
    under them a strip of every output frame of the chunk. No frame is picked: a strobing output
    (random weights alternate bright and dark frames) shows as a strobing strip, not as whichever
    frame happened to be in the middle."""
    from PIL import Image, ImageDraw

    good = [n for n in notes if n.output_frames is not None]
    if len(good) > max_tiles:
        idx = np.linspace(0, len(good) - 1, max_tiles).round().astype(int)
        good = [good[i] for i in idx]
    oh, ow = good[0].output_frames.shape[1:3]
    scale = max(1, 192 // max(oh, 1))
    th, tw = oh * scale, ow * scale
    strip_w = 2 * tw + 4
    cap = 30
    count = max(len(n.output_frames) for n in good)
    sw = max(1, (strip_w - 2 * (count - 1)) // count)
    sh = max(1, round(sw * oh / ow))
    tile_w, tile_h = strip_w + 8, th + 4 + sh + cap + 8
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
        sheet.paste(Image.fromarray(n.output_mean).resize((tw, th), Image.NEAREST), (x0 + tw + 4, y0))
        for k, frame in enumerate(n.output_frames):
            sheet.paste(Image.fromarray(frame).resize((sw, sh), Image.NEAREST),
                        (x0 + k * (sw + 2), y0 + th + 4))
        text = n.prompts and max(n.prompts, key=lambda p: p[1])[0] or ""
        yc = y0 + th + 4 + sh + 2
        draw.text((x0, yc), f"chunk {n.chunk_index}  mean of {len(n.output_frames)}  "
                  f"ctx {n.context_scale:.2f}"
                  + (f"  v2v {n.noise_used:.2f}" if n.noise_used is not None else "")
                  + (f"  morph {n.morph[1]}/{n.morph[2]}" if n.morph else ""), fill=(230, 230, 230))
        draw.text((x0, yc + 13), text[:2 * tw // 6], fill=(160, 200, 255))
    sheet.save(path, format="PNG")
    return sheet.size


def effect(cue: Cue, notes: list[ChunkNote], surface: OscSurface) -> dict[str, Any]:
    """Which chunk first used a cue, and what changed."""
    during = next((n for n in reversed(notes) if n.boundary <= cue.sent_at), None)
    out: dict[str, Any] = {"sent_after_chunk": during.chunk_index if during else None}
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


def settled(cue: Cue, notes: list[ChunkNote], surface: OscSurface) -> bool:
    """Has the cue had its full effect (change used, morph finished, snapshot written)?"""
    later = [n for n in notes if n.boundary > cue.sent_at and n.error is None]
    if cue.params:
        return any(set(cue.params) & n.changed for n in later)
    if cue.address == "/vace/preset/load":
        return any(n.morph and n.morph[0] == cue.args[0] and n.morph[1] == n.morph[2] for n in later)
    return bool(_snapshot_notices(surface, cue.sent_at))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0



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
        when = f"sent at {c['sent_s']:.2f} s after chunk {c.get('sent_after_chunk')}"
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


def write_report(out: Path, *, notes: ChunkLog, cues: list[Cue], surface: OscSurface,
                 frames: list[np.ndarray], times: list[float], desc: dict[str, Any],
                 control_spec: str, control_size: tuple[int, int],
                 control_frames: int, out_spec: str, fps: float, pacer: Any, status: dict[str, Any],
                 t_start: float, elapsed: float, note: str) -> dict[str, Any]:
    """Write the MP4, the contact sheet and summary.json into `out`; returns the summary."""
    if not frames:
        raise RuntimeError("no output frame came back from the shared-memory output")
    mp4 = out / "vacelive-demo.mp4"
    span = times[-1] - times[0] if len(frames) > 1 else 0.0
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
        "chunk_latency_ms": {"p50": percentile(latencies, 50), "max": max(latencies, default=0.0)},
        "output": {"spec": out_spec, "frames_read_back": len(frames), "fps": out_fps,
                   "target_fps": fps, "held_frames": pacer.repeated, "dropped_frames": pacer.dropped,
                   "jitter_p50_ms": pacer.jitter_p50_ms, "jitter_p99_ms": pacer.jitter_p99_ms},
        "control_input": {"spec": control_spec, "frames_written": control_frames,
                          "size": list(control_size),
                          "window_shapes": sorted({str(n.video_shape) for n in good})},
        "osc": [{"address": c.address, "args": c.args, "what": c.what,
                 "sent_s": (c.sent_at - t_start) if c.sent_at else None,
                 **effect(c, notes.notes, surface)} for c in cues],
        "osc_feedback": {"messages": len(surface.inbox), "status": osc_status,
                         "notices": sorted({m[2][0] for m in surface.received("/vace/notice")}),
                         "errors": [m[2][0] for m in surface.received("/vace/error")]},
        "v2v": v2v_summary(good),
        "engine_notices": sorted({x for n in good for x in n.notices}),
        "status": status,
        "files": {"mp4": str(mp4), "mp4_frames": len(frames), "contact_sheet": str(sheet),
                  "contact_sheet_size": list(sheet_size), "size": [frames[0].shape[1], frames[0].shape[0]]},
        "elapsed_s": elapsed,
        "note": note,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
