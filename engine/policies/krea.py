"""Krea Realtime 14B: the KV cache is recomputed before every chunk from a few clean context
frames, and the chunk's attention down-weights the cached past (`kv_cache_attention_bias`).

Rule (Scope's krea_realtime_video port: blocks/recompute_kv_cache.py, blocks/prepare_context_frames.py,
modules/causal_model.py; model.yaml num_frame_per_block 3, kv_cache_num_frames K = 3, local_attn_size 6):
  * chunk 0: the cache starts empty; the chunk is denoised at frame positions 0..2.
  * every later chunk at stream frame s: the cache is rebuilt from K context latents,
        s - 3 <  K:  [latent 0, the last K - 1 latents]
        s - 3 >= K:  [VAE re-encode of the first of the last 1 + (K - 1) * 4 decoded pixel
                      frames, the last K - 1 latents]
    run once through the DiT at timestep 0 with frame positions 0..K-1 (the context frames
    attend to each other, no bias), then the chunk is denoised at start frame min(s, K): RoPE
    positions never pass K + 3, so the stream never leaves the RoPE table.
  * no clean pass after the chunk (the next chunk rebuilds the cache anyway).
  * attention of the denoising passes: keys = context frames + the chunk's own frames; every key
    except those of the first cached frame and of the current chunk gets log(bias) added to its
    logit (bias 1 = plain attention). The recompute pass attends only to its own frames, so no
    key of it is biased.
Implementation: one KVCache with SinkWindow(6, 0); `begin()` re-bases the cache on the first
context frame (origin = s - min(s, K)) so the frame-indexed slots give exactly those positions.
The bias is an additive float mask (broadcast over heads and queries) handed to SDPA, built
once per attended slot layout; Scope's flex_attention path additionally lets 128-alignment
padding keys into the softmax, which is not reproduced (the rule is defined on the real keys).
The re-encode takes the decoded frame in the decoder's [-1, 1] range through the codec's
one-shot image encoder (a fresh stream, like Scope's `encode_to_latent(..., use_cache=False)`).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from vacelive.engine.dit.kv_cache import CachedAttention

BIAS_RANGE = (0.01, 1.0)  # the OSC schema's /vace/kv_cache_attention_bias range


def biased_slots(slot_frame, attend, chunk_start: int, chunk_end: int, first_frame: int) -> list[bool]:
    """For every attended slot (in attend order): whether its keys get the bias: a cached frame
    that is neither the cache's first frame nor a frame of the current chunk."""
    out = []
    for a, b in attend:
        for s in range(a, b):
            f = slot_frame[s]
            out.append(f is not None and f != first_frame and not chunk_start <= f < chunk_end)
    return out


class BiasedAttention(CachedAttention):
    """CachedAttention whose `mask` adds log(bias) to the logits of the biased keys."""

    def __init__(self, cache, plan, q_freqs, k_freqs):
        super().__init__(cache, plan, q_freqs, k_freqs)
        bias = getattr(cache, "attention_bias", 1.0)
        start, end = cache.pass_frames
        if bias == 1.0 or start is None:
            return
        flags = biased_slots(plan.state.slot_frame, plan.attend, start, end, 0)
        if any(flags):
            self.mask = cache.bias_mask(tuple(flags), bias)


class KreaRecompute:
    """The Krea stream rule above, driven by the generator (engine.policies.stream_policy)."""

    clean_pass = False

    def __init__(self, generator):
        cache = generator.recipe.cache
        self.gen = generator
        self.context_frames = cache.recompute_frames  # K
        self.chunk = generator.frames_per_chunk
        self.default_bias = cache.attention_bias if cache.attention_bias is not None else 1.0
        kv = generator.kv
        kv.attention_class = BiasedAttention
        kv.attention_bias = self.default_bias
        kv.pass_frames = (None, None)  # (start, end) of the chunk being denoised, origin-relative
        kv._bias_masks = {}
        kv.bias_mask = lambda flags, bias, kv=kv: _bias_mask(kv, flags, bias)
        self.first_latent: torch.Tensor | None = None  # latent 0 of the stream
        self.decoded_first: torch.Tensor | None = None  # [1, 3, 1, H, W] in [-1, 1]
        self.recomputes = 0

    # ---- generator hooks ----------------------------------------------------------------------
    def apply_request(self, request, notices: list[str]) -> None:
        value = getattr(request, "kv_cache_attention_bias", self.default_bias)
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            v = math.nan
        if math.isnan(v):
            notices.append(f"kv_cache_attention_bias {value!r} is not a number: using {self.default_bias}")
            v = self.default_bias
        fixed = min(max(v, BIAS_RANGE[0]), BIAS_RANGE[1])
        if fixed != v:
            notices.append(f"kv_cache_attention_bias {value!r} out of range {BIAS_RANGE[0]:g}..{BIAS_RANGE[1]:g}: "
                           f"using {fixed:g}")
        self.gen.kv.attention_bias = fixed

    def chunk_start(self, plan) -> int:
        """Rebuild the cache for the chunk at the generator's frame; returns its start frame."""
        gen, kv = self.gen, self.gen.kv
        frame = gen.frame
        clamp = min(frame, self.context_frames)
        kv.reset(origin=frame - clamp)
        kv.pass_frames = (None, None)
        if frame > 0:
            context = self.context(frame)
            gen.model(context, plan.context_tensor, gen.text, kv, frame - clamp,
                      add_condition=self.context_condition(context.shape[2], frame))
            self.recomputes += 1
        n = gen.next_chunk_latents
        kv.pass_frames = (clamp, clamp + n)
        return frame

    def context_condition(self, frames: int, frame: int) -> torch.Tensor | None:
        """Pose tokens of the context: the recent latents re-run with the conditions they were
        generated with (engine.pose), the re-encoded first frame without one (zeros)."""
        pose = self.gen.pose
        recent = pose.condition_for(frame - (frames - 1), frames - 1) if pose is not None and frames > 1 else None
        if recent is None:
            return None
        per = recent.shape[1] // (frames - 1)
        return torch.cat([torch.zeros_like(recent[:, :per]), recent], 1)

    def context(self, frame: int) -> torch.Tensor:
        """The K clean context latents [1, 16, K, h, w] for the chunk at `frame`."""
        k = self.context_frames
        recent = self.gen.history.last(k - 1) if k > 1 else None
        if frame - self.chunk < k:
            first = self.first_latent
        else:
            codec = self.gen.codec
            first = codec.encode_image(self.decoded_first[:, :, 0].to(codec.dtype)).float()
        first = first.to(device=self.gen.device, dtype=torch.float32)
        return first if recent is None else torch.cat([first, recent.to(first.dtype)], dim=2)

    def before_pass(self, kind: str, step: int = 0) -> None:
        pass

    def after_chunk(self, x0: torch.Tensor, decoded: torch.Tensor) -> None:
        """Keep what the next recompute needs: latent 0 and the first of the last
        1 + (K - 1) * 4 decoded frames (decoded [1, 3, F, H, W] in [-1, 1])."""
        if self.gen.chunk_index == 0:
            self.first_latent = x0[:, :, :1].clone()
        keep = 1 + (self.context_frames - 1) * 4
        i = max(decoded.shape[2] - keep, 0)
        self.decoded_first = decoded[:, :, i:i + 1].clone()

    def reset(self) -> None:
        self.first_latent = self.decoded_first = None
        self.gen.kv.pass_frames = (None, None)

    def snapshot(self) -> Any:
        return self.first_latent, self.decoded_first

    def restore(self, saved: Any) -> None:
        self.first_latent, self.decoded_first = saved

    def describe(self) -> dict[str, Any]:
        return {"kv_recompute_frames": self.context_frames,
                "kv_cache_attention_bias": self.gen.kv.attention_bias}


def _bias_mask(kv, flags: tuple[bool, ...], bias: float) -> torch.Tensor:
    """Additive SDPA mask [1, 1, 1, M] (M = attended keys): log(bias) on the keys of flagged
    slots, 0 elsewhere; in the cache dtype (the logits' dtype), cached per layout and bias."""
    key = (flags, bias)
    mask = kv._bias_masks.get(key)
    if mask is None:
        ft = kv.frame_tokens
        per_slot = torch.tensor([math.log(bias) if f else 0.0 for f in flags], dtype=torch.float32)
        mask = per_slot.repeat_interleave(ft).to(device=kv.storage.device, dtype=kv.storage.dtype)
        mask = mask.view(1, 1, 1, -1)
        if len(kv._bias_masks) > 16:
            kv._bias_masks.clear()
        kv._bias_masks[key] = mask
    return mask
