"""Building the parts of a StreamGenerator: from a recipe's real weights, or random for tests,
the CPU demo and GPU benchmarks.

Real weights (`build_from_recipe`): engine.models_dir.require checks every file first
(MissingWeightsError lists all that are missing), then DiT -> VACE -> pipeline LoRA -> user
LoRAs (engine.dit.weights.from_checkpoint), the codec (engine.codecs.load_codec) and the umT5 encoder
(engine.text.TextEncoder.load).

Random weights (`build_random`): "tiny" = engine.config.tiny_config DiT + tiny codec + a tiny
umT5; "full" = Wan2.1-1.3B + full-size codec; the text encoder is tiny by default in both
(`text_encoder_size="full"` builds a random umT5-XXL: 11 GB in bf16). Random text encoders use
`byte_tokenizer()`, a byte-level tokenizer built in memory (no files, no network) that gives every
distinct prompt distinct ids, so prompt changes stay visible in a random-weight demo.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from vacelive.engine.config import WAN_1_3B, WanConfig, tiny_config

log = logging.getLogger(__name__)

SIZES = ("tiny", "full")
TEXT_PAD, TEXT_EOS, TEXT_UNK = 0, 1, 2  # umT5's special ids: <pad>=0, </s>=1, <unk>=2


@dataclass
class Parts:
    """Everything StreamGenerator.__init__ takes, as built by one of the builders below."""

    model: nn.Module  # CausalWanModel or VaceWanModel
    codec: Any  # engine.codecs.Codec
    text_encoder: Any  # engine.text.TextEncoder (anything with .encode(list[str]) -> [B, L, D])
    loras: Any = None  # engine.lora.LoraSet
    conditioner: Any = None  # engine.vace_input.Conditioner


# ---------------------------------------------------------------------------------------------
# Random text encoder (shared by tests, demo and benchmarks)
# ---------------------------------------------------------------------------------------------
def byte_tokenizer(max_length: int = 512):
    """A umT5-compatible tokenizer (ids <pad>=0, </s>=1, <unk>=2, EOS appended) over the 256
    byte-level symbols: 259 ids, built in memory. For random-weight encoders only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": TEXT_PAD, "</s>": TEXT_EOS, "<unk>": TEXT_UNK}
    for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet())):
        vocab[symbol] = i + 3
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", TEXT_EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)


def tiny_umt5_config(d_model: int):
    """A small umT5 encoder whose output width is `d_model` (the DiT's text_dim)."""
    from transformers import UMT5Config

    small = d_model <= 256
    return UMT5Config(vocab_size=259, d_model=d_model, d_kv=8 if small else 64, d_ff=2 * d_model if small else 512,
                      num_layers=2 if small else 1, num_heads=4, relative_attention_num_buckets=8,
                      relative_attention_max_distance=16, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6)


def random_text_encoder(d_model: int, *, size: str = "tiny", seq_len: int = 512, device="cpu",
                        dtype: torch.dtype = torch.float32, seed: int = 0, placement: str = "gpu"):
    """An engine.text.TextEncoder with random weights: "tiny" (tiny_umt5_config(d_model)) or
    "full" (umT5-XXL, d_model must be 4096; ~11 GB in bf16), with byte_tokenizer()."""
    from transformers import UMT5EncoderModel

    from vacelive.engine.text import TextEncoder, umt5_xxl_config

    if size not in SIZES:
        raise ValueError(f"text encoder size must be one of {SIZES}, got {size!r}")
    config = tiny_umt5_config(d_model) if size == "tiny" else umt5_xxl_config()
    if config.d_model != d_model:
        raise ValueError(f"umT5-XXL outputs {config.d_model} channels, the DiT expects {d_model}")
    home = torch.device(device) if placement == "gpu" else torch.device("cpu")
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    model = model.to_empty(device=home)
    gen = torch.Generator(device=home).manual_seed(seed)
    with torch.no_grad():  # T5-style scales: unit embeddings, 1/sqrt(fan_in) projections
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0)
            elif name == "shared.weight":
                p.normal_(0.0, 1.0, generator=gen)
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 0.1, generator=gen)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5, generator=gen)
    model.set_input_embeddings(model.shared)  # to_empty untied nothing, but keep it explicit
    model = model.to(dtype).eval().requires_grad_(False)
    return TextEncoder(model, byte_tokenizer(seq_len), device=device, placement=placement, seq_len=seq_len)


# ---------------------------------------------------------------------------------------------
# Random DiT
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Seed the global RNG for module init without disturbing the caller's RNG state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def random_dit(cfg: WanConfig, *, vace: bool, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """A CausalWanModel (wrapped in VaceWanModel when `vace`) with seeded random weights, built
    directly on `device`. VACE's before/after projections are zero in the public init (hints
    would vanish); here they are random so the hint path is numerically live. Models larger than
    1.3B (Krea's 14B) are made by random_dit_in_place: no fp32 copy of 17 B parameters."""
    from vacelive.engine.dit import CausalWanModel, VaceWanModel

    if cfg.dim > WAN_1_3B.dim:
        return random_dit_in_place(cfg, vace=vace, device=device, dtype=dtype, seed=seed)
    device = torch.device(device)
    with _seeded(seed, device), torch.device(device):
        model = CausalWanModel(cfg)
        if vace:
            model = VaceWanModel(model)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "_proj." in name:
                        p.normal_(0.0, cfg.dim ** -0.5) if name.endswith("weight") else p.zero_()
    return model.to(dtype=dtype).eval().requires_grad_(False)


def random_dit_in_place(cfg: WanConfig, *, vace: bool, device="cpu", dtype: torch.dtype = torch.bfloat16,
                        seed: int = 0) -> nn.Module:
    """Random weights made where they live, in their final dtype (FP32_PARAMS stay fp32): meta
    build, `to_empty(device)`, then each parameter initialised in place (normal with std
    fan_in^-0.5, modulations dim^-0.5, biases 0, norm weights 1). What full-size 14B benchmarks use:
    the peak is the model itself, with no host or fp32 copy."""
    from vacelive.engine.dit import CausalWanModel, VaceWanModel

    device = torch.device(device)
    with torch.device("meta"):
        model = CausalWanModel(cfg)
        if vace:
            model = VaceWanModel(model)
    model.to(dtype)
    model = model.to_empty(device=device)
    model.rebuild_buffers()
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.normal_(0.0, cfg.dim ** -0.5, generator=g)
            elif p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
    return model.eval().requires_grad_(False)


def build_random(size: str = "tiny", *, device="cpu", dtype: torch.dtype | None = None, codec: str = "wan",
                 seed: int = 0, vace: bool = True, text_encoder_size: str = "tiny",
                 cfg: WanConfig | None = None, width: int | None = None, height: int | None = None) -> Parts:
    """Random-weight parts; `cfg` overrides the DiT config of `size` (tests use smaller ones)."""
    from vacelive.engine.codecs import random_codec

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    cfg = cfg or (tiny_config() if size == "tiny" else WAN_1_3B)
    model = random_dit(cfg, vace=vace, device=device, dtype=dtype, seed=seed)
    codec_obj = random_codec(codec, small=size == "tiny", seed=seed + 1, device=device, dtype=dtype)
    text = random_text_encoder(cfg.text_dim, size=text_encoder_size, seq_len=cfg.text_len, device=device,
                               dtype=dtype, seed=seed + 2)
    from vacelive.engine.lora import LoraSet

    parts = Parts(model, codec_obj, text, LoraSet(model))
    if vace:
        parts.conditioner = make_conditioner(model, codec_obj, width=width, height=height, device=device, dtype=dtype)
    return parts


# ---------------------------------------------------------------------------------------------
# Real weights
# ---------------------------------------------------------------------------------------------
def build_from_recipe(recipe, models_dir=None, *, codec: str = "wan", text_encoder: str = "bf16",
                      text_placement: str = "gpu", vace: bool = True, device="cuda",
                      dtype: torch.dtype = torch.bfloat16, loras: Sequence = (), width: int | None = None,
                      height: int | None = None, progress: bool = True, dit_config: WanConfig | None = None,
                      codec_config=None, text_config=None) -> Parts:
    """Load a recipe's real weights. Raises engine.models_dir.MissingWeightsError (every missing
    file, where it comes from, the download command) before loading anything.

    loras: engine.lora.LoraSpec or (name, path[, scale]) tuples, applied after the pipeline LoRA
    (which is registered as "pipeline", the name the OSC schema's /vace/lora/pipeline uses).
    dit_config / codec_config / text_config replace the full-size architectures (tests load
    tiny checkpoints written in the public layouts through this same path)."""
    from vacelive.engine.codecs import LightTAECodec, TAECodec, WanVAECodec, load_codec
    from vacelive.engine.lora import LoraSpec
    from vacelive.engine.pipelines import GENERATOR, LORA, TEXT_ENCODER, TOKENIZER, VACE, WeightOptions
    from vacelive.engine.text import TextEncoder
    from vacelive.engine.dit.weights import from_checkpoint

    options = WeightOptions(codec=codec, text_encoder=text_encoder)
    paths = _require(recipe, options, models_dir, skip_roles=None if vace else {VACE})
    specs = []
    if recipe.lora is not None:
        specs.append(LoraSpec("pipeline", str(paths[LORA]), scale=recipe.lora.scale,
                              mode="merged" if recipe.lora.merge else "live", alpha=recipe.lora.alpha))
    for entry in loras:
        specs.append(entry if isinstance(entry, LoraSpec) else LoraSpec(*entry))
    gen_file = recipe.file(GENERATOR, options)
    ema = bool(gen_file.state_keys) and gen_file.state_keys[0] == "generator_ema"
    loaded = from_checkpoint(dit_config or recipe.model_config, str(paths[GENERATOR]),
                             vace_path=str(paths[VACE]) if vace else None, loras=specs, ema=ema,
                             dtype=dtype, device=device, progress=progress)
    for report in loaded.reports:
        log.info("%s", report)
    codec_role = {"wan": "vae", "tae": "tae", "lighttae": "lighttae"}[codec]
    if codec_config is None:
        codec_obj = load_codec(codec, paths[codec_role], device=device, dtype=dtype)
    else:
        cls = {"wan": WanVAECodec, "tae": TAECodec, "lighttae": LightTAECodec}[codec]
        codec_obj = cls.load(paths[codec_role], device=device, dtype=dtype, config=codec_config)
    text = TextEncoder.load(paths[TEXT_ENCODER], paths[TOKENIZER], device=device, placement=text_placement,
                            dtype=dtype, config=text_config, progress=progress)
    parts = Parts(loaded.model, codec_obj, text, loaded.loras)
    if vace:
        parts.conditioner = make_conditioner(loaded.model, codec_obj, width=width, height=height, device=device,
                                             dtype=dtype, models=models_dir)
    return parts


def _require(recipe, options, models_dir, skip_roles=None):
    """models_dir.require for the recipe without the files of `skip_roles` (a text-only run does
    not need the VACE module)."""
    from dataclasses import replace

    from vacelive.engine import models_dir as md

    if skip_roles:
        recipe = replace(recipe, files=tuple(f for f in recipe.files if f.role not in skip_roles))
    return md.require(recipe, options, models_dir)


# ---------------------------------------------------------------------------------------------
# VACE conditioner (engine.conditioning, built by another module; imported lazily)
# ---------------------------------------------------------------------------------------------
def make_conditioner(model, codec, *, width, height, device, dtype, models=None):
    """engine.conditioning.VaceConditioner for this model/codec/resolution. The constructor is
    called with the subset of (model, codec, width, height, device, dtype, models) its signature
    names (models: the models folder, where weight-based annotators look for their files)."""
    if not hasattr(model, "compute_hints"):
        raise ValueError("VACE conditioning needs a VACE-wrapped model (engine.dit.VaceWanModel)")
    try:
        from vacelive.engine.conditioning import VaceConditioner
    except ImportError as exc:
        raise RuntimeError(
            "VACE was requested but engine.conditioning.VaceConditioner is not available "
            f"({exc}); build the generator with vace=False for text-only streams") from exc
    offered = {"model": model, "codec": codec, "width": width, "height": height, "device": torch.device(device),
               "dtype": dtype, "models": models}
    params = inspect.signature(VaceConditioner).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return VaceConditioner(**offered)
    return VaceConditioner(**{k: v for k, v in offered.items() if k in params})
