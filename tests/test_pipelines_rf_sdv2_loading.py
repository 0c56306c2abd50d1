"""RewardForcing and StreamDiffusionV2 checkpoints: random tiny state dicts saved in every layout
their public loaders accept round-trip through the one reader with the strict key report, and
from_recipe's path loads a models folder laid out like the recipes and streams."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vacelive.engine.codecs import random_codec, tiny_tae_config
from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CausalWanModel
from vacelive.engine.factory import build_from_recipe, byte_tokenizer, random_dit, random_text_encoder, tiny_umt5_config
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.models_dir import check
from vacelive.engine.pipelines import GENERATOR, TEXT_ENCODER, TOKENIZER, VACE, WeightOptions, get_recipe
from vacelive.engine.request import ChunkRequest, Prompt
from vacelive.engine.text import hf_to_wan_key
from vacelive.engine.text.umt5_keys import HF_TIED
from vacelive.engine.checkpoint import CheckpointError
from vacelive.engine.dit.weights import load_dit_weights

CFG = tiny_config(num_layers=2, vace_layers=(0,))
VACE_KEYS = ("vace_blocks.", "vace_patch_embedding.")
pytestmark = pytest.mark.usefixtures("single_thread")


def base_state(seed=0):
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) for k, v in CausalWanModel(CFG).state_dict().items()}


def prefixed(sd):
    return {f"model.{k}": v for k, v in sd.items()}


# Each pipeline's generator file as its public loaders accept it (engine.pipelines notes):
# RewardForcing inference.py loads a flat dict into WanDiffusionWrapper (model.<key>); Scope also
# takes it without the prefix. StreamDiffusionV2 load_generator_state_dict takes 'generator',
# 'generator_ema' or 'state_dict' sub-dicts or a flat dict, keys with or without model.
LAYOUTS = {
    "reward-forcing": {
        "flat model.": lambda sd: prefixed(sd),
        "flat bare": lambda sd: dict(sd),
    },
    "streamdiffusionv2": {
        "generator model.": lambda sd: {"generator": prefixed(sd), "critic": {"x": torch.zeros(1)}},
        "generator_ema only": lambda sd: {"generator_ema": prefixed(sd)},
        "state_dict bare": lambda sd: {"state_dict": dict(sd)},
        "flat model.": lambda sd: prefixed(sd),
        "fsdp-wrapped generator": lambda sd: {"generator": {f"model._fsdp_wrapped_module.{k}": v for k, v in sd.items()}},
    },
}


@pytest.mark.parametrize("pipeline,layout", [(p, name) for p, ls in LAYOUTS.items() for name in ls])
def test_every_public_layout_round_trips_with_the_strict_report(tmp_path, pipeline, layout):
    recipe = get_recipe(pipeline)
    f = recipe.file(GENERATOR)
    path = tmp_path / f.path
    path.parent.mkdir(parents=True)
    sd = base_state()
    torch.save(LAYOUTS[pipeline][layout](sd), path)
    with torch.device("meta"):
        model = CausalWanModel(CFG)
    report = load_dit_weights(model, path, progress=False)
    assert report.ok and report.loaded == len(sd)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())
    # a file that lacks a key is refused, naming the file and the key
    broken = LAYOUTS[pipeline][layout]({k: v for k, v in sd.items() if k != "blocks.1.ffn.2.bias"})
    torch.save(broken, tmp_path / "broken.pt")
    with torch.device("meta"):
        model = CausalWanModel(CFG)
    with pytest.raises(CheckpointError, match=r"missing: blocks\.1\.ffn\.2\.bias") as err:
        load_dit_weights(model, tmp_path / "broken.pt", progress=False)
    assert "broken.pt" in str(err.value)


def write_models(root, pipeline):
    """Every file the recipe needs with codec tae / text encoder bf16, tiny and random."""
    recipe = get_recipe(pipeline)
    options = WeightOptions(codec="tae", text_encoder="bf16")
    path = {f.role: root / f.path for f in recipe.needed(options) if f.role != TOKENIZER}
    for p in path.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    ref = random_dit(CFG, vace=True, seed=3)
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    base = {k: v for k, v in sd.items() if not k.startswith(VACE_KEYS)}
    torch.save(next(iter(LAYOUTS[pipeline].values()))(base), path[GENERATOR])  # the real layout
    save_file({k: v.contiguous() for k, v in sd.items() if k.startswith(VACE_KEYS)}, str(path[VACE]))
    torch.save(random_codec("tae", small=True, seed=5).state_dict(), path["tae"])
    text = random_text_encoder(CFG.text_dim, seq_len=CFG.text_len, seed=7)
    torch.save({hf_to_wan_key(k): v for k, v in text.model.state_dict().items() if k != HF_TIED}, path[TEXT_ENCODER])
    byte_tokenizer().save_pretrained(str(root / recipe.file(TOKENIZER, options).path.rsplit("/", 1)[0]))
    for f in recipe.needed(options):
        target = root / f.path
        if f.role == TOKENIZER and not target.exists():
            target.write_text(json.dumps({"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"})
                              if target.suffix == ".json" else "unused")
    return ref, options


@pytest.mark.parametrize("pipeline", sorted(LAYOUTS))
def test_from_recipe_loads_the_models_folder_and_streams(tmp_path, pipeline):
    recipe = get_recipe(pipeline)
    options = WeightOptions(codec="tae", text_encoder="bf16")
    missing = {m.file.role for m in check(recipe, options, tmp_path)}
    assert GENERATOR in missing and VACE in missing  # `weights check` names every missing file
    ref, _ = write_models(tmp_path, pipeline)
    assert check(recipe, options, tmp_path) == []
    parts = build_from_recipe(recipe, tmp_path, codec="tae", device="cpu", dtype=torch.float32, dit_config=CFG,
                              codec_config=tiny_tae_config(), text_config=tiny_umt5_config(CFG.text_dim),
                              width=32, height=32, progress=False)
    parts.text_encoder.seq_len = CFG.text_len
    assert parts.loras is None or not parts.loras.scales  # neither pipeline has a LoRA
    got, want = parts.model.state_dict(), ref.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    gen = StreamGenerator(parts.model, parts.codec, parts.text_encoder, recipe=recipe, width=32, height=32,
                          conditioner=parts.conditioner)
    sizes = [gen.step(ChunkRequest(prompts=[Prompt("a red cat")])).frames.shape[0] for _ in range(3)]
    assert sizes == ([5, 4, 4] if pipeline == "streamdiffusionv2" else [9, 12, 12])
