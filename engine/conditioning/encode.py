"""Streaming VACE encoding: one chunk's pixels and mask -> its 96-channel context (the
VACE encoding path of ali-vilab/VACE `vace/models/wan/wan_vace.py`: vace_encode_frames/masks/latent).

Per chunk, exactly the original math on the chunk's frames:
    m = (mask > 0.5);  inactive = video * (1 - m);  reactive = video * m
    z = [encode(inactive) (16 ch) | encode(reactive) (16 ch)]      each with ITS OWN encoder stream
    masks: the 8x8 pixel sub-grid folded into 64 channels, resampled in time nearest-exact to the
           chunk's latent frames (12 -> 3 picks frames [2, 6, 10]; the first chunk's 9 -> 3 picks
           [1, 4, 7]), from the mask as given (the original folds the unbinarised mask)
    context = [z | masks] -> [B, 96, latents, H/8, W/8]
References are a separate prefix (`reference_context`): [ref latent | 16 zeros | 64 zero mask
channels], the original's `cat(ref_lat, zeros)` with zero mask frames.

Latent groups: the decoder turns a stream's first chunk of 3 latents into frames [0], [1-4], [5-8]
and every later chunk into [0-3], [4-7], [8-11] (`chunk_groups`). The encoder streams are fed so
their latents cover exactly those groups, whatever chunk they start on (`_first_call`).

Exact shortcut: an all-zero input (the inactive stream under an all-ones mask, the reactive stream
with no video) is encoded for real until the stream's state stops changing - a fixed point of the
stream, detected by comparing the cache bit for bit - and from then on its output is returned
from a cache without running the encoder. It is exactly what encoding would give. A causal VAE
remembers its past for a while, so this takes ~10 chunks for the Wan VAE (~112 frames of temporal
receptive field) and ~3 for TAE after the stream starts or last saw non-zero input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vacelive.engine.codecs import LATENT_CHANNELS, SPATIAL_STRIDE, TEMPORAL_STRIDE, Codec, EncoderStream
from vacelive.engine.codecs.tae import TAECodec
from vacelive.engine.codecs.wan_vae import WanVAECodec

MASK_CHANNELS = SPATIAL_STRIDE * SPATIAL_STRIDE  # 64
CONTEXT_CHANNELS = 2 * LATENT_CHANNELS + MASK_CHANNELS  # 96
# Zero calls after which a stream that never reached a bit-exact fixed point stops checking (each
# check compares the whole cache and waits for the GPU).
MAX_FIXED_POINT_CHECKS = 32


def chunk_groups(num_frames: int) -> list[tuple[int, int]]:
    """Pixel-frame ranges of a chunk's latent frames: groups of 4 from the end, the first group
    takes the rest (9 -> [0,1) [1,5) [5,9); 12 -> [0,4) [4,8) [8,12))."""
    if num_frames < 1:
        raise ValueError(f"a chunk needs at least one frame, got {num_frames}")
    latents = -(-num_frames // TEMPORAL_STRIDE)
    first = num_frames - TEMPORAL_STRIDE * (latents - 1)
    return [(0, first)] + [(first + TEMPORAL_STRIDE * i, first + TEMPORAL_STRIDE * (i + 1)) for i in range(latents - 1)]


_PICKS: dict[tuple[int, torch.device], torch.Tensor] = {}


def mask_time_indices(num_frames: int, device=None) -> torch.Tensor:
    """The frames `F.interpolate(mode='nearest-exact')` picks for (num_frames + 3) // 4 latents
    (the original's `vace_encode_masks`); computed by that very call, once per size and device."""
    key = (num_frames, torch.device(device or "cpu"))
    if key not in _PICKS:
        latents = (num_frames + TEMPORAL_STRIDE - 1) // TEMPORAL_STRIDE
        src = torch.arange(num_frames, dtype=torch.float32).view(1, 1, num_frames)
        picked = F.interpolate(src, size=latents, mode="nearest-exact")
        _PICKS[key] = picked.view(-1).long().to(key[1])
    return _PICKS[key]


def fold_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, F, H, W] -> [B, 64, F, H/8, W/8]: channel 8*i + j holds pixel (8y + i, 8x + j)."""
    b, c, f, h, w = mask.shape
    if c != 1 or h % (2 * SPATIAL_STRIDE) or w % (2 * SPATIAL_STRIDE):
        raise ValueError(f"mask must be [B, 1, F, H, W] with H, W multiples of 16, got {tuple(mask.shape)}")
    s = SPATIAL_STRIDE
    m = mask.view(b, f, h // s, s, w // s, s)
    return m.permute(0, 3, 5, 1, 2, 4).reshape(b, s * s, f, h // s, w // s)


def encode_masks(mask: torch.Tensor) -> torch.Tensor:
    """The original's vace_encode_masks for one chunk: fold 8x8 and pick frames in time
    (picking before folding: the same numbers, 1/4 of the work)."""
    idx = mask_time_indices(mask.shape[2], mask.device)
    return fold_mask(mask.index_select(2, idx))


class ConditionStream:
    """One persistent encoder stream (inactive or reactive) aligned to the chunk groups, with the
    exact all-zero shortcut. `encoder_calls` counts real encodes, `zero_hits` cached ones."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.stream: EncoderStream = codec.encoder_stream()
        self.encoder_calls = 0
        self.zero_hits = 0
        self._zero_out: torch.Tensor | None = None  # output at the zero fixed point
        self._zero_checks = 0
        self._zeros: dict[tuple, torch.Tensor] = {}

    def reset(self) -> None:
        self.stream.reset()
        self._zero_out = None
        self._zero_checks = 0

    def snapshot(self) -> tuple:
        st = self.stream.state  # cache entries are replaced on write, never mutated: references do
        return (dict(st.slots), st.calls, st.first, st.signature, self._zero_out, self._zero_checks)

    def restore(self, saved: tuple) -> None:
        slots, calls, first, signature, self._zero_out, self._zero_checks = saved
        st = self.stream.state
        st.abort()
        st.slots.clear()
        st.slots.update(slots)
        st.calls, st.first, st.signature = calls, first, signature

    def encode(self, frames: torch.Tensor | None, shape: tuple[int, int, int, int]) -> torch.Tensor:
        """frames [B, 3, n, H, W] in [-1, 1], or None for all-zero frames of `shape` (B, n, H, W).
        Returns [B, 16, latents(n), H/8, W/8] aligned with chunk_groups(n)."""
        if frames is not None:
            self._zero_out = None
            self._zero_checks = 0
            return self._encode(frames)
        if self._zero_out is not None:
            self.zero_hits += 1
            return self._zero_out
        b, n, h, w = shape
        key = (b, n, h, w)
        if key not in self._zeros:
            self._zeros[key] = torch.zeros(b, 3, n, h, w, device=self.codec.device, dtype=self.codec.dtype)
        zeros = self._zeros[key]
        check = not self.stream.first and self._zero_checks < MAX_FIXED_POINT_CHECKS
        before = dict(self.stream.state.slots) if check else None
        out = self._encode(zeros)
        if check:
            self._zero_checks += 1
            if _same_state(before, self.stream.state.slots):
                self._zero_out = out  # the state did not move: every later zero call gives `out`
        return out

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        if self.stream.first:
            frames = _first_call(self.codec, frames)
        self.encoder_calls += 1
        return self.stream.encode(frames)


def _same_state(before: dict, after: dict) -> bool:
    """Bit-for-bit equal caches, with one device->host sync for all entries."""
    if before.keys() != after.keys() or any(before[k].shape != after[k].shape for k in after):
        return False
    return not bool(torch.stack([(before[k] != after[k]).any() for k in after]).any())


def _first_call(codec: Codec, frames: torch.Tensor) -> torch.Tensor:
    """Frames for a stream's first call so its latents cover chunk_groups(n) exactly.
    Wan's first latent is one frame ([:1] + [1:] split): a 4-frame first group (a stream starting
    mid-stream) is represented by its last frame. TAE pads the first call at its end: a 1-frame
    first group (the stream's first chunk) is held for 4 frames at the start instead."""
    n = frames.shape[2]
    first = chunk_groups(n)[0][1]
    if isinstance(codec, WanVAECodec) and first > 1:
        return frames[:, :, first - 1:]
    if isinstance(codec, TAECodec) and first < TEMPORAL_STRIDE:
        return torch.cat([frames[:, :, :1].expand(-1, -1, TEMPORAL_STRIDE - first, -1, -1), frames], 2)
    return frames


class VaceEncoder:
    """The two conditioning streams of one VACE input and the chunk's 96-channel context."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.inactive = ConditionStream(codec)
        self.reactive = ConditionStream(codec)
        self._ones: dict[tuple, torch.Tensor] = {}

    def reset(self) -> None:
        self.inactive.reset()
        self.reactive.reset()

    def snapshot(self) -> tuple:
        return self.inactive.snapshot(), self.reactive.snapshot()

    def restore(self, saved: tuple) -> None:
        self.inactive.restore(saved[0])
        self.reactive.restore(saved[1])

    def encode(self, video: torch.Tensor | None, mask: torch.Tensor | None,
               shape: tuple[int, int, int, int], reactive_is_zero: bool = False) -> torch.Tensor:
        """video [B, 3, n, H, W] in [-1, 1] (None: all 0.0, VACE's "missing" gray); mask
        [B, 1, n, H, W] in [0, 1], 1 = generate (None: all ones). shape = (B, n, H, W).
        reactive_is_zero: the caller knows video * m is all zero (only kept anchors on gray).
        Returns the chunk's context [B, 96, latents, H/8, W/8] in the codec's dtype."""
        if video is None:
            inactive = reactive = None
        elif mask is None:
            inactive, reactive = None, video
        else:
            m = (mask > 0.5).to(video.dtype)
            inactive, reactive = video * (1 - m), None if reactive_is_zero else video * m
        z_in = self.inactive.encode(inactive, shape)
        z_re = self.reactive.encode(reactive, shape)
        return torch.cat([z_in, z_re, self._mask_channels(mask, shape, z_in)], 1)

    def _mask_channels(self, mask: torch.Tensor | None, shape, like: torch.Tensor) -> torch.Tensor:
        if mask is not None:
            return encode_masks(mask).to(like.dtype)
        key = (like.shape[0], like.shape[2], like.shape[3], like.shape[4])
        if key not in self._ones:
            self._ones[key] = like.new_ones(like.shape[0], MASK_CHANNELS, *like.shape[2:])
        return self._ones[key]


def encode_references(codec: Codec, images: torch.Tensor) -> torch.Tensor:
    """Reference images [P, 3, H, W] in [-1, 1] -> latents [1, 16, P, H/8, W/8], each image
    encoded on its own as a one-frame clip (the original's per-image vae.encode)."""
    return codec.encode_image(images).transpose(0, 2).contiguous()


def reference_context(latents: torch.Tensor) -> torch.Tensor:
    """[1, 16, P, h, w] -> the prefix context [1, 96, P, h, w]: inactive = the reference latent,
    reactive = 0, mask channels = 0 (the original's cat(ref_lat, zeros) and zero mask frames)."""
    b, _, p, h, w = latents.shape
    return torch.cat([latents, latents.new_zeros(b, CONTEXT_CHANNELS - LATENT_CHANNELS, p, h, w)], 1)
