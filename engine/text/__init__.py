"""Text conditioning: the umT5-XXL encoder, the prompt-embedding cache, blends and transitions."""
from vacelive.engine.text.encoder import (
    PLACEMENTS,
    SEQ_LEN,
    TextEncoder,
    TextEncoderLoadError,
    clean_prompt,
    load_tokenizer,
    load_umt5,
)
from vacelive.engine.text.prompts import (
    BLEND_METHODS,
    CacheStats,
    EmbeddingCache,
    PromptState,
    PromptUpdate,
    blend,
    interpolate,
)
from vacelive.engine.text.umt5_keys import hf_to_wan_key, umt5_xxl_config, wan_to_hf_key

__all__ = [
    "BLEND_METHODS", "PLACEMENTS", "SEQ_LEN", "CacheStats", "EmbeddingCache", "PromptState",
    "PromptUpdate", "TextEncoder", "TextEncoderLoadError", "blend", "clean_prompt", "hf_to_wan_key",
    "interpolate", "load_tokenizer", "load_umt5", "umt5_xxl_config", "wan_to_hf_key",
]
