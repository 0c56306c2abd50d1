"""Wan2.1 VAE (`Wan2.1_VAE.pth`; Wan2.1 `wan/modules/vae.py`, keys in
tests/manifests/wan_vae_keys.txt), streamed time-parallel.

The reference feeds the VAE one latent group at a time (encoder: frame 0, then groups of 4;
decoder: one latent frame at a time) and every causal conv keeps the last CACHE_T = 2 input frames
of the previous call. Because every layer is causal in time, the same numbers come out when each
call processes all its frames at once, as long as every layer sees the right past:

- causal k_t=3 convs: the input of the call is prefixed with the layer's last 2 input frames
  (zeros at stream start) -> identical to zero-padded frame-by-frame processing;
- downsample3d (time conv k=3, stride 2, no padding): the reference passes the stream's very first
  frame through untouched and afterwards convolves [last frame of the previous call, new frames];
  over a whole stream that is "frame 0, then windows [f0 f1 f2], [f2 f3 f4], ...", so each call
  convolves [previous last frame, new frames] with stride 2 (first call: its own frame 0 first);
- upsample3d ("Rep"): the stream's first frame is not temporally doubled and is *not* history for
  the time conv; all later frames go through a causal time conv whose past starts with zeros, and
  each output frame's 2C channels become two frames.
Attention, norms and 2D convs act per frame. `tests/test_wan_vae.py` checks this file against a
frame-by-frame implementation of the reference semantics.

A first encode call with T frames follows the reference's `[:1] + [1:]` split: ceil(T/4) latents
(12 -> 3, 13 -> 4). For T = 1 + 4k it equals Wan's one-shot encode, and a stream fed 1 + 4k frames
and then multiples of 4 equals the one-shot encode of the concatenated clip. A 12-frame first
chunk (the reference's streaming default) leaves frame 11 only in the caches, so the stride-2
windows of later chunks are shifted by one frame relative to a one-shot encode - exactly what the
reference stream does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import WAN_LATENT_MEAN, WAN_LATENT_STD, Codec, LatentNormalizer, StreamState
from .weights import build_and_load, read_state_dict

CACHE_T = 2  # past frames a k_t=3 causal conv needs


@dataclass(frozen=True)
class WanVAEConfig:
    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latent_mean: tuple[float, ...] = WAN_LATENT_MEAN
    latent_std: tuple[float, ...] = WAN_LATENT_STD


WAN_VAE_2_1 = WanVAEConfig()


def tiny_wan_vae_config(dim: int = 8) -> WanVAEConfig:
    """Same structure and strides, tiny widths (CPU tests)."""
    return WanVAEConfig(dim=dim)


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """F.normalize over channels * sqrt(C) * gamma (no bias), optionally fused with SiLU and
    written straight into a caller's buffer (the causal conv's input, to avoid a concat)."""

    def __init__(self, dim: int, images: bool) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None,
                silu: bool = False) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(1e-12)
        out = torch.div(x, norm, out=out) if out is not None else x / norm
        g = self.gamma.view(-1, *([1] * (x.ndim - 2))) * self.scale
        out.mul_(g)
        if silu:
            F.silu(out, inplace=True)
        return out


class CausalConv3d(nn.Conv3d):
    """Conv3d, causal in time. The k_t - 1 frames before a call come from the stream state (zeros
    at stream start); the conv then runs once over [past, new frames] with no time padding."""

    def __init__(self, cin: int, cout: int, kernel, spatial_pad: int = 0, time_stride: int = 1,
                 context: int | None = None) -> None:
        kernel = (kernel, kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        super().__init__(cin, cout, kernel, stride=(time_stride, 1, 1),
                         padding=(0, spatial_pad, spatial_pad))
        self.context = kernel[0] - 1 if context is None else context
        self.slot = -1  # set by the codec: which stream-state entry holds this layer's past

    def input_buffer(self, st: StreamState, like: torch.Tensor) -> torch.Tensor:
        """[past | room for the new frames]; the caller fills buffer[:, :, context:]."""
        b, _, t, h, w = like.shape
        buf = torch.empty(b, self.in_channels, self.context + t, h, w, dtype=like.dtype,
                          device=like.device, memory_format=st.memory_format(5))
        past = st.read(self.slot)
        if past is None:
            buf[:, :, : self.context].zero_()
        else:
            buf[:, :, : self.context].copy_(past)
        return buf

    def run(self, buf: torch.Tensor, st: StreamState) -> torch.Tensor:
        st.write(self.slot, buf[:, :, -self.context:].clone())
        return F.conv3d(buf, self.weight, self.bias, self.stride, self.padding)

    def forward(self, x: torch.Tensor, st: StreamState | None = None) -> torch.Tensor:
        if self.context == 0:
            return F.conv3d(x, self.weight, self.bias, self.stride, self.padding)
        buf = self.input_buffer(st, x)
        buf[:, :, self.context:].copy_(x)
        return self.run(buf, st)


def frame_conv(x: torch.Tensor, conv: nn.Conv2d, st: StreamState, stride: int = 1,
               padding: int = 0) -> torch.Tensor:
    """A 2D conv applied to every frame of [B, C, T, H, W] without moving data: channels-last
    tensors are viewed as a batch of frames, contiguous ones use the conv as a (1, k, k) Conv3d."""
    b, c, t, h, w = x.shape
    if st.channels_last:
        y = F.conv2d(x.transpose(1, 2).reshape(b * t, c, h, w), conv.weight, conv.bias,
                     stride, padding)
        return y.view(b, t, *y.shape[1:]).transpose(1, 2)
    return F.conv3d(x, conv.weight.unsqueeze(2), conv.bias, (1, stride, stride),
                    (0, padding, padding))


def upsample_frames(frames: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Nearest-exact x2 (= pixel duplication) of frames [..., C, H, W] (any strides) into one new
    [N, C, 2H, 2W] tensor in the requested layout: a single copy that also absorbs interleaving."""
    c, h, w = frames.shape[-3:]
    if channels_last:
        g = frames.movedim(-3, -1).unsqueeze(-2).unsqueeze(-4)  # [..., H, 1, W, 1, C]
        g = g.expand(*g.shape[:-5], h, 2, w, 2, c)
        return g.reshape(-1, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    g = frames.unsqueeze(-1).unsqueeze(-3)  # [..., C, H, 1, W, 1]
    g = g.expand(*g.shape[:-4], h, 2, w, 2)
    return g.reshape(-1, c, 2 * h, 2 * w)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # Indices 1, 4, 5 (SiLU, SiLU, Dropout(0)) hold no weights; they keep the checkpoint's
        # key numbering (residual.0/2/3/6).
        self.residual = nn.Sequential(
            RMSNorm(cin, images=False), nn.SiLU(), CausalConv3d(cin, cout, 3, 1),
            RMSNorm(cout, images=False), nn.SiLU(), nn.Dropout(0.0), CausalConv3d(cout, cout, 3, 1),
        )
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        buf = conv1.input_buffer(st, x)
        norm1(x, out=buf[:, :, conv1.context:], silu=True)
        h = conv1.run(buf, st)
        buf = conv2.input_buffer(st, h)
        norm2(h, out=buf[:, :, conv2.context:], silu=True)
        del h
        y = conv2.run(buf, st)
        del buf
        return y.add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
        qkv = F.linear(tokens, self.to_qkv.weight.view(3 * c, c), self.to_qkv.bias)
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)  # [B*T, 1, HW, C] each, SDPA layout
        o = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        o = F.linear(o, self.proj.weight.view(c, c), self.proj.bias)
        o = o.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)  # channels-last [B, C, T, H, W]
        return o.add_(x).contiguous(memory_format=st.memory_format(5))


class Resample(nn.Module):
    """Spatial x2 down/up sampling per frame, plus time x2 for the '3d' modes (stream rules in the
    module doc). `resample.0` (ZeroPad2d / Upsample) holds no weights; its work is done inline."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest-exact"),
                                          nn.Conv2d(dim, dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)),
                                          nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                # Stride 2, no padding; its stream past is the previous call's last frame.
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), time_stride=2, context=1)
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        if self.mode.startswith("up"):
            return self._up(x, st)
        return self._down(x, st)

    def _up(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if self.mode == "upsample2d":
            frames = x.transpose(1, 2)  # [B, T, C, H, W]
        else:
            tc = self.time_conv
            first = st.read(tc.slot) is None  # the reference's "Rep" call
            rest = x[:, :, 1:] if first else x
            if rest.shape[2] == 0:  # one-latent first call: the time conv's past stays zero
                st.write(tc.slot, x.new_zeros(b, c, tc.context, h, w))
                frames = x.transpose(1, 2)
            else:
                y = tc(rest, st)  # [B, 2C, n, H, W]; zero past on the first call
                frames = y.unflatten(1, (2, c)).permute(0, 3, 1, 2, 4, 5)  # [B, n, 2, C, H, W]
                if first:  # the stream's first frame goes through untouched, not doubled
                    frames = torch.cat([x[:, :, :1].transpose(1, 2),
                                        frames.reshape(b, -1, c, h, w)], dim=1)
        up = upsample_frames(frames, st.channels_last)
        conv = self.resample[1]
        out = F.conv2d(up, conv.weight, conv.bias, padding=1)
        return out.view(b, -1, *out.shape[1:]).transpose(1, 2)

    def _down(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        y = frame_conv(F.pad(x, (0, 1, 0, 1)), self.resample[1], st, stride=2)
        if self.mode == "downsample2d":
            return y
        tc = self.time_conv
        past = st.read(tc.slot)
        seq = y if past is None else torch.cat([past, y], dim=2)
        st.write(tc.slot, y[:, :, -1:].clone())
        out = None
        if seq.shape[2] >= 3:
            out = F.conv3d(seq, tc.weight, tc.bias, tc.stride)
        if past is None:  # the stream's first frame passes without the time conv
            out = y[:, :, :1] if out is None else torch.cat([y[:, :, :1], out], dim=2)
        return out


def _run_blocks(blocks: nn.Module, x: torch.Tensor, st: StreamState) -> torch.Tensor:
    for block in blocks:
        x = block(x, st)
    return x


class _Head(nn.Sequential):
    """RMS_norm - SiLU - CausalConv3d (keys head.0.gamma, head.2.*)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(RMSNorm(cin, images=False), nn.SiLU(), CausalConv3d(cin, cout, 3, 1))

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        norm, _, conv = self
        buf = conv.input_buffer(st, x)
        norm(x, out=buf[:, :, conv.context:], silu=True)
        return conv.run(buf, st)


class Encoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, 1)
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(cin, cout))
                cin = cout
            if i != len(cfg.dim_mult) - 1:
                mode = "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"
                blocks.append(Resample(cout, mode))
        self.downsamples = nn.ModuleList(blocks)
        c = dims[-1]
        self.middle = nn.ModuleList([ResidualBlock(c, c), AttentionBlock(c), ResidualBlock(c, c)])
        self.head = _Head(c, cfg.z_dim * 2)

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        x = self.conv1(x, st)
        x = _run_blocks(self.downsamples, x, st)
        x = _run_blocks(self.middle, x, st)
        return self.head(x, st)


class Decoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.dim * u for u in (mult[-1], *mult[::-1])]
        temporal_upsample = cfg.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, 1)
        c = dims[0]
        self.middle = nn.ModuleList([ResidualBlock(c, c), AttentionBlock(c), ResidualBlock(c, c)])
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i in (1, 2, 3):  # the previous upsample halved the channels
                cin = cin // 2
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResidualBlock(cin, cout))
                cin = cout
            if i != len(mult) - 1:
                mode = "upsample3d" if temporal_upsample[i] else "upsample2d"
                blocks.append(Resample(cout, mode))
        self.upsamples = nn.ModuleList(blocks)
        self.head = _Head(dims[-1], 3)

    def forward(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        x = self.conv1(x, st)
        x = _run_blocks(self.middle, x, st)
        x = _run_blocks(self.upsamples, x, st)
        return self.head(x, st)


# ---------------------------------------------------------------------------------------------
# the codec
# ---------------------------------------------------------------------------------------------
class WanVAECodec(Codec):
    """The Wan2.1 VAE behind the codec interface. state_dict keys = `Wan2.1_VAE.pth` keys."""

    name = "wan"

    def __init__(self, config: WanVAEConfig = WAN_VAE_2_1) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder3d(config)
        self.normalizer = LatentNormalizer(config.latent_mean, config.latent_std)
        slot = 0
        for module in self.modules():  # one stream-state entry per stateful conv
            if isinstance(module, CausalConv3d) and module.context > 0:
                module.slot = slot
                slot += 1
        self.num_slots = slot

    @classmethod
    def load(cls, path, device="cuda", dtype: torch.dtype = torch.bfloat16,
             config: WanVAEConfig = WAN_VAE_2_1) -> "WanVAECodec":
        """Load `Wan2.1_VAE.pth` (or a .safetensors with the same keys)."""
        sd = read_state_dict(path)
        return build_and_load(lambda: cls(config), sd, str(path), "Wan2.1 VAE", device, dtype)

    def _encode_chunk(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        x = x.contiguous(memory_format=st.memory_format(5))
        h = self.encoder(x, st)
        z = self.config.z_dim
        # conv1 gives (mu, log_var); the codec only ever needs mu.
        mu = F.conv3d(h, self.conv1.weight[:z], self.conv1.bias[:z])
        return self.normalizer.normalize(mu).contiguous()

    def _decode_chunk(self, z: torch.Tensor, st: StreamState) -> torch.Tensor:
        x = self.conv2(self.normalizer.denormalize(z))
        x = x.contiguous(memory_format=st.memory_format(5))
        out = self.decoder(x, st)
        return out.clamp_(-1.0, 1.0).contiguous()
