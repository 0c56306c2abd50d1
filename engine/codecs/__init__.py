"""Video codecs (VAEs) behind one streaming interface; see base.py for the contract.

    codec = load_codec("wan", "models/Wan2.1_VAE.pth", "cuda", torch.bfloat16)
    enc = codec.encoder_stream(); dec = codec.decoder_stream()
    latents = enc.encode(frames)   # [B,3,12,H,W] in [-1,1] -> [B,16,3,H/8,W/8]
    frames = dec.decode(latents)   # first call 9 frames, then 12
"""
from .base import (
    LATENT_CHANNELS,
    SPATIAL_STRIDE,
    TEMPORAL_STRIDE,
    Codec,
    CodecInputError,
    CodecLoadError,
    DecoderStream,
    EncoderStream,
    latent_frames,
    pixel_frames,
)
from .factory import CODEC_KINDS, DEFAULT_FILES, codec_config, load_codec, random_codec
from .tae import TAEW2_1, LightTAECodec, TAECodec, TAEConfig, tiny_tae_config
from .wan_vae import WAN_VAE_2_1, WanVAECodec, WanVAEConfig, tiny_wan_vae_config

__all__ = [
    "LATENT_CHANNELS", "SPATIAL_STRIDE", "TEMPORAL_STRIDE",
    "Codec", "CodecInputError", "CodecLoadError", "DecoderStream", "EncoderStream",
    "latent_frames", "pixel_frames",
    "CODEC_KINDS", "DEFAULT_FILES", "codec_config", "load_codec", "random_codec",
    "TAEW2_1", "LightTAECodec", "TAECodec", "TAEConfig", "tiny_tae_config",
    "WAN_VAE_2_1", "WanVAECodec", "WanVAEConfig", "tiny_wan_vae_config",
]
