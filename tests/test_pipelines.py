"""Pipeline recipes: the declared cache policy, schedule, LoRA and files match the reference."""
import pytest

from vacelive.engine.config import CONFIGS
from vacelive.engine.pipelines import (
    DEFAULT_RECIPE,
    GENERATOR,
    LORA,
    PLANNED_RECIPES,
    RECIPES,
    TEXT_ENCODER,
    TOKENIZER,
    VACE,
    VAE,
    CachePolicy,
    WeightOptions,
    get_recipe,
)
from vacelive.engine.schedule import FlowSchedule


def test_longlive_recipe():
    r = get_recipe("longlive")
    assert DEFAULT_RECIPE == "longlive" and r.model in CONFIGS and r.model_config is CONFIGS["wan2.1-1.3b"]
    assert (r.cache.local_frames, r.cache.sink_frames, r.cache.global_sink, r.cache.recache_on_cut) == (12, 3, True, True)
    assert (r.lora.rank, r.lora.alpha, r.lora.scale, r.lora.merge) == (256, 256, 1.0, True)
    assert len(r.lora.targets) * r.model_config.num_layers == 300  # every Linear of 30 blocks
    assert r.frames_per_chunk == 3
    assert (r.schedule.shift, r.schedule.steps, r.schedule.warp, r.schedule.context_noise) == (
        5.0, (1000, 750, 500, 250), True, 0)
    assert FlowSchedule(r.schedule).plan(4).timesteps == pytest.approx((1000, 937.5, 833.3333, 625), abs=1e-3)
    gen = r.file(GENERATOR)
    assert (gen.repo_id, gen.filename, gen.path) == (
        "Efficient-Large-Model/LongLive-1.3B", "models/longlive_base.pt", "LongLive-1.3B/models/longlive_base.pt")
    assert gen.state_keys[0] == "generator" and gen.strip_prefix == "model."
    lora = r.file(LORA)
    assert (lora.repo_id, lora.filename, lora.state_keys) == (
        "Efficient-Large-Model/LongLive-1.3B", "models/lora.pt", ("generator_lora",))


def test_self_forcing_recipe():
    r = get_recipe("self-forcing")
    assert (r.cache.local_frames, r.cache.sink_frames) == (21, 0) and r.lora is None
    assert r.file(LORA) is None
    gen = r.file(GENERATOR)
    assert (gen.repo_id, gen.filename) == ("gdhe17/Self-Forcing", "checkpoints/self_forcing_dmd.pt")
    assert gen.state_keys == ("generator_ema", "generator")
    assert r.schedule == get_recipe("longlive").schedule


def test_files_follow_the_options():
    r = RECIPES["longlive"]
    default = {f.role: f for f in r.needed()}
    assert set(default) == {GENERATOR, LORA, VACE, VAE, TEXT_ENCODER, TOKENIZER}
    assert (default[VAE].repo_id, default[VAE].filename) == ("Wan-AI/Wan2.1-T2V-1.3B", "Wan2.1_VAE.pth")
    assert (default[VACE].repo_id, default[VACE].filename) == (
        "Kijai/WanVideo_comfy", "Wan2_1-VACE_module_1_3B_bf16.safetensors")
    assert default[TEXT_ENCODER].path == "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth"
    toks = [f for f in r.needed() if f.role == TOKENIZER]
    assert {f.path.rsplit("/", 1)[0] for f in toks} == {"Wan2.1-T2V-1.3B/google/umt5-xxl"}
    assert "tokenizer.json" in {f.filename.rsplit("/", 1)[1] for f in toks}

    tae = WeightOptions(codec="tae", text_encoder="fp8")
    roles = {f.role: f for f in r.needed(tae)}
    assert VAE not in roles and (roles["tae"].repo_id, roles["tae"].filename) == ("lightx2v/Autoencoders", "taew2_1.pth")
    assert (roles[TEXT_ENCODER].repo_id, roles[TEXT_ENCODER].filename) == (
        "Kijai/WanVideo_comfy", "umt5-xxl-enc-fp8_e4m3fn.safetensors")
    assert r.file("lighttae", WeightOptions(codec="lighttae")).filename == "lighttaew2_1.pth"
    assert set(r.needed(tae)) | set(r.optional(tae)) == set(r.files)
    assert not set(r.needed(tae)) & set(r.optional(tae))


def test_unknown_and_planned_recipes_are_clear_errors():
    assert get_recipe("Self_Forcing") is RECIPES["self-forcing"]
    with pytest.raises(ValueError, match="available: longlive, self-forcing"):
        get_recipe("wan-bidirectional")
    for name in PLANNED_RECIPES:
        with pytest.raises(ValueError, match="planned but not implemented"):
            get_recipe(name)


def test_invalid_options_and_policies_raise():
    with pytest.raises(ValueError, match="codec"):
        WeightOptions(codec="jpeg")
    with pytest.raises(ValueError, match="text encoder"):
        WeightOptions(text_encoder="int4")
    with pytest.raises(ValueError, match="sink"):
        CachePolicy(local_frames=3, sink_frames=3)
