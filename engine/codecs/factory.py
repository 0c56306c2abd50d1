"""Choosing a codec by name: real checkpoints for runs, seeded random weights for tests and demos."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .base import Codec
from .tae import TAEW2_1, LightTAECodec, TAECodec, TAEConfig, tiny_tae_config
from .wan_vae import WAN_VAE_2_1, WanVAECodec, WanVAEConfig, tiny_wan_vae_config

CODEC_KINDS = ("wan", "tae", "lighttae")
_CLASSES = {"wan": WanVAECodec, "tae": TAECodec, "lighttae": LightTAECodec}
# File names of the public checkpoints (Wan-AI/Wan2.1-T2V-1.3B, madebyollin/taehv,
# lightx2v/Autoencoders); for error messages and the models-folder layout.
DEFAULT_FILES = {"wan": "Wan2.1_VAE.pth", "tae": "taew2_1.pth", "lighttae": "lighttaew2_1.pth"}


def _class(kind: str) -> type[Codec]:
    if kind not in _CLASSES:
        raise ValueError(f"unknown codec {kind!r}; choose one of {', '.join(CODEC_KINDS)}")
    return _CLASSES[kind]


def load_codec(kind: str, path: str | Path, device: torch.device | str = "cuda",
               dtype: torch.dtype = torch.bfloat16) -> Codec:
    """Load the codec `kind` ("wan" | "tae" | "lighttae") from its checkpoint file."""
    return _class(kind).load(path, device=device, dtype=dtype)


def codec_config(kind: str, small: bool) -> WanVAEConfig | TAEConfig:
    if kind == "wan":
        return tiny_wan_vae_config() if small else WAN_VAE_2_1
    _class(kind)
    return tiny_tae_config() if small else TAEW2_1


def random_codec(kind: str, small: bool = True, seed: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 config: WanVAEConfig | TAEConfig | None = None) -> Codec:
    """A codec with seeded random weights (tiny widths when `small`). On the "meta" device it is
    built without initialisation: full-size key/shape checks cost no memory."""
    cls = _class(kind)
    config = config or codec_config(kind, small)
    with torch.device("meta"):
        codec = cls(config)
    if torch.device(device).type == "meta":
        return codec.to(dtype=dtype).requires_grad_(False).eval()
    codec = codec.to_empty(device=device)  # initialised below, directly where it will run
    gen = torch.Generator(device=device).manual_seed(seed)
    # Gains that keep activations O(1) through the deep stacks (ReLU nets need sqrt 2), so tests
    # compare meaningful numbers instead of values clamped to the pixel range.
    gain = 1.0 if kind == "wan" else math.sqrt(2.0)
    with torch.no_grad():
        for name, p in codec.named_parameters():
            if name.endswith(".gamma"):
                p.uniform_(0.5, 1.5, generator=gen)
            elif name.endswith(".weight") and p.ndim >= 4:
                p.normal_(0.0, gain / math.sqrt(p[0].numel()), generator=gen)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.05, generator=gen)
            else:
                raise AssertionError(f"random_codec: no init rule for {name}")
        if isinstance(codec, TAECodec):  # TAE pixels are [0, 1]: aim the output at mid-grey
            codec.decoder[-1].weight.mul_(0.05)
            codec.decoder[-1].bias.fill_(0.5)
    return codec.requires_grad_(False).to(device=device, dtype=dtype).eval()
