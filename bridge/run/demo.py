"""`vacelive demo`: the real live loop end to end on a CPU, with no GPU and no weight files.

What runs is exactly what `vacelive serve` runs, with embedded defaults:
* generator: StreamGenerator.random("tiny") on the CPU (random weights: abstract output);
* input: a synthetic moving control video, written into a shared-memory ring by a thread
  (a different size than the generation size, so it is fitted like a real texture would be);
* the Session: FrameHistory → ChunkRequest per parameter snapshot → generator → Pacer → a
  shared-memory output ring, which the demo reads back like TouchDesigner would;
* control: real OSC datagrams over UDP to the running server (python-osc), from a "surface" that
  registers for feedback with /vace/hello: a prompt change, a context-scale change, a preset load
  with a 2-chunk morph, a V2V strength change, and a snapshot, each sent after a given chunk
  and used by the next one (deterministic: the cues follow chunk indices, not the clock);
* V2V restyle: input_mode video restyles the control video (it is VACE's control map and the
  V2V input at once); /vace/noise_scale lowers the strength mid-run;
* results: an MP4 of the output (PyAV), a PNG contact sheet per chunk (input, the chunk's mean
  output frame and a strip of all its frames; Pillow), summary.json, and a printed summary of what
  each OSC message changed and when it took effect.

The stage props (control pattern, read-back, OSC surface, cue player) are in demo_props.py, the
report (chunk log, MP4, contact sheet, summary) in demo_report.py.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from vacelive.bridge.osc import OscConfig
from vacelive.bridge.run.demo_props import Cue, CueSender, OscSurface, ReadBack, SyntheticControl
from vacelive.bridge.run.demo_report import ChunkLog, format_summary, settled, write_report
from vacelive.bridge.run.session import Session, SessionOptions
from vacelive.bridge.transports import ShmFrameSink, ShmFrameSource

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


def default_cues() -> list[Cue]:
    return [
        Cue(1, "/vace/prompt", [SECOND_PROMPT], "prompt change", ("prompts",)),
        Cue(2, "/vace/context_scale", [0.4], "VACE context scale 1.0 -> 0.4", ("context_scale",)),
        Cue(3, "/vace/preset/load", [PRESET, 2], f"user preset '{PRESET}', 2-chunk morph"),
        Cue(4, "/vace/noise_scale", [0.35], f"V2V strength (noise_scale) {V2V_STRENGTH} -> 0.35",
            ("noise_scale",)),
        Cue(5, "/vace/snapshot", [], "snapshot of the output frame"),
    ]


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
    control_size = (generator.width * 5 // 4, generator.height * 5 // 4)
    control = SyntheticControl(ShmFrameSink(f"{tag}c"), control_size).start()
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
        surface = OscSurface(session.osc.address)
        sender = CueSender(surface, cues, echo)
        session.loop.add_observer(notes)
        session.loop.add_observer(sender)  # cues at chunk indices, from the run loop's thread
        reader = ReadBack(ShmFrameSource(f"{tag}o")).start()
        echo(f"vacelive demo: {session.describe_io()}")
        echo(f"  model: {desc.get('pipeline')} tiny random weights, {generator.width}x"
             f"{generator.height}, codec {desc.get('codec')}, {desc.get('device')}, "
             f"{'VACE' if desc.get('vace') else 'text-only (no VACE in this build)'}")
        deadline = t_start + timeout
        if not notes.wait_done(chunks, deadline) or not sender.finished.wait(
                max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"the demo did not reach {chunks} chunks in {timeout:.0f} s")
        # Let the last cues finish (a morph's last step, the snapshot file), a few chunks at most.
        extra = notes.done + 4
        while not all(settled(c, notes.notes, surface) for c in cues) and notes.done < extra \
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

    summary = write_report(
        out, notes=notes, cues=cues, surface=surface, frames=reader.frames, times=reader.times,
        desc=desc, control_spec=ctl_spec,
        control_size=control_size, control_frames=control.frames, out_spec=out_spec, fps=fps,
        pacer=pacer, status=status, t_start=t_start, elapsed=elapsed, note=RANDOM_WEIGHTS_NOTE)
    for line in format_summary(summary):
        echo(line)
    return summary
