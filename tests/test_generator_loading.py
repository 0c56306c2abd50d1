"""from_recipe's loading path end to end on tiny checkpoints written in the public layouts into a
models folder: LongLive generator .pt (`generator` / `model.` keys), PEFT LoRA under
`generator_lora`, VACE module-only safetensors, TAE .pth, Wan-named umT5 .pth, tokenizer folder."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vacelive.engine.codecs import random_codec, tiny_tae_config
from vacelive.engine.config import tiny_config
from vacelive.engine.factory import build_from_recipe, byte_tokenizer, random_dit, random_text_encoder, tiny_umt5_config
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.lora import lora_target_names
from vacelive.engine.pipelines import GENERATOR, LORA, TEXT_ENCODER, TOKENIZER, VACE, WeightOptions, get_recipe
from vacelive.engine.request import ChunkRequest, Prompt
from vacelive.engine.text import hf_to_wan_key
from vacelive.engine.text.umt5_keys import HF_TIED

CFG = tiny_config(num_layers=2, vace_layers=(0,))
RANK = 4


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder holding every file of LongLive with codec tae / text encoder bf16."""
    root = tmp_path_factory.mktemp("models")
    recipe = get_recipe("longlive")
    options = WeightOptions(codec="tae", text_encoder="bf16")
    path = {f.role: root / f.path for f in recipe.needed(options) if f.role != TOKENIZER}
    for p in path.values():
        p.parent.mkdir(parents=True, exist_ok=True)

    ref = random_dit(CFG, vace=True, seed=3)
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    base = {f"model.{k}": v for k, v in sd.items() if not k.startswith(("vace_blocks.", "vace_patch_embedding."))}
    torch.save({"generator": base, "generator_ema": base}, path[GENERATOR])
    save_file({k: v.contiguous() for k, v in sd.items() if k.startswith(("vace_blocks.", "vace_patch_embedding."))},
              str(path[VACE]))
    g = torch.Generator().manual_seed(0)
    lora = {}
    for name in lora_target_names(ref):
        lin = ref.get_submodule(name)
        lora[f"base_model.model.{name}.lora_A.weight"] = torch.randn(RANK, lin.in_features, generator=g) * 0.01
        lora[f"base_model.model.{name}.lora_B.weight"] = torch.randn(lin.out_features, RANK, generator=g) * 0.01
    torch.save({"generator_lora": lora}, path[LORA])
    torch.save(random_codec("tae", small=True, seed=5).state_dict(), path["tae"])
    text = random_text_encoder(CFG.text_dim, seq_len=CFG.text_len, seed=7)
    torch.save({hf_to_wan_key(k): v for k, v in text.model.state_dict().items() if k != HF_TIED}, path[TEXT_ENCODER])
    tok_dir = root / recipe.file(TOKENIZER, options).path.rsplit("/", 1)[0]
    byte_tokenizer().save_pretrained(str(tok_dir))
    for f in recipe.needed(options):  # files transformers 5 does not write (tokenizer.json is what is read)
        target = root / f.path
        if f.role == TOKENIZER and not target.exists():
            target.write_text(json.dumps({"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"})
                              if target.suffix == ".json" else "unused")
    return root, ref, lora, text


def load(root, **kw):
    kw.setdefault("vace", True)
    parts = build_from_recipe(get_recipe("longlive"), root, codec="tae", device="cpu", dtype=torch.float32,
                             dit_config=CFG, codec_config=tiny_tae_config(),
                             text_config=tiny_umt5_config(CFG.text_dim), width=32, height=32, progress=False, **kw)
    parts.text_encoder.seq_len = CFG.text_len  # the tiny DiT reads 16 text tokens, not 512
    return parts


def test_recipe_files_load_into_the_right_parts_with_the_pipeline_lora_merged(models):
    root, ref, lora, text = models
    parts = load(root)
    model = parts.model
    assert parts.loras.scales == {"pipeline": 1.0} and parts.conditioner is not None
    # VACE and un-targeted base weights are exactly the files'
    ref_sd, got = ref.state_dict(), model.state_dict()
    assert set(got) == set(ref_sd)
    for k in ("vace_blocks.0.after_proj.weight", "vace_patch_embedding.weight", "patch_embedding.weight",
              "blocks.1.modulation", "head.head.weight", "blocks.0.self_attn.norm_q.weight"):
        assert torch.equal(got[k], ref_sd[k]), k
    # a LoRA target = W + alpha/r * B @ A with LongLive's alpha 256
    name = "blocks.1.ffn.0"
    a, b = lora[f"base_model.model.{name}.lora_A.weight"], lora[f"base_model.model.{name}.lora_B.weight"]
    want = ref_sd[f"{name}.weight"] + (256 / RANK) * (b @ a)
    assert torch.allclose(got[f"{name}.weight"], want, atol=1e-5)
    # the text encoder is the saved one (Wan names renamed back), with the folder's tokenizer
    assert torch.allclose(parts.text_encoder.encode(["a red cat"]), text.encode(["a red cat"]), atol=1e-6)


def test_loaded_parts_stream_and_text_only_skips_the_vace_file(models):
    root, *_ = models
    parts = load(root, vace=False)
    assert parts.conditioner is None and not hasattr(parts.model, "compute_hints")
    gen = StreamGenerator(parts.model, parts.codec, parts.text_encoder, width=32, height=32, loras=parts.loras)
    frames = [gen.step(ChunkRequest(prompts=[Prompt("a red cat")], lora_scales={"pipeline": 0.5})).frames.shape[0]
              for _ in range(2)]
    assert frames == [9, 12] and gen.describe()["loras"] == {"pipeline": 0.5}
