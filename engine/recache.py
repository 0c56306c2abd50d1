"""What a prompt cut re-caches (recipes with `recache_on_cut`: LongLive, MemFlow).

A hard cut at latent frame F re-runs the last n clean latents (frames F - n .. F - 1) once
through the DiT at the context timestep (0) under the new prompt, at their own start frame, which
rewrites their KV slots (engine.generator, `_recache`):

  "exact"   n = min(window, F): LongLive's re-cache of the whole attention window (the reference
            behaviour). At 832x480 that is one forward over 12 latent frames, about four chunk
            forwards, all spent before the cut chunk's first denoising pass: the cut chunk takes
            ~1.6x a plain chunk and the output cadence breaks (docs/PERFORMANCE.md).
  "newest"  n = min(chunk, F) with chunk = the recipe's latent frames per chunk: only the newest
            chunk's frames, in one forward of exactly a chunk's shape (the clean pass's compiled
            graph, and with CUDA graphs the previous chunk's clean-pass graph: the same slots).
            With LongLive's sink 3 + window 12 and 3-frame chunks, the cut chunk attends
            the sink (old prompt in both modes: global sink), 6 earlier frames and itself; "exact"
            re-caches all 6, "newest" the 3 newest, which are also the only earlier frames the
            next chunk still attends. From the second chunk after the cut on, both modes attend
            the same frames under the same prompts; the re-cached newest frames were computed with
            the 3 older ones still holding old-prompt K/V, so the streams differ slightly.
            The first cut after a reset (F <= chunk) re-caches the same frames in both modes.

"newest" re-caches exactly what the previous chunk's clean pass wrote (the same latents at the
same start frame and timestep), only under the new prompt: a pass that writes its own frames'
K/V before attending does not read what those slots held. So where the clean pass of a chunk is
deferred to (or fused into) the next chunk, the deferred pass run under the new prompt IS the
"newest" re-cache, and a cut then costs no extra forward. "exact" re-caches after the previous
clean pass, so a deferred clean pass would have to run before it, under the old prompt.

A recipe without `global_sink` empties the cache on a re-cache and re-bases it on the first
re-cached frame; re-caching fewer frames there would drop context, so it always re-caches the
window (no shipped recipe combines re-cache and no global sink).
"""
from __future__ import annotations

RECACHE_MODES = ("exact", "newest")


def recache_span(mode: str, recipe) -> int:
    """Latent frames a cut re-caches at most (before clamping to the frames generated so far)."""
    if mode not in RECACHE_MODES:
        raise ValueError(f"recache must be one of {RECACHE_MODES}, got {mode!r}")
    cache = recipe.cache
    if mode == "newest" and cache.global_sink:
        return min(recipe.frames_per_chunk, cache.local_frames)
    return cache.local_frames
