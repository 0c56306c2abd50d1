"""Causal Wan2.1 DiT, its KV-cache policies and the VACE composition wrapper."""
from vacelive.engine.dit.attention import TextState
from vacelive.engine.dit.kv_cache import CachePolicy, CacheState, ChunkPlan, KVCache, SinkWindow
from vacelive.engine.dit.model import CausalWanModel, keeps_fp32
from vacelive.engine.dit.rope import RopeTable, rope_split
from vacelive.engine.dit.vace import VACE_PREFIXES, VaceWanModel

__all__ = [
    "CachePolicy", "CacheState", "ChunkPlan", "KVCache", "SinkWindow",
    "CausalWanModel", "TextState", "keeps_fp32",
    "RopeTable", "rope_split",
    "VACE_PREFIXES", "VaceWanModel",
]
