#!/usr/bin/env python
"""Prompt cuts on stage: does the output cadence survive a cut every 2 s, before and after the
stream passes the 1024-frame RoPE table end, and does anything compile during the show?

The real run loop (bridge.run.loop.RunLoop: parameter snapshot -> request -> StreamGenerator.step
-> Pacer -> sink) drives a random full-size Wan2.1-1.3B + VACE (LongLive recipe, TAE codec) with
a synthetic moving depth video as control; a timer thread alternates the prompt every
--cut-every seconds (each change is a hard cut: transition 0). The sink is a shared-memory sink
(its device-to-host copy on the pacer thread, as `vacelive serve` on Linux) that timestamps every
frame. Phases, in this order (the JSON is rewritten after each, so a run cut short keeps them):

  warmup       engine.warmup: every forward shape and RoPE mode the stream can reach, compiled at
               start-up (seconds, compiles, signatures)
  first_frame  ms from a request to the first decoded frames on the host after a reset (warm)
  fixed        --seconds of fixed 24 fps output with cuts
  long         the stream runs flat out past latent frame 1024 (RoPE switches to window-relative):
               --long-chunks chunks; --jump-to F first moves the running stream (window full) to
               latent frame F without generating the frames in between (KV slots and latent
               history kept as they are: equivalent for timing and shapes, not for the picture),
               so the switch is reached in a few dozen chunks instead of ~340
  fixed_after  the same as fixed, past the switch; `follow_after`: --follow-seconds following
               the generation rate with cuts
  follow       the same following, after a reset (before the switch)
  exact        (--compare-exact) the same cuts flat out with recache "exact" (warmed too):
               cut-chunk ratio before and after the switch

Per live phase, at the sink: output interval p50/p99/max, stalls (intervals > 1.5x the intended
one: 1/fps fixed, the median interval following), jitter |interval - intended| p50/p99, frames
the pacer held/dropped; per chunk: cut chunks' time / the median plain chunk's (ratio), their
re-cache ms; recompiles (TorchDynamo compilations during chunks) and eager fall-backs.

    python scripts/bench_cuts.py --out cuts.json                      # H200: 832x480, 60 s + 60 s
    python scripts/bench_cuts.py --jump-to 960 --long-chunks 40 --seconds 40 --follow-seconds 10
    python scripts/bench_cuts.py --smoke --out /tmp/cuts.json         # CPU, tiny model, seconds
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stream import add_stream_args, depth_video, device_name, stream_kwargs  # noqa: E402

from vacelive.bridge.run.generators import GeneratorWrapper  # noqa: E402
from vacelive.bridge.run.loop import RunLoop  # noqa: E402
from vacelive.bridge.store import ParamStore  # noqa: E402
from vacelive.engine.dit.compile import compile_count  # noqa: E402
from vacelive.engine.generator import StreamGenerator  # noqa: E402
from vacelive.engine.request import ChunkRequest, Prompt  # noqa: E402

SETTLE_CHUNKS = 3  # chunks before a live phase is measured (as scripts/bench_pacer_live.py)
PROMPTS = ("a neon city street at night, rain, reflections, slow camera move",
           "a quiet forest lake at dawn, mist over the water")


class DepthControl(GeneratorWrapper):
    """The control video as the run loop would hand it over (host uint8 frames, the newest
    next_chunk_frames of a looping depth video), plus hint reuse (the fast path)."""

    def __init__(self, inner, video: np.ndarray | None, hint_reuse: bool):
        super().__init__(inner)
        self.video, self.hint_reuse, self.pos = video, hint_reuse, 0

    def step(self, request):
        if self.video is not None:
            n = self.inner.next_chunk_frames
            idx = [(self.pos + i) % len(self.video) for i in range(n)]
            self.pos += n
            request = replace(request, video=self.video[idx], hint_reuse=self.hint_reuse)
        return self.inner.step(request)


class TimedSink:
    """Stamps each frame when the sink has taken it, and how long the send took (the pacer
    thread's own work per tick: the device-to-host copy and the shared-memory write)."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.times: list[float] = []
        self.send_ms: list[float] = []

    def send(self, frame) -> None:
        t0 = time.perf_counter()
        if self.sink is not None:
            self.sink.send(frame)
        elif hasattr(frame, "cpu"):
            frame.cpu()
        t1 = time.perf_counter()
        self.times.append(t1)
        self.send_ms.append((t1 - t0) * 1e3)


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def recompiles(gen) -> dict:
    blocks = gen._restore_compile
    graphs = gen.describe().get("cuda_graphs")
    return {"recompiles": gen.counters["recompiles"], "compiles_total": compile_count(),
            "eager_calls": blocks.eager_calls if blocks is not None else 0,
            "graph_captures": graphs.get("captures", 0) if isinstance(graphs, dict) else 0}


def chunk_stats(records) -> dict:
    """Cut chunks (the prompt differs from the previous chunk's) against the plain ones."""
    ok = [r for r in records if r.error is None and r.result is not None]
    plain, cuts = [], []
    prev = None
    for r in ok:
        prompt = r.snapshot["prompt"]
        (cuts if prev is not None and prompt != prev else plain).append(r)
        prev = prompt
    plain_ms = statistics.median([r.latency_ms for r in plain]) if plain else float("nan")
    ratios = [r.latency_ms / plain_ms for r in cuts] if plain else []
    return {
        "chunks": len(ok), "cut_chunks": len(cuts),
        "plain_chunk_ms": {"p50": plain_ms, "p99": pct([r.latency_ms for r in plain], 99)},
        "cut_chunk_ms": [round(r.latency_ms, 1) for r in cuts],
        "cut_recache_ms": [round(r.result.timings_ms.get("recache", 0.0), 1) for r in cuts],
        "cut_ratio": {"max": max(ratios, default=float("nan")),
                      "p50": statistics.median(ratios) if ratios else float("nan")},
        "errors": len(records) - len(ok),
    }


class GcPauses:
    """Python garbage-collector pauses while it is open (gc.callbacks): a collection holds the
    GIL, so the pacer thread cannot tick during it."""

    def __init__(self):
        self.pauses: list[tuple[int, float]] = []  # (generation, ms)
        self._t0 = 0.0

    def _callback(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._t0) * 1e3))

    def __enter__(self):
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict:
        out = {}
        for g in (0, 1, 2):
            ms = [m for gen, m in self.pauses if gen == g]
            out[f"gen{g}"] = {"count": len(ms), "max_ms": round(max(ms, default=0.0), 2),
                              "total_ms": round(sum(ms), 1)}
        return out


def live_phase(gen, wrapped, fps: float, seconds: float, cut_every: float, args, tag: str,
               headroom: float | None = None, pacer_options: dict | None = None) -> dict:
    """The run loop with paced output for `seconds`, a prompt cut every `cut_every` s."""
    sink_impl = None
    if not args.smoke and sys.platform.startswith("linux"):
        from vacelive.bridge.transports import ShmFrameSink

        sink_impl = ShmFrameSink(f"bc{os.getpid() % 10000}{tag}")
    sink = TimedSink(sink_impl)
    store = ParamStore(initial={"output_fps": fps, "prompt": PROMPTS[0], "steps": args.steps,
                                "video_enabled": False})
    if headroom is not None:
        store.set("pacer_headroom", headroom)
    records = []
    loop = RunLoop(wrapped, store, sink, pacer_options=pacer_options or {})
    loop.add_observer(records.append)
    before = recompiles(gen)
    stop = threading.Event()

    def cutter():
        i = 0
        while not stop.wait(cut_every):
            i += 1
            store.set("prompt", PROMPTS[i % 2])

    loop.start()
    try:
        # Measure from the settled state: SETTLE_CHUNKS chunks done, so that following the
        # generation rate the pacer has its measured rate (a fresh pacer plays its first chunks at
        # its initial 24 fps, which is start-up, not jitter).
        deadline = time.monotonic() + 120
        while (sum(r.error is None for r in records) < SETTLE_CHUNKS or not sink.times) \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        t0 = time.perf_counter()
        n0, stats0 = len(records), loop.pacer.stats
        thread = threading.Thread(target=cutter, daemon=True)
        with GcPauses() as gc_pauses:
            thread.start()
            switch_interval = sys.getswitchinterval()  # while the pacer runs
            time.sleep(seconds)
        t1 = time.perf_counter()
        stop.set()
        stats1 = loop.pacer.stats
        run = records[n0:]
    finally:
        stop.set()
        loop.stop()
        if sink_impl is not None:
            sink_impl.close()
    inside = [i for i, t in enumerate(sink.times) if t0 <= t <= t1]
    times = np.array([sink.times[i] for i in inside])
    send_ms = np.array([sink.send_ms[i] for i in inside])
    iv = np.diff(times)
    intended = 1.0 / fps if fps else (float(np.median(iv)) if iv.size else float("nan"))
    jit = np.abs(iv - intended)
    after = recompiles(gen)
    return {
        "mode": f"fixed {fps:g} fps" if fps else "follow generation",
        "seconds": seconds, "cut_every_s": cut_every, "frames_out": int(times.size),
        "fps_out": (times.size - 1) / (times[-1] - times[0]) if times.size > 1 else 0.0,
        "intended_interval_ms": intended * 1e3,
        "interval_ms": {"p50": pct(iv, 50) * 1e3, "p99": pct(iv, 99) * 1e3,
                        "max": float(iv.max() * 1e3) if iv.size else float("nan")},
        "jitter_ms": {"p50": pct(jit, 50) * 1e3, "p99": pct(jit, 99) * 1e3},
        "stalls": int((iv > 1.5 * intended).sum()),
        "held": stats1.repeated - stats0.repeated, "dropped": stats1.dropped - stats0.dropped,
        "pacer_tick_jitter_ms": {"p50": stats1.jitter_p50_ms, "p99": stats1.jitter_p99_ms},
        "send_ms": {"p50": pct(send_ms, 50), "p99": pct(send_ms, 99),
                    "max": float(send_ms.max()) if send_ms.size else float("nan")},
        "largest_intervals_ms": sorted((round(v * 1e3, 1) for v in iv), reverse=True)[:12],
        "gc": gc_pauses.summary(), "gil_switch_interval_ms": switch_interval * 1e3,
        **chunk_stats(run),
        "recompiles": after["recompiles"] - before["recompiles"],
        "eager_calls": after["eager_calls"] - before["eager_calls"],
        "graph_captures": after["graph_captures"] - before["graph_captures"],
        "frame_at_end": gen.frame, "rope_mode": gen.kv.rope_mode,
    }


def follow_variant(gen, wrapped, variant: str, args, tag: str) -> dict:
    """One follow phase (after a reset) under the settings of `variant` (--follow-variants)."""
    settings = dict(item.partition("=")[::2] for item in variant.split("+"))
    headroom = float(settings["headroom"]) if "headroom" in settings else None
    options = {}
    if "gil" in settings:  # the switch interval the phase's pacer asks for (0: leave the interpreter's)
        ms = float(settings["gil"])
        options["gil_switch_interval"] = ms / 1e3 if ms > 0 else None
    if "freeze" in settings:
        gc.collect()
        gc.freeze()
    gen.defer_clean_pass = "deferred" in settings
    limit = None
    if "inflight" in settings and gen.graphs is not None:  # CUDA graph replays queued at once
        limit, gen.graphs.in_flight.limit = gen.graphs.in_flight.limit, int(settings["inflight"])
    try:
        gen.reset()
        out = live_phase(gen, wrapped, 0.0, args.follow_seconds, args.cut_every, args, tag, headroom=headroom,
                         pacer_options=options)
    finally:
        del gen.defer_clean_pass  # back to the class default
        if limit is not None:
            gen.graphs.in_flight.limit = limit
        if "freeze" in settings:
            gc.unfreeze()
    out["variant"] = settings
    return out


def jump(gen, to_frame: int) -> None:
    """Move a running stream to latent frame `to_frame` without generating the frames in between
    (module docstring: timing- and shape-equivalent, not picture-equivalent)."""
    step = gen.recipe.frames_per_chunk
    to_frame -= to_frame % step
    if to_frame > gen.frame:
        gen.frame = to_frame
        gen.history.head = to_frame


def flat_chunks(gen, wrapped, count: int, cut_every_chunks: int = 0, sync=None) -> dict:
    """`count` chunks back to back (no pacer); a cut every `cut_every_chunks` chunks."""
    plain, cuts, recache = [], [], []
    before = recompiles(gen)
    prompt = 0
    for i in range(count):
        cut = bool(cut_every_chunks) and i > 0 and i % cut_every_chunks == 0
        prompt ^= int(cut)
        t0 = time.perf_counter()
        r = wrapped.step(ChunkRequest(prompts=[Prompt(PROMPTS[prompt])], steps=gen.schedule.max_steps))
        if sync:
            sync()
        ms = (time.perf_counter() - t0) * 1e3
        (cuts if cut else plain).append(ms)
        if cut:
            recache.append(r.timings_ms.get("recache", 0.0))
    after = recompiles(gen)
    p50 = statistics.median(plain) if plain else float("nan")
    return {"chunks": count, "plain_chunk_ms": {"p50": p50, "max": max(plain, default=float("nan"))},
            "cut_chunk_ms": [round(v, 1) for v in cuts], "cut_recache_ms": [round(v, 1) for v in recache],
            "cut_ratio": {"max": max((c / p50 for c in cuts), default=float("nan")),
                          "p50": statistics.median([c / p50 for c in cuts]) if cuts else float("nan")},
            "recompiles": after["recompiles"] - before["recompiles"],
            "eager_calls": after["eager_calls"] - before["eager_calls"],
            "frame_at_end": gen.frame, "rope_mode": gen.kv.rope_mode,
            "rope_switches": gen.counters["rope_switches"]}


def build(args, device, dtype):
    common = dict(width=args.width, height=args.height, codec=args.codec, device=device, dtype=dtype,
                  vace=args.mode == "depth", recipe="longlive", recache=args.recache, **stream_kwargs(args))
    if args.smoke:
        from vacelive.engine.config import tiny_config

        cfg = tiny_config(num_layers=2).with_(rope_max_positions=args.table)
        return StreamGenerator.random("tiny", cfg=cfg, **common)
    return StreamGenerator.random("full", **common)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--codec", default="tae", choices=("wan", "tae", "lighttae"))
    p.add_argument("--mode", default="depth", choices=("depth", "text"))
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--recache", default="newest", choices=("exact", "newest"),
                   help="what a cut re-caches (engine.recache)")
    add_stream_args(p)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--no-fp8", dest="fp8", action="store_false")
    p.add_argument("--no-hint-reuse", dest="hint_reuse", action="store_false")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (smoke: eager)")
    p.add_argument("--fps", type=float, default=24.0, help="fixed output rate of the fixed phases")
    p.add_argument("--seconds", type=float, default=60.0, help="fixed-fps seconds per stage")
    p.add_argument("--follow-seconds", type=float, default=20.0, help="follow-mode seconds per stage")
    p.add_argument("--cut-every", type=float, default=2.0, help="seconds between prompt cuts")
    p.add_argument("--long-chunks", type=int, default=400, help="flat-out chunks of the long run")
    p.add_argument("--jump-to", type=int, default=0, help="latent frame to jump to before the long run "
                   "(0: none; see the docstring)")
    p.add_argument("--compare-exact", action="store_true", help="also time cuts with recache exact")
    p.add_argument("--follow-variants", default="",
                   help="extra follow phases after the others, comma list of "
                   "'+'-joined settings: headroom=F (frames), gil=MS (the pacer's GIL switch interval; "
                   "0 = leave the interpreter's), freeze (gc.freeze() first), deferred (every chunk's "
                   "clean K/V pass at the start of the next step, StreamGenerator.defer_clean_pass), inflight=N "
                   "(CUDA graph replays queued at once, engine.dit.graphs.InFlight; 0 = no limit), e.g. "
                   "'gil=0,freeze,headroom=4+freeze'")
    p.add_argument("--phases", default="fixed,long,fixed_after,follow_after,follow",
                   help="live/long phases to run, of fixed,long,fixed_after,follow_after,follow")
    p.add_argument("--budget", type=float, default=0.0, help="seconds; later phases are skipped past it")
    p.add_argument("--table", type=int, default=1024, help="RoPE table (smoke only: a short one)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.width, args.height, args.codec = 64, 48, "tae"
        args.fp8, args.compile_backend = False, args.compile_backend or "eager"
        args.seconds, args.follow_seconds = min(args.seconds, 1.5), min(args.follow_seconds, 1.0)
        args.cut_every, args.steps, args.table = min(args.cut_every, 0.4), min(args.steps, 2), min(args.table, 48)
        args.long_chunks, args.jump_to = min(args.long_chunks, 12), args.jump_to or 24
        torch.set_num_threads(1)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.perf_counter()
    out: dict = {"env": {"device": device_name(device),
                         "torch": torch.__version__, "size": f"{args.width}x{args.height}", "codec": args.codec,
                         "mode": args.mode, "steps": args.steps, "recache": args.recache, "compile": args.compile,
                         "fp8": args.fp8, "hint_reuse": args.hint_reuse and args.mode == "depth",
                         "model": "tiny (smoke)" if args.smoke else "wan2.1-1.3b + VACE (random weights)",
                         "jump_to": args.jump_to, "long_chunks": args.long_chunks, **stream_kwargs(args)}}

    def save(phase: str, value) -> None:
        out[phase] = value
        out["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        print(f"{phase}: {json.dumps(value, default=float)}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2, default=float))

    phases = {v.strip() for v in args.phases.split(",") if v.strip()}

    def past_budget(phase: str) -> bool:
        if args.budget and time.perf_counter() - t_start > args.budget:
            save(phase, {"skipped": f"past the {args.budget:g} s budget"})
            return True
        return False

    def over_budget(phase: str) -> bool:
        if phase != "exact" and phase not in phases:
            return True  # not asked for
        return past_budget(phase)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    gen = build(args, device, dtype)
    if args.fp8:
        gen.set_fp8(True)
    if args.compile:
        gen.set_compile(True, **({"backend": args.compile_backend} if args.compile_backend else {}))
    video = depth_video(args.width, args.height) if args.mode == "depth" else None
    wrapped = DepthControl(gen, video, args.hint_reuse)
    out["env"]["build_s"] = round(time.perf_counter() - t0, 1)
    save("warmup", gen.warm_up())

    firsts, stages = [], []
    before = recompiles(gen)
    for _ in range(5):
        gen.reset()
        sync()
        t0 = time.perf_counter()
        r = wrapped.step(ChunkRequest(prompts=[Prompt(PROMPTS[0])], steps=args.steps))
        r.frames.cpu()
        firsts.append((time.perf_counter() - t0) * 1e3)
        stages.append(r.timings_ms)
        first_frames = int(r.frames.shape[0])
    # the same request on a running stream (window full), for comparison
    for _ in range(4):
        r = wrapped.step(ChunkRequest(prompts=[Prompt(PROMPTS[0])], steps=args.steps))
    sync()
    t0 = time.perf_counter()
    r = wrapped.step(ChunkRequest(prompts=[Prompt(PROMPTS[0])], steps=args.steps))
    r.frames.cpu()
    after = recompiles(gen)
    save("first_frame", {"ms": [round(v, 1) for v in firsts], "p50": statistics.median(firsts),
                         "frames": first_frames,
                         "stages_ms": {k: round(statistics.median(t.get(k, 0.0) for t in stages), 1)
                                       for k in stages[0]},
                         "steady_chunk_ms": round((time.perf_counter() - t0) * 1e3, 1),
                         "steady_stages_ms": {k: round(v, 1) for k, v in r.timings_ms.items()},
                         "recompiles": after["recompiles"] - before["recompiles"],
                         "eager_calls": after["eager_calls"] - before["eager_calls"]})
    gen.reset()

    # Most telling first (a run cut short by --budget keeps them): fixed before the switch, the
    # long run, fixed and follow after it, then follow before it (after a reset) and --compare-exact.
    if not over_budget("fixed"):
        save("fixed", live_phase(gen, wrapped, args.fps, args.seconds, args.cut_every, args, "a"))
    if not over_budget("long"):
        t0 = time.perf_counter()
        jump(gen, args.jump_to)
        long = flat_chunks(gen, wrapped, args.long_chunks, sync=sync)
        long["seconds"] = round(time.perf_counter() - t0, 1)
        if device.type == "cuda":
            long["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        long["past_table_end"] = gen.kv.rope_mode == "relative"
        save("long", long)
    if not over_budget("fixed_after"):
        save("fixed_after", live_phase(gen, wrapped, args.fps, args.seconds, args.cut_every, args, "c"))
    if not over_budget("follow_after"):
        save("follow_after", live_phase(gen, wrapped, 0.0, args.follow_seconds, args.cut_every, args, "d"))
    if not over_budget("follow"):
        gen.reset()
        save("follow", live_phase(gen, wrapped, 0.0, args.follow_seconds, args.cut_every, args, "b"))
    for i, variant in enumerate(v for v in args.follow_variants.split(",") if v.strip()):
        if not past_budget(f"follow_variant_{variant}"):
            save(f"follow_variant_{variant}", follow_variant(gen, wrapped, variant, args, f"v{i}"))
    if args.compare_exact and not over_budget("exact"):
        other = "exact" if args.recache == "newest" else "newest"
        gen.recache = other
        warm = gen.warm_up()  # the other mode's re-cache shapes too; resets the stream
        before = flat_chunks(gen, wrapped, 16, cut_every_chunks=3, sync=sync)
        jump(gen, max(args.jump_to, gen.frame))
        flat_chunks(gen, wrapped, max(0, (gen.model.cfg.rope_max_positions - gen.frame) // 3 + 2), sync=sync)
        after = flat_chunks(gen, wrapped, 10, cut_every_chunks=3, sync=sync)
        gen.recache = args.recache
        save("compare", {"recache": other, "warmup": warm, "before_switch": before, "after_switch": after})
    out["generator"] = {k: v for k, v in gen.describe().items() if k != "pose"}
    out["counters"] = dict(gen.counters)
    save("done", {"elapsed_s": round(time.perf_counter() - t_start, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
