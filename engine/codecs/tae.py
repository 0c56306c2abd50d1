"""TAEHV tiny autoencoder for Wan2.1 (`taew2_1`, github.com/madebyollin/taehv `taehv.py`;
keys in tests/manifests/tae_keys.txt) and the
`lighttae` variant, streamed time-parallel.

TAEHV works on frames (N*T, C, H, W) with pixels in [0, 1]; we convert from/to the engine's
[-1, 1]. Its only memory across time is the MemBlock: each block sees its own input of the
previous time step ("past", zeros at stream start). TPool (encoder) concatenates `stride`
consecutive frames on channels, TGrow (decoder) splits channels into `stride` frames; all other
layers act per frame. So a whole call runs in parallel over time once every MemBlock's past is
"its input shifted by one frame, with the previous call's last input in front" - the same numbers
as TAEHV's frame-by-frame graph traversal, which `tests/test_tae.py` re-implements to check this.

Stream contract (base.py): encoder calls must keep TPool groups aligned, so the first call is padded
to a multiple of 4 by repeating its last frame (TAEHV's encode_video rule: 13 -> 16 -> 4 latents)
and later calls take multiples of 4. The decoder's first call drops the first 3 output frames
(`frames_to_trim`, 3 latents -> 12 -> 9 frames); later calls keep all 4 per latent.

lighttae (`lighttaew2_1.pth`): same architecture and keys, but its latent space is Wan's
*un-normalised* one (the raw VAE mean mu), as LightX2V's `need_scaled` decode and Scope's
"TAE with WanVAE normalisation" use it. Our interpretation, so the DiT sees one latent space
whatever the codec: encode = TAE encoder then (mu - mean) / std; decode = z * std + mean then
the TAE decoder (its tanh input clamp included, as trained). Pixels stay [0, 1] inside.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import (WAN_LATENT_MEAN, WAN_LATENT_STD, Codec, CodecLoadError, LatentNormalizer,
                   StreamState)
from .weights import build_and_load, read_state_dict


@dataclass(frozen=True)
class TAEConfig:
    latent_channels: int = 16
    encoder_channels: int = 64
    decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 64)
    decoder_time_upscale: tuple[bool, bool] = (True, True)
    decoder_space_upscale: tuple[bool, bool, bool] = (True, True, True)


TAEW2_1 = TAEConfig()


def tiny_tae_config() -> TAEConfig:
    """Same structure and strides, tiny widths (CPU tests)."""
    return TAEConfig(encoder_channels=8, decoder_channels=(16, 8, 8, 8))


def _conv(cin: int, cout: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, **kw)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """relu(conv(relu(conv(relu(conv([x, past]))))) + skip(x)); past = input one step earlier."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(cin * 2, cout), nn.ReLU(inplace=True), _conv(cout, cout),
                                  nn.ReLU(inplace=True), _conv(cout, cout))
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.slot = -1  # set by the codec

    def forward(self, x: torch.Tensor, batch: int, st: StreamState) -> torch.Tensor:
        n, c, h, w = x.shape
        t = n // batch
        # [x | past] built in one buffer: past[t] = x[t-1], past[0] = the previous call's last x.
        buf = torch.empty(n, 2 * c, h, w, dtype=x.dtype, device=x.device,
                          memory_format=st.memory_format(4))
        bv, xv = buf.view(batch, t, 2 * c, h, w), x.view(batch, t, c, h, w)
        bv[:, :, :c].copy_(xv)
        past = st.read(self.slot)
        if past is None:
            bv[:, 0, c:].zero_()
        else:
            bv[:, 0, c:].copy_(past)
        bv[:, 1:, c:].copy_(xv[:, :-1])
        st.write(self.slot, xv[:, -1].clone())
        y = self.conv(buf)
        del buf, bv
        return F.relu_(y.add_(self.skip(x)))


class TPool(nn.Module):
    """`stride` consecutive frames concatenated on channels, then a 1x1 conv."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels * stride, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return self.conv(x.reshape(n // self.stride, self.stride * c, h, w))


class TGrow(nn.Module):
    """1x1 conv to `stride` x channels, split into `stride` consecutive frames."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return self.conv(x).reshape(n * self.stride, c, h, w)


def _encoder(cfg: TAEConfig) -> nn.Sequential:
    c = cfg.encoder_channels
    layers: list[nn.Module] = [_conv(3, c), nn.ReLU(inplace=True)]
    for stride in (2, 2, 1):
        layers += [TPool(c, stride), _conv(c, c, stride=2, bias=False),
                   MemBlock(c, c), MemBlock(c, c), MemBlock(c, c)]
    layers.append(_conv(c, cfg.latent_channels))
    return nn.Sequential(*layers)


def _decoder(cfg: TAEConfig) -> nn.Sequential:
    n = cfg.decoder_channels
    t_up = (1, *(2 if u else 1 for u in cfg.decoder_time_upscale))
    layers: list[nn.Module] = [Clamp(), _conv(cfg.latent_channels, n[0]), nn.ReLU(inplace=True)]
    for i in range(3):
        layers += [MemBlock(n[i], n[i]), MemBlock(n[i], n[i]), MemBlock(n[i], n[i]),
                   nn.Upsample(scale_factor=2 if cfg.decoder_space_upscale[i] else 1),
                   TGrow(n[i], t_up[i]), _conv(n[i], n[i + 1], bias=False)]
    layers += [nn.ReLU(inplace=True), _conv(n[3], 3)]
    return nn.Sequential(*layers)


def _run(blocks: nn.Sequential, x: torch.Tensor, batch: int, st: StreamState) -> torch.Tensor:
    for block in blocks:
        x = block(x, batch, st) if isinstance(block, MemBlock) else block(x)
    return x


class TAECodec(Codec):
    """TAEHV `taew2_1` behind the codec interface: latents already in Wan's normalised space."""

    name = "tae"
    wan_normalised_latents = False  # lighttae: the TAE speaks un-normalised Wan latents

    def __init__(self, config: TAEConfig = TAEW2_1) -> None:
        super().__init__()
        self.config = config
        self.encoder = _encoder(config)
        self.decoder = _decoder(config)
        self.t_downscale = 4
        self.t_upscale = 2 ** sum(config.decoder_time_upscale)
        self.frames_to_trim = self.t_upscale - 1
        self.normalizer = LatentNormalizer(WAN_LATENT_MEAN, WAN_LATENT_STD)
        slot = 0
        for module in self.modules():
            if isinstance(module, MemBlock):
                module.slot = slot
                slot += 1
        self.num_slots = slot

    @classmethod
    def load(cls, path, device="cuda", dtype: torch.dtype = torch.float16,
             config: TAEConfig = TAEW2_1) -> "TAECodec":
        """Load `taew2_1.pth` / `taew2_1.safetensors` (or `lighttaew2_1.*` via LightTAECodec)."""
        sd = read_state_dict(path)
        with torch.device("meta"):
            sd = patch_tgrow_weights(sd, cls(config), str(path))
        return build_and_load(lambda: cls(config), sd, str(path), f"TAEHV ({cls.name})",
                              device, dtype)

    def _encode_chunk(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        b, _, t, h, w = x.shape
        frames = x.transpose(1, 2).mul(0.5).add_(0.5)  # [B, T, 3, H, W] in [0, 1], new tensor
        if t % self.t_downscale:  # first call only (the stream rejects it later)
            pad = self.t_downscale - t % self.t_downscale
            frames = torch.cat([frames, frames[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
        frames = frames.reshape(-1, 3, h, w).contiguous(memory_format=st.memory_format(4))
        z = _run(self.encoder, frames, b, st)
        z = z.view(b, -1, *z.shape[1:]).transpose(1, 2)
        if self.wan_normalised_latents:
            z = self.normalizer.normalize(z)
        return z.contiguous()

    def _decode_chunk(self, z: torch.Tensor, st: StreamState) -> torch.Tensor:
        if self.wan_normalised_latents:
            z = self.normalizer.denormalize(z)
        b, c, t, h, w = z.shape
        x = z.transpose(1, 2).reshape(b * t, c, h, w).contiguous(memory_format=st.memory_format(4))
        x = _run(self.decoder, x, b, st)
        x = x.view(b, -1, *x.shape[1:]).transpose(1, 2)  # [B, 3, T, H, W]
        if st.first:
            x = x[:, :, self.frames_to_trim:]
        return x.clamp(0.0, 1.0).mul_(2.0).sub_(1.0).contiguous()


class LightTAECodec(TAECodec):
    """`lighttaew2_1`: TAEHV weights trained on un-normalised Wan latents (see module doc)."""

    name = "lighttae"
    wan_normalised_latents = True


def patch_tgrow_weights(sd: dict[str, torch.Tensor], model: "TAECodec",
                        source: str) -> dict[str, torch.Tensor]:
    """TAEHV loader rule: a TGrow conv with more output channels in the file than in the model
    (a checkpoint made for more temporal upscaling) keeps the *last* output channels, i.e. the
    last time step's."""
    sd = dict(sd)
    for i, layer in enumerate(model.decoder):
        key = f"decoder.{i}.conv.weight"
        if not isinstance(layer, TGrow) or key not in sd:
            continue
        have, want = sd[key].shape, layer.conv.weight.shape
        if len(have) == 4 and have[1:] == want[1:] and have[0] > want[0]:
            if have[0] % want[0]:
                raise CodecLoadError(f"{source}: {key} has {have[0]} output channels, not a "
                                     f"multiple of {want[0]}")
            sd[key] = sd[key][-want[0]:]
    return sd
