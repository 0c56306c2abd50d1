"""Per-pipeline KV-cache and attention policies: where a pipeline's math differs from the plain
sink + rolling window (engine.dit.kv_cache.SinkWindow), its rule lives here, one module per rule,
and the one DiT and the one VACE wrapper run it unchanged.

    cache_policy(recipe.cache) -> the slot policy a KVCache is built with
    reward_forcing   EmaSinkWindow: evicted frames EMA-merged into the sink (keys stored un-roped,
                     RoPE at attention time with window-relative positions)

    stream_policy(generator) -> None, or the per-chunk rule of a pipeline whose chunks differ
                     from "denoise, then one clean pass" (the generator calls its hooks:
                     apply_request, chunk_start, before_pass, after_chunk, reset, snapshot,
                     restore, describe; `clean_pass` says whether the clean pass runs)
    krea             KreaRecompute: cache rebuilt from clean context frames every chunk, RoPE
                     start clamped, log-bias on cached keys (kv_cache_attention_bias)
    memflow          MemFlowBank: LongLive cache + text-query-compressed memory bank

StreamDiffusionV2 needs no policy class: its rolling cache with 3 sink frames attended whole is
SinkWindow(6, 3) fed 1-latent-frame chunks (recipe.frames_per_chunk = 1).
"""
from __future__ import annotations

from vacelive.engine.dit.kv_cache import SinkWindow


def cache_policy(spec):
    """The slot policy for a recipe's `CachePolicy` (engine.pipelines)."""
    if spec.sink_ema is not None:
        from vacelive.engine.policies.reward_forcing import EmaSinkWindow

        return EmaSinkWindow(spec.local_frames, spec.sink_frames, alpha=spec.sink_ema)
    return SinkWindow(spec.local_frames, spec.sink_frames)


def stream_policy(generator):
    """The per-chunk stream rule of the generator's recipe, or None (module doc)."""
    cache = generator.recipe.cache
    if getattr(cache, "recompute_frames", 0):
        from vacelive.engine.policies.krea import KreaRecompute

        return KreaRecompute(generator)
    if getattr(cache, "bank_frames", 0):
        from vacelive.engine.policies.memflow import MemFlowBank

        return MemFlowBank(generator)
    return None
