"""Krea Realtime 14B and MemFlow checkpoints: random tiny state dicts saved in each public layout
round-trip through the one checkpoint reader with the strict key report; the Krea recipe built on
the meta device takes the full Krea + VACE-14B key layouts; from_recipe loads a models folder laid
out like the recipes (MemFlow with its LoRA) and streams; `vacelive weights check --pipeline NAME`
names every missing file of every pipeline."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from vacelive.engine import checkpoint as checkpoint_mod
from vacelive.engine.checkpoint import normalize_keys
from vacelive.engine.codecs import random_codec, tiny_tae_config
from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CausalWanModel, VaceWanModel
from vacelive.engine.factory import build_from_recipe, byte_tokenizer, random_dit, random_text_encoder, tiny_umt5_config
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.lora import lora_target_names
from vacelive.engine.models_dir import check
from vacelive.engine.pipelines import GENERATOR, LORA, RECIPES, TEXT_ENCODER, TOKENIZER, VACE, WeightOptions, get_recipe
from vacelive.engine.request import ChunkRequest, Prompt
from vacelive.engine.text import hf_to_wan_key
from vacelive.engine.text.umt5_keys import HF_TIED
from vacelive.engine.checkpoint import CheckpointError
from vacelive.engine.dit.weights import load_dit_weights, load_vace_weights

from support import read_manifest

CFG = tiny_config(num_layers=2, vace_layers=(0,))
VACE_KEYS = ("vace_blocks.", "vace_patch_embedding.")
pytestmark = pytest.mark.usefixtures("single_thread")


def base_state(seed=0):
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) for k, v in CausalWanModel(CFG).state_dict().items()}


def prefixed(sd):
    return {f"model.{k}": v for k, v in sd.items()}


def save(obj, path):
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(obj, path)


# Krea: a flat safetensors file (Scope's loader strips `model.` when every key has it).
# MemFlow inference.py: 'generator' / 'generator_ema' / 'model' sub-dicts of model.<key> tensors.
LAYOUTS = {
    "krea-realtime": {
        "flat bare": lambda sd: dict(sd),
        "flat model.": prefixed,
    },
    "memflow": {
        "generator model.": lambda sd: {"generator": prefixed(sd), "critic": {"x": torch.zeros(1)}},
        "generator_ema only": lambda sd: {"generator_ema": prefixed(sd)},
        "model sub-dict": lambda sd: {"model": prefixed(sd)},
    },
}


@pytest.mark.parametrize("pipeline,layout", [(p, name) for p, ls in LAYOUTS.items() for name in ls])
def test_every_public_layout_round_trips_with_the_strict_report(tmp_path, pipeline, layout):
    f = get_recipe(pipeline).file(GENERATOR)
    path = tmp_path / f.filename
    sd = base_state()
    save(LAYOUTS[pipeline][layout](sd), path)
    with torch.device("meta"):
        model = CausalWanModel(CFG)
    report = load_dit_weights(model, path, progress=False)
    assert report.ok and report.loaded == len(sd)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())
    broken = tmp_path / ("broken" + path.suffix)
    save(LAYOUTS[pipeline][layout]({k: v for k, v in sd.items() if k != "blocks.1.ffn.2.bias"}), broken)
    with torch.device("meta"):
        model = CausalWanModel(CFG)
    with pytest.raises(CheckpointError, match=r"missing: blocks\.1\.ffn\.2\.bias") as err:
        load_dit_weights(model, broken, progress=False)
    assert broken.name in str(err.value)


class ManifestReader:
    """A stand-in for CheckpointReader over a key manifest: the keys (optionally `model.`-prefixed,
    as a flat Krea file may be) with their full-size shapes, tensors on the meta device. The real
    load_matching does the key normalisation check, the strict report and assign=True."""

    files: dict[str, dict[str, tuple]] = {}

    def __init__(self, path, *, ema=False, prefer=None):
        self.shapes = self.files[str(path)]
        self._names = normalize_keys(self.shapes)
        self.source = "safetensors"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def keys(self):
        return list(self._names)

    def shape(self, key):
        return tuple(self.shapes[self._names[key]])

    def nbytes(self, key):
        n = 2
        for s in self.shape(key):
            n *= s
        return n

    def tensor(self, key):
        return torch.empty(self.shape(key), dtype=torch.bfloat16, device="meta")


@pytest.mark.parametrize("prefix", ["", "model."])
def test_krea_recipe_on_meta_takes_the_full_krea_and_vace_14b_layouts(monkeypatch, prefix):
    recipe = get_recipe("krea-realtime")
    cfg = recipe.model_config
    assert (cfg.dim, cfg.num_layers, cfg.vace_layers) == (5120, 40, tuple(range(0, 40, 5)))
    base = read_manifest("wan2.1_t2v_14b.txt")
    vace = read_manifest("wan2.1_vace_14b.txt")
    ManifestReader.files = {"krea.safetensors": {prefix + k: v for k, v in base.items()},
                            "vace14b.safetensors": vace}
    monkeypatch.setattr(checkpoint_mod, "CheckpointReader", ManifestReader)
    with torch.device("meta"):
        model = VaceWanModel(CausalWanModel(cfg))
    model.to(torch.bfloat16)
    r1 = load_dit_weights(model, "krea.safetensors", device="meta", progress=False)
    r2 = load_vace_weights(model, "vace14b.safetensors", device="meta", progress=False)
    assert r1.ok and r1.loaded == len(base) == 1095
    assert r2.ok and r2.loaded == len(vace) == 236
    assert set(model.state_dict()) == set(base) | set(vace)


def lora_file(model, rank=4, seed=0):
    """A PEFT LoRA state dict (base_model.model.<target>.lora_{A,B}.weight) for every target."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in lora_target_names(model):
        lin = model.get_submodule(name)
        out[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.01
        out[f"base_model.model.{name}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.01
    return out


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
    save(next(iter(LAYOUTS[pipeline].values()))(base), path[GENERATOR])
    save_file({k: v.contiguous() for k, v in sd.items() if k.startswith(VACE_KEYS)}, str(path[VACE]))
    lora = None
    if LORA in path:
        lora = lora_file(ref)
        torch.save({"generator_lora": lora, "critic_lora": {}}, path[LORA])
    torch.save(random_codec("tae", small=True, seed=5).state_dict(), path["tae"])
    text = random_text_encoder(CFG.text_dim, seq_len=CFG.text_len, seed=7)
    torch.save({hf_to_wan_key(k): v for k, v in text.model.state_dict().items() if k != HF_TIED}, path[TEXT_ENCODER])
    byte_tokenizer().save_pretrained(str(root / recipe.file(TOKENIZER, options).path.rsplit("/", 1)[0]))
    for f in recipe.needed(options):
        target = root / f.path
        if f.role == TOKENIZER and not target.exists():
            target.write_text(json.dumps({"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"})
                              if target.suffix == ".json" else "unused")
    return ref, lora


@pytest.mark.parametrize("pipeline", sorted(LAYOUTS))
def test_from_recipe_loads_the_models_folder_and_streams(tmp_path, pipeline):
    recipe = get_recipe(pipeline)
    options = WeightOptions(codec="tae", text_encoder="bf16")
    missing = {m.file.role for m in check(recipe, options, tmp_path)}
    assert GENERATOR in missing and VACE in missing
    ref, lora = write_models(tmp_path, pipeline)
    assert check(recipe, options, tmp_path) == []
    parts = build_from_recipe(recipe, tmp_path, codec="tae", device="cpu", dtype=torch.float32, dit_config=CFG,
                              codec_config=tiny_tae_config(), text_config=tiny_umt5_config(CFG.text_dim),
                              width=32, height=32, progress=False)
    parts.text_encoder.seq_len = CFG.text_len
    got, want = parts.model.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    if lora is None:
        assert all(torch.equal(got[k], want[k]) for k in want)
    else:  # MemFlow: base + LoRA merged with alpha 256 / rank 4 (the recipe's alpha, the file's rank)
        name = "blocks.1.ffn.0"
        a, b = lora[f"base_model.model.{name}.lora_A.weight"], lora[f"base_model.model.{name}.lora_B.weight"]
        assert torch.allclose(got[name + ".weight"], want[name + ".weight"] + 64.0 * b @ a, atol=1e-5)
        assert parts.loras.scales == {"pipeline": 1.0}
        assert all(torch.equal(got[k], want[k]) for k in want if k.startswith(VACE_KEYS))
    gen = StreamGenerator(parts.model, parts.codec, parts.text_encoder, recipe=recipe, width=32, height=32,
                          conditioner=parts.conditioner, loras=parts.loras)
    sizes = [gen.step(ChunkRequest(prompts=[Prompt("a red cat")])).frames.shape[0] for _ in range(3)]
    assert sizes == [9, 12, 12]


@pytest.mark.parametrize("pipeline", sorted(RECIPES))
def test_weights_check_names_every_missing_file(tmp_path, pipeline):
    out = subprocess.run([sys.executable, "-m", "vacelive.bridge.cli", "weights", "check", "--pipeline", pipeline,
                          "--models", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    recipe = get_recipe(pipeline)
    needed = recipe.needed(WeightOptions())
    assert f"{len(needed)} weight file(s) for pipeline '{pipeline}' missing" in out.stderr
    for f in needed:
        assert str(tmp_path / f.path) in out.stderr and f.repo_id in out.stderr, f.path
    assert f"vacelive weights download {pipeline}" in out.stderr


def test_loading_streams_one_tensor_at_a_time(tmp_path, monkeypatch):
    """No second copy of the weights on the host: every tensor read from the file is handed to
    the target device and dropped before the next one is read (14B on a 24 GB host)."""
    import weakref

    from vacelive.engine import checkpoint

    path = tmp_path / "krea.safetensors"
    save(base_state(), path)
    alive = weakref.WeakSet()
    most = []
    inner = checkpoint.CheckpointReader.tensor

    def tracked(self, key):
        most.append(len(alive))  # host tensors still referenced when the next one is read
        t = inner(self, key)
        alive.add(t)
        return t

    monkeypatch.setattr(checkpoint.CheckpointReader, "tensor", tracked)
    with torch.device("meta"):
        model = CausalWanModel(CFG)
    report = load_dit_weights(model, path, device="meta", progress=False)
    assert report.ok and len(most) == report.loaded and max(most) == 0


def test_random_weights_in_place_match_the_public_layout_and_run():
    """Full-size random 14B models are made in place (meta build, to_empty, per-parameter init):
    same keys and dtypes as the regular builder, fp32 where the model keeps fp32, and it runs."""
    from vacelive.engine.factory import random_dit_in_place

    model = random_dit_in_place(CFG, vace=True, device="cpu", dtype=torch.bfloat16, seed=1)
    ref = random_dit(CFG, vace=True, dtype=torch.bfloat16)
    got, want = model.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    assert all(got[k].dtype == want[k].dtype and got[k].shape == want[k].shape for k in want)
    assert all(torch.isfinite(v.float()).all() for v in got.values())
    assert model.rope.cos.dtype == torch.float32 and torch.equal(model.rope.cos, ref.rope.cos)
    text = model.prepare_text(torch.randn(1, 4, CFG.text_dim))
    x = torch.randn(1, 16, 3, 4, 4)
    flow = model(x, torch.full((1, 3), 500.0), text, None, 0, vace_context=torch.randn(1, 96, 3, 4, 4))
    assert torch.isfinite(flow).all()
