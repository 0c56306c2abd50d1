"""Start-up warm-up: every DiT forward shape and RoPE mode a stream can reach, run once before the
show, so that nothing compiles during it (engine.dit.compile).

A compiled block graph is specialised on its call signature: the latent frames of the forward and
whether the chunk's keys are rotated (absolute RoPE) or stored un-rotated (window-relative, after
the 1024-frame table end). `reachable_shapes` lists every one a recipe can produce:

  KV-cache forwards, in each reachable RoPE mode (the start mode; "relative" too when the stream
  can pass the table end, i.e. rope "auto"/"absolute" and a cache that is not rebuilt per chunk):
    the first chunk after a reset and every later chunk (denoising and clean passes),
    every re-cache length a prompt cut can have (engine.recache: min(span, F) for each frame F a
    chunk can start at; past the table end F > window, so only the full span),
    Krea's context recompute.
  VACE hint forwards (local attention, keys always rotated): the chunk, or P = 1..3 reference
  frames in front of it (R2V), for the first and the later chunk lengths.

`warm_up` runs each of them once through the generator's model and KV cache with zero inputs,
under the generator's SDPA setting and no_grad (what dynamo guards on), then `real_chunks` real
chunks (codec, conditioner with a blank control video, allocator), and resets the stream. With
compiled blocks or a compiled codec it records the signatures and seals them: a signature
outside the set later runs eagerly (and is counted) instead of compiling mid-show.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

MAX_REFS = 3  # engine.conditioning.tasks.MAX_REFS: reference images, one latent frame each


@dataclass(frozen=True, order=True)
class ForwardShape:
    kind: str  # "kv" (through the KV cache) or "hints" (the VACE hint stream)
    rope_mode: str  # KV cache mode: "absolute" / "relative"; hints use local positions ("local")
    frames: int  # latent frames of the forward (hints: prefix + chunk)
    prefix: int = 0  # hints: reference frames in front of the chunk


def start_rope_mode(recipe, rope: str) -> str:
    return "relative" if rope == "relative" or recipe.cache.unroped_keys else "absolute"


def reachable_shapes(recipe, *, rope: str = "auto", recache: str = "exact", vace: bool = False,
                     max_refs: int = MAX_REFS) -> list[ForwardShape]:
    """Every forward a stream of `recipe` can run (module docstring), sorted, without duplicates."""
    from vacelive.engine.recache import recache_span

    cache = recipe.cache
    first, steady = recipe.chunk_latents(True), recipe.chunk_latents(False)
    window = cache.local_frames
    start = start_rope_mode(recipe, rope)
    shapes: set[ForwardShape] = set()

    def kv(mode: str, frames: int) -> None:
        shapes.add(ForwardShape("kv", mode, frames))

    # Chunks from a reset on (start mode): first chunk, then later chunks.
    kv(start, first)
    kv(start, steady)
    span = recache_span(recache, recipe) if cache.recache_on_cut else 0
    if span:
        f = first  # a cut happens at a chunk boundary with f > 0 frames behind it
        while True:
            kv(start, min(span, f))
            if f >= window:
                break
            f += steady
    if cache.recompute_frames:
        kv(start, cache.recompute_frames)
    # Past the table end (only a cache that keeps frames can get there): later chunks, full re-cache.
    if start == "absolute" and not cache.recompute_frames:
        kv("relative", steady)
        if span:
            kv("relative", span)
    if vace:
        for n in {first, steady}:
            for p in range(max_refs + 1):
                shapes.add(ForwardShape("hints", "local", p + n, p))
    return sorted(shapes)


def warm_up(gen, real_chunks: int = 2) -> dict[str, Any]:
    """Run every reachable forward once (compiling it when the blocks are compiled), then
    `real_chunks` real chunks, and reset the stream. Returns what was done (for the start-up log)."""
    from vacelive.engine.dit.attention import sdpa_context
    from vacelive.engine.dit.compile import compile_count
    from vacelive.engine.request import ChunkRequest, Prompt

    model = gen.model
    cfg = model.cfg
    shapes = reachable_shapes(gen.recipe, rope=gen.rope, recache=gen.recache,
                              vace=hasattr(model, "compute_hints"))
    compiled = gen._restore_compile  # engine.dit.compile.CompiledBlocks or None
    codec_compiled = getattr(gen.codec, "compiled_methods", None)  # Codec.use_compile
    counters = dict(gen.counters)
    t0, c0 = time.perf_counter(), compile_count()
    h, w = gen.height // 8, gen.width // 8
    dev = gen.device
    failed: list[str] = []
    gen._warming_up = True
    try:
        with torch.no_grad(), sdpa_context(gen.sdpa), contextlib.ExitStack() as warming:
            for c in (compiled, codec_compiled):
                if c is not None:
                    warming.enter_context(c.warming())
            text = model.prepare_text(torch.zeros(1, 1, cfg.text_dim, device=dev, dtype=gen.dtype))
            t = torch.zeros((), device=dev)
            for shape in shapes:
                try:
                    _run_shape(gen, shape, text, t, h, w)
                except Exception as exc:  # a policy that needs more state: its real chunks still run
                    failed.append(f"{shape}: {type(exc).__name__}: {exc}")
                    log.warning("warm-up of %s failed (%s: %s); it compiles when first used",
                                shape, type(exc).__name__, exc)
            gen.reset()
            for i in range(real_chunks):
                # a control video when VACE can read one: the codec's encode shapes compile too
                video = None if gen.conditioner is None else \
                    np.zeros((gen.next_chunk_frames, gen.height, gen.width, 4), np.uint8)
                gen.step(ChunkRequest(prompts=[Prompt("warm-up")], steps=gen.schedule.max_steps, video=video))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
    finally:
        gen._warming_up = False
        gen.reset()
        gen.counters.clear()
        gen.counters.update(counters)
    report = {"shapes": len(shapes), "compiles": compile_count() - c0,
              "signatures": len(compiled.allowed) if compiled is not None else 0,
              "codec_signatures": len(codec_compiled.allowed) if codec_compiled is not None else 0,
              "seconds": round(time.perf_counter() - t0, 2), "failed": failed}
    log.info("warm-up: %d forward shapes (%s), %d compiles, %.1f s", report["shapes"],
             ", ".join(f"{s.kind}/{s.rope_mode}/{s.frames}" for s in shapes), report["compiles"], report["seconds"])
    return report


def _run_shape(gen, shape: ForwardShape, text, t, h: int, w: int) -> None:
    model, kv, cfg, dev = gen.model, gen.kv, gen.model.cfg, gen.device
    x = torch.zeros(1, cfg.in_dim, shape.frames - shape.prefix, h, w, device=dev)
    if shape.kind == "kv":
        kv.reset(0)
        kv.set_rope_mode(shape.rope_mode)  # empty cache: nothing to rotate
        if gen.stream is not None:
            gen.stream.reset()
        model(x, t, text, kv, 0)
        return
    ctx = torch.zeros(1, model.vace_in_dim, shape.frames, h, w, device=dev, dtype=gen.dtype)
    prefix = torch.zeros(1, cfg.in_dim, shape.prefix, h, w, device=dev, dtype=gen.dtype) if shape.prefix else None
    model.compute_hints(x, t, text, ctx, vace_prefix=prefix)
