"""Checkpoint loading: every public layout round-trips into a meta-built model; mismatches give a
short error naming the file and the first keys."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CausalWanModel, VaceWanModel, keeps_fp32
from vacelive.engine.lora import LoraSpec, lora_target_names
from vacelive.engine.checkpoint import CheckpointError
from vacelive.engine.dit.weights import from_checkpoint, load_dit_weights, load_vace_weights

CFG = tiny_config(num_layers=2, vace_layers=(0,))


pytestmark = pytest.mark.usefixtures("single_thread")


def random_full_state(seed=0) -> dict[str, torch.Tensor]:
    """A random full VACE state dict of the tiny config (the public key layout)."""
    torch.manual_seed(seed)
    model = VaceWanModel(CausalWanModel(CFG))
    return {k: torch.randn_like(v) for k, v in model.state_dict().items()}


def split(state):
    base = {k: v for k, v in state.items() if not k.startswith("vace_")}
    vace = {k: v for k, v in state.items() if k.startswith("vace_")}
    return base, vace


def meta_model(vace=False, dtype=None):
    with torch.device("meta"):
        base = CausalWanModel(CFG)
        model = VaceWanModel(base) if vace else base
    if dtype is not None:
        model.to(dtype)
    return model


def assert_loaded(model, expected: dict[str, torch.Tensor]):
    sd = model.state_dict()
    for k, v in expected.items():
        assert sd[k].device.type == "cpu" and torch.equal(sd[k], v.to(sd[k].dtype)), k
    assert not any(p.is_meta for p in model.parameters())


def test_bare_safetensors_and_full_vace_filtered(tmp_path):
    state = random_full_state()
    base_sd, vace_sd = split(state)
    save_file(base_sd, tmp_path / "diffusion_pytorch_model.safetensors")
    model = meta_model()
    report = load_dit_weights(model, tmp_path / "diffusion_pytorch_model.safetensors", progress=False)
    assert report.ok and report.loaded == len(base_sd) and report.skipped == 0
    assert_loaded(model, base_sd)

    save_file(state, tmp_path / "vace_full.safetensors")  # full VACE checkpoint: base + VACE keys
    wrapped = meta_model(vace=True)
    r1 = load_dit_weights(wrapped, tmp_path / "vace_full.safetensors", progress=False)
    r2 = load_vace_weights(wrapped, tmp_path / "vace_full.safetensors", progress=False)
    assert (r1.loaded, r1.skipped, r2.loaded, r2.skipped) == (len(base_sd), len(vace_sd), len(vace_sd), len(base_sd))
    assert_loaded(wrapped, state)
    # the loaded model runs (rope tables live next to the weights)
    x = torch.randn(1, 16, 3, 4, 4)
    with torch.no_grad():
        y = wrapped(x, torch.full((1, 3), 500.0), wrapped.prepare_text(torch.randn(1, 4, CFG.text_dim)), vace_context=torch.randn(1, 96, 3, 4, 4))
    assert torch.isfinite(y).all()


def test_vace_module_only_file(tmp_path):
    state = random_full_state()
    base_sd, vace_sd = split(state)
    save_file(base_sd, tmp_path / "base.safetensors")
    save_file(vace_sd, tmp_path / "Wan2_1-VACE_module_1_3B_bf16.safetensors")
    wrapped = meta_model(vace=True)
    load_dit_weights(wrapped, tmp_path / "base.safetensors", progress=False)
    report = load_vace_weights(wrapped, tmp_path / "Wan2_1-VACE_module_1_3B_bf16.safetensors", progress=False)
    assert report.ok and report.loaded == len(vace_sd)
    assert_loaded(wrapped, state)
    with pytest.raises(CheckpointError, match="no VACE keys"):
        load_vace_weights(meta_model(vace=True), tmp_path / "base.safetensors", progress=False)


def test_trainer_pt_layouts_generator_ema_model_prefix_and_fsdp(tmp_path):
    base_sd, _ = split(random_full_state())
    plus_one = {f"model.{k}": v + 1 for k, v in base_sd.items()}
    ema = {f"model._fsdp_wrapped_module.{k}": v for k, v in base_sd.items()}
    torch.save({"generator": plus_one, "generator_ema": ema, "critic": {"x": torch.zeros(1)}, "step": 7}, tmp_path / "self_forcing_dmd.pt")
    m = meta_model()
    report = load_dit_weights(m, tmp_path / "self_forcing_dmd.pt", ema=True, progress=False)
    assert report.source == "generator_ema"
    assert_loaded(m, base_sd)
    m = meta_model()
    assert load_dit_weights(m, tmp_path / "self_forcing_dmd.pt", progress=False).source == "generator"
    assert_loaded(m, {k: v + 1 for k, v in base_sd.items()})

    torch.save({"model": {f"model.{k}": v for k, v in base_sd.items()}}, tmp_path / "ode_init.pt")
    m = meta_model()
    load_dit_weights(m, tmp_path / "ode_init.pt", progress=False)
    assert_loaded(m, base_sd)
    with pytest.raises(CheckpointError, match="generator_ema"):
        load_dit_weights(meta_model(), tmp_path / "ode_init.pt", ema=True, progress=False)


def test_flat_dicts_with_and_without_model_prefix(tmp_path):
    base_sd, _ = split(random_full_state())
    torch.save({f"model.{k}": v for k, v in base_sd.items()}, tmp_path / "rewardforcing.pt")
    save_file(base_sd, tmp_path / "krea-realtime-video.safetensors")
    for name in ("rewardforcing.pt", "krea-realtime-video.safetensors"):
        m = meta_model()
        assert load_dit_weights(m, tmp_path / name, progress=False).ok
        assert_loaded(m, base_sd)


def test_dtype_cast_per_tensor_fp8_upcast_and_fp32_pins(tmp_path):
    base_sd, _ = split(random_full_state())
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.dim() == 2 else v for k, v in base_sd.items()}
    save_file(fp8, tmp_path / "fp8.safetensors")
    m = meta_model(dtype=torch.bfloat16)
    load_dit_weights(m, tmp_path / "fp8.safetensors", progress=False)
    for n, p in m.named_parameters():
        assert p.dtype == (torch.float32 if keeps_fp32(n) else torch.bfloat16), n
        assert torch.equal(p, fp8[n].to(p.dtype)), n  # fp8 upcast exactly, pinned kept at fp32
    assert m.rope.cos.dtype == torch.float32


def test_mismatches_raise_short_errors_naming_file_and_key(tmp_path):
    base_sd, vace_sd = split(random_full_state())
    cases = {
        "missing.safetensors": ({k: v for k, v in base_sd.items() if k != "blocks.1.ffn.2.bias"}, "missing: blocks.1.ffn.2.bias"),
        "extra.safetensors": ({**base_sd, "blocks.0.extra.weight": torch.zeros(2)}, "unexpected: blocks.0.extra.weight"),
        "shape.safetensors": ({**base_sd, "head.head.bias": torch.zeros(3)}, r"head.head.bias \(file \(3,\) vs model \(64,\)\)"),
    }
    for name, (sd, needle) in cases.items():
        save_file(sd, tmp_path / name)
        with pytest.raises(CheckpointError, match=needle) as err:
            load_dit_weights(meta_model(), tmp_path / name, progress=False)
        assert name in str(err.value)
    # thousands of problems -> a few names, not a wall of text
    big = {f"blocks.{i}.junk": torch.zeros(1) for i in range(500)}
    save_file({**base_sd, **big}, tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_dit_weights(meta_model(), tmp_path / "junk.safetensors", progress=False)
    assert "500 unexpected" in str(err.value) and "+495 more" in str(err.value) and len(str(err.value)) < 600
    # non-strict: report and load what matches
    m = meta_model()
    report = load_dit_weights(m, tmp_path / "extra.safetensors", strict=False, progress=False)
    assert report.unexpected == ["blocks.0.extra.weight"] and report.loaded == len(base_sd)
    # a VACE-only file is not a base checkpoint; unreadable and absent files are named
    save_file(vace_sd, tmp_path / "vace_only.safetensors")
    with pytest.raises(CheckpointError, match="no DiT keys"):
        load_dit_weights(meta_model(), tmp_path / "vace_only.safetensors", progress=False)
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_dit_weights(meta_model(), tmp_path / "broken.safetensors", progress=False)
    with pytest.raises(CheckpointError, match="not found"):
        load_dit_weights(meta_model(), tmp_path / "nope.pt", progress=False)


def test_from_checkpoint_order_base_vace_lora(tmp_path):
    state = random_full_state()
    base_sd, vace_sd = split(state)
    torch.save({"generator": {f"model.{k}": v for k, v in base_sd.items()}}, tmp_path / "longlive_base.pt")
    save_file(vace_sd, tmp_path / "vace.safetensors")
    ref = VaceWanModel(CausalWanModel(CFG))
    ref.load_state_dict(state)
    g = torch.Generator().manual_seed(3)
    lora = {}
    for name in lora_target_names(ref):
        lin = ref.get_submodule(name)
        lora[f"base_model.model.{name}.lora_A.weight"] = torch.randn(4, lin.in_features, generator=g) * 0.1
        lora[f"base_model.model.{name}.lora_B.weight"] = torch.randn(lin.out_features, 4, generator=g) * 0.1
    torch.save({"generator_lora": lora}, tmp_path / "lora.pt")
    built = from_checkpoint(CFG, tmp_path / "longlive_base.pt", vace_path=tmp_path / "vace.safetensors",
                        loras=[LoraSpec("longlive", str(tmp_path / "lora.pt"))], dtype=torch.float32, device="cpu", progress=False)
    assert [r.kind for r in built.reports] == ["DiT", "VACE", "LoRA"]
    model = built.model
    assert not any(p.requires_grad for p in model.parameters())
    w = ref.blocks[1].ffn[2].weight + lora["base_model.model.blocks.1.ffn.2.lora_B.weight"] @ lora["base_model.model.blocks.1.ffn.2.lora_A.weight"]
    assert torch.allclose(model.blocks[1].ffn[2].weight, w, atol=1e-6)
    assert torch.equal(model.vace_blocks[0].after_proj.weight, vace_sd["vace_blocks.0.after_proj.weight"])
