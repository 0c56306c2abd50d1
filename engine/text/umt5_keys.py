"""umT5-XXL encoder state-dict layouts: Wan's native names <-> transformers `UMT5EncoderModel`.

Wan names: Wan2.1 `wan/modules/t5.py`. Wan's `models_t5_umt5-xxl-enc-bf16.pth` and Kijai's
`umt5-xxl-enc-fp8_e4m3fn.safetensors` use Wan's names (242 tensors); the transformers model loads
them after a pure rename, so no weight is reshaped, transposed or re-scaled.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from transformers import UMT5Config

# HF ties the encoder's input embedding to `shared`; checkpoints may carry either name or both.
HF_SHARED = "shared.weight"
HF_TIED = "encoder.embed_tokens.weight"

# Per-block names: Wan suffix -> HF suffix (block i -> encoder.block.i).
_BLOCK_RENAMES: tuple[tuple[str, str], ...] = (
    ("norm1.weight", "layer.0.layer_norm.weight"),
    ("attn.q.weight", "layer.0.SelfAttention.q.weight"),
    ("attn.k.weight", "layer.0.SelfAttention.k.weight"),
    ("attn.v.weight", "layer.0.SelfAttention.v.weight"),
    ("attn.o.weight", "layer.0.SelfAttention.o.weight"),
    # shared_pos=False: every layer owns its relative-position bias table (32 buckets x 64 heads).
    ("pos_embedding.embedding.weight", "layer.0.SelfAttention.relative_attention_bias.weight"),
    ("norm2.weight", "layer.1.layer_norm.weight"),
    ("ffn.gate.0.weight", "layer.1.DenseReluDense.wi_0.weight"),  # GELU(tanh) branch
    ("ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight"),  # linear branch
    ("ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight"),
)
_TOP_RENAMES: tuple[tuple[str, str], ...] = (
    ("token_embedding.weight", HF_SHARED),
    ("norm.weight", "encoder.final_layer_norm.weight"),
)
_W2H_BLOCK = dict(_BLOCK_RENAMES)
_H2W_BLOCK = {h: w for w, h in _BLOCK_RENAMES}
_W2H_TOP = dict(_TOP_RENAMES)
_H2W_TOP = {h: w for w, h in _TOP_RENAMES}
_WAN_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.(.+)$")


def umt5_xxl_config() -> UMT5Config:
    """The umT5-XXL encoder exactly as Wan uses it (5.68 B parameters)."""
    return UMT5Config(
        vocab_size=256384,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",  # HF: GELU(tanh) gate * linear, as Wan's T5FeedForward
        layer_norm_epsilon=1e-6,
    )


def wan_to_hf_key(key: str) -> str | None:
    """HF name of one Wan-layout key, or None if the key is not part of Wan's encoder."""
    if key in _W2H_TOP:
        return _W2H_TOP[key]
    m = _WAN_BLOCK.match(key)
    if m and m.group(2) in _W2H_BLOCK:
        return f"encoder.block.{m.group(1)}.{_W2H_BLOCK[m.group(2)]}"
    return None


def hf_to_wan_key(key: str) -> str | None:
    """Wan name of one HF-layout key (the tied embed_tokens maps to the embedding too)."""
    if key == HF_TIED:
        return "token_embedding.weight"
    if key in _H2W_TOP:
        return _H2W_TOP[key]
    m = _HF_BLOCK.match(key)
    if m and m.group(2) in _H2W_BLOCK:
        return f"blocks.{m.group(1)}.{_H2W_BLOCK[m.group(2)]}"
    return None


def detect_layout(keys: Iterable[str]) -> str:
    """'wan' or 'hf'; raises ValueError when the keys look like neither."""
    keys = set(keys)
    if "token_embedding.weight" in keys or any(_WAN_BLOCK.match(k) for k in keys):
        return "wan"
    if HF_SHARED in keys or HF_TIED in keys or any(_HF_BLOCK.match(k) for k in keys):
        return "hf"
    first = sorted(keys)[:5]
    raise ValueError(f"neither Wan nor transformers umT5 encoder key names (first keys: {first})")


def to_hf_names(keys: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Map checkpoint keys to HF names.

    Returns ({hf_key: checkpoint_key}, unknown_checkpoint_keys). The tied embedding is always
    returned under `shared.weight` only; the loader re-ties `encoder.embed_tokens` to it.
    """
    keys = list(keys)
    layout = detect_layout(keys)
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    for key in keys:
        if layout == "wan":
            hf = wan_to_hf_key(key)
        elif key == HF_TIED:
            hf = HF_SHARED
            if HF_SHARED in keys:  # both names present: one tensor, keep `shared.weight`
                continue
        else:
            hf = key if hf_to_wan_key(key) is not None else None
        if hf is None:
            unknown.append(key)
        else:
            mapping[hf] = key
    return mapping, unknown
