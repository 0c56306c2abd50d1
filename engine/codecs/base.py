"""The codec interface the generator talks to; it never looks behind it.

A codec maps video frames [B, 3, T, H, W] in [-1, 1] to latents [B, 16, t, H/8, W/8] in the DiT's
normalised latent space and back. Streaming state (convolution caches, TAE MemBlock memory) lives
in caller-owned stream objects, never in the codec, so two encoder streams (VACE's inactive and
reactive conditioning) can never leak into each other.

Frame contract, identical for every codec:
- encoder: the first call takes T >= 1 frames and returns ceil(T/4) latents (12 -> 3, 13 -> 4,
  9 -> 3); later calls take a multiple of 4 frames and return T/4 latents (12 -> 3).
- decoder: the first call turns t latents into 4t - 3 frames (3 -> 9); later calls give 4t (3 -> 12).

A call that fails (bad input, out of memory) leaves its stream exactly as it was: layers write new
cache entries into a pending area that is committed only when the whole call succeeded.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

LATENT_CHANNELS = 16
SPATIAL_STRIDE = 8
TEMPORAL_STRIDE = 4


class CodecInputError(ValueError):
    """Bad input to a codec call. The stream's state is untouched; the stream keeps working."""


class CodecLoadError(RuntimeError):
    """A checkpoint that cannot be read or does not match the architecture."""


def latent_frames(num_frames: int, first: bool) -> int:
    """Latent frames a stream encode call returns for `num_frames` input frames."""
    if first:
        return -(-num_frames // TEMPORAL_STRIDE)  # ceil; equals Wan's 1 + (T - 1) // 4
    return num_frames // TEMPORAL_STRIDE


def pixel_frames(num_latents: int, first: bool) -> int:
    """Frames a stream decode call returns for `num_latents` latent frames."""
    return TEMPORAL_STRIDE * num_latents - (TEMPORAL_STRIDE - 1 if first else 0)


class StreamState:
    """The cache of one stream: one entry per stateful layer, keyed by the layer's slot number.

    Layers read committed entries and write new ones into a pending dict; `commit()` publishes
    them, `abort()` drops them. `channels_last` tells layers which memory layout to allocate.
    """

    def __init__(self) -> None:
        self.slots: dict[int, torch.Tensor] = {}
        self._pending: dict[int, torch.Tensor] | None = None
        self.calls = 0
        # A plain bool, not derived from `calls`: torch.compile specialises on what compiled code
        # reads, and a growing counter would recompile every call.
        self.first = True
        self.signature: tuple | None = None  # (batch, height, width, device, dtype) of the first call
        self.channels_last = False

    def read(self, slot: int) -> torch.Tensor | None:
        return self.slots.get(slot)

    def write(self, slot: int, value: torch.Tensor) -> None:
        assert self._pending is not None, "write outside a call"
        self._pending[slot] = value

    def begin(self, channels_last: bool) -> None:
        self._pending = {}
        self.channels_last = channels_last

    def commit(self, signature: tuple) -> None:
        assert self._pending is not None
        self.slots.update(self._pending)
        self._pending = None
        self.calls += 1
        self.first = False
        self.signature = signature

    def abort(self) -> None:
        self._pending = None

    def reset(self) -> None:
        self.slots.clear()
        self._pending = None
        self.calls = 0
        self.first = True
        self.signature = None

    def memory_format(self, ndim: int) -> torch.memory_format:
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last_3d if ndim == 5 else torch.channels_last

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.slots.values())


class _Stream:
    def __init__(self, codec: "Codec") -> None:
        self.codec = codec
        self.state = StreamState()

    @property
    def calls(self) -> int:
        """How many calls succeeded since creation or the last reset."""
        return self.state.calls

    @property
    def first(self) -> bool:
        return self.state.first

    def reset(self) -> None:
        """Forget the past: the next call is a first call again."""
        self.state.reset()

    def _check_signature(self, batch: int, height: int, width: int, what: str) -> tuple:
        codec = self.codec
        sig = (batch, height, width, codec.device, codec.dtype)
        old = self.state.signature
        if old is not None and old != sig:
            raise CodecInputError(
                f"{codec.name} {what} stream was started with batch {old[0]}, {old[1]}x{old[2]} on "
                f"{old[3]}/{old[4]}; this call has batch {batch}, {height}x{width} on "
                f"{sig[3]}/{sig[4]}. Call reset() to change resolution, batch, device or dtype."
            )
        return sig

    def _run(self, fn, x: torch.Tensor, sig: tuple) -> torch.Tensor:
        st = self.state
        st.begin(self.codec.channels_last)
        try:
            with torch.no_grad():
                out = fn(x, st)
        except BaseException:
            st.abort()
            raise
        st.commit(sig)
        return out


class EncoderStream(_Stream):
    """One causal encode stream (pixels -> normalised latents) with its own cache."""

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, 3, T, H, W] in [-1, 1] -> latents [B, 16, t, H/8, W/8] (see module doc)."""
        codec = self.codec
        _check_tensor(frames, 3, "frames", codec.name)
        b, _, t, h, w = frames.shape
        if h % SPATIAL_STRIDE or w % SPATIAL_STRIDE:
            raise CodecInputError(f"{codec.name} encode: height and width must be multiples of "
                                  f"{SPATIAL_STRIDE}, got {h}x{w}")
        if not self.first and t % TEMPORAL_STRIDE:
            raise CodecInputError(f"{codec.name} encode: after the first call a stream takes a "
                                  f"multiple of {TEMPORAL_STRIDE} frames (12 per chunk), got {t}")
        sig = self._check_signature(b, h, w, "encoder")
        x = codec._prepare_frames(frames)
        return self._run(codec._encode_chunk, x, sig)


class DecoderStream(_Stream):
    """One causal decode stream (normalised latents -> pixels) with its own cache."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, 16, t, h, w] -> frames [B, 3, 4t-3 (first call) or 4t, 8h, 8w] in [-1, 1]."""
        codec = self.codec
        _check_tensor(latents, LATENT_CHANNELS, "latents", codec.name)
        b, _, _, h, w = latents.shape
        sig = self._check_signature(b, h, w, "decoder")
        z = codec._prepare_latents(latents)
        return self._run(codec._decode_chunk, z, sig)


def _check_tensor(x: Any, channels: int, what: str, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise CodecInputError(f"{name}: {what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 5 or x.shape[1] != channels:
        raise CodecInputError(f"{name}: {what} must be [B, {channels}, T, H, W], "
                              f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise CodecInputError(f"{name}: {what} must be a float tensor, got {x.dtype}")
    if min(x.shape) == 0:
        raise CodecInputError(f"{name}: {what} is empty: {tuple(x.shape)}")


class Codec(nn.Module):
    """Base class: owns the weights (state_dict keys = the public checkpoint's), not the streams.

    Subclasses implement `_encode_chunk(x, state)` (x already on device, in dtype, finite, in
    [-1, 1]) and `_decode_chunk(z, state)` (z finite, normalised latents).
    """

    name = "codec"

    def __init__(self) -> None:
        super().__init__()
        self.channels_last = False
        self.compiled_methods = None  # use_compile: engine.dit.compile.CompiledMethods

    # ---- public API ---------------------------------------------------------------------------
    def encoder_stream(self) -> EncoderStream:
        return EncoderStream(self)

    def decoder_stream(self) -> DecoderStream:
        return DecoderStream(self)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """One-shot encode of a whole clip: a fresh stream's first call, ceil(T/4) latents.

        For T = 1 + 4k frames this is Wan's one-shot `encode`. For other T, Wan's one-shot encode
        ignores the frames after 1 + 4 * ((T - 1) // 4) (the reference's `use_cache=False` path
        on 12 frames reads frames 0..8): pass `frames[:, :, :9]` to reproduce that exactly."""
        return self.encoder_stream().encode(frames)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """One-shot decode of a whole latent clip (a fresh stream's first call)."""
        return self.decoder_stream().decode(latents)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Reference images [B, 3, H, W] in [-1, 1] -> [B, 16, 1, H/8, W/8]; no stream state."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise CodecInputError(f"{self.name}: images must be a [B, 3, H, W] tensor, got "
                                  f"{getattr(images, 'shape', type(images).__name__)}")
        return self.encode(images.unsqueeze(2))

    def use_channels_last(self, enabled: bool = True) -> "Codec":
        """Run activations in channels-last layout (a speed switch; same maths). Streams started
        in one layout continue correctly in the other."""
        self.channels_last = bool(enabled)
        if enabled:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.weight.device.type != "meta":
                    fmt = torch.channels_last_3d if m.weight.ndim == 5 else torch.channels_last
                    m.weight.data = m.weight.data.contiguous(memory_format=fmt)
        return self

    def use_compile(self, enabled: bool = True, mode: str | None = None,
                    backend: str = "inductor") -> "Codec":
        """torch.compile the per-chunk encode/decode functions of this instance (a speed switch:
        fuses activations, pads and concats; at 832x480 the TAE decode went from 13.5 to 7.0 ms
        on an H200, docs/PERFORMANCE.md). Static shapes: one graph per chunk shape, the first
        call's and the steady state's compiled on first use; a warm-up (engine.warmup) compiles
        them at start and seals the set (`compiled_methods`, engine.dit.compile.CompiledMethods)."""
        from vacelive.engine.dit.compile import CompiledMethods

        if self.compiled_methods is not None:
            self.compiled_methods.restore()
            self.compiled_methods = None
        if enabled:
            self.compiled_methods = CompiledMethods([(self, ("_encode_chunk", "_decode_chunk"))],
                                                    f"compiled {self.name}", mode=mode, dynamic=False,
                                                    backend=backend)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, prefix: str = "") -> int:
        return sum(p.numel() for n, p in self.named_parameters() if n.startswith(prefix))

    # ---- shared helpers -----------------------------------------------------------------------
    def _prepare_frames(self, frames: torch.Tensor) -> torch.Tensor:
        # Non-finite pixels would poison the stream caches forever: map them to mid-grey/limits.
        x = frames.to(device=self.device, dtype=self.dtype, non_blocking=True)
        return torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0).clamp_(-1.0, 1.0)

    def _prepare_latents(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(device=self.device, dtype=self.dtype, non_blocking=True)
        return torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)

    def _encode_chunk(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        raise NotImplementedError

    def _decode_chunk(self, z: torch.Tensor, st: StreamState) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, channels_last={self.channels_last}"


class LatentNormalizer:
    """Wan's per-channel latent normalisation z = (mu - mean) / std, computed in fp32.

    The constants are kept as fp32 tensors per device (not module buffers) so `.to(bfloat16)` on
    the codec cannot round them, and they never appear in the checkpoint's state dict.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        assert len(mean) == len(std)
        self.mean_values = tuple(float(v) for v in mean)
        self.std_values = tuple(float(v) for v in std)
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._cache:
            shape = (1, len(self.mean_values), 1, 1, 1)
            mean = torch.tensor(self.mean_values, dtype=torch.float32, device=device).view(shape)
            std = torch.tensor(self.std_values, dtype=torch.float32, device=device).view(shape)
            self._cache[device] = (mean, std)
        return self._cache[device]

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        mean, std = self._constants(mu.device)
        return ((mu.float() - mean) / std).to(mu.dtype)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._constants(z.device)
        return torch.addcmul(mean, z.float(), std).to(z.dtype)


# Wan2.1 VAE latent statistics (`mean` / `std` in Wan2.1 `wan/modules/vae.py`).
WAN_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                   0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                  3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
