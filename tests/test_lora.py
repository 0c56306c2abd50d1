"""LoRA: exactly the 300 main-block Linears (full-size meta model), merged == live (PEFT) at any
scale, several named LoRAs, both file layouts, clear errors."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from vacelive.engine.config import WAN_1_3B, tiny_config
from vacelive.engine.dit import CausalWanModel, VaceWanModel
from vacelive.engine.lora import LoraSet, lora_target_names, read_lora
from vacelive.engine.checkpoint import CheckpointError

CFG = tiny_config(num_layers=3, vace_layers=(0, 2))
SUFFIXES = {"self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"}


pytestmark = pytest.mark.usefixtures("single_thread")


def random_lora(model, rank=4, seed=0, prefix="base_model.model."):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in lora_target_names(model):
        lin = model.get_submodule(name)
        out[f"{prefix}{name}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.2
        out[f"{prefix}{name}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.2
    return out


def make_pair(seed=0):
    torch.manual_seed(seed)
    a = VaceWanModel(CausalWanModel(CFG)).eval()
    b = copy.deepcopy(a)
    return a, b


def run(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 3, 4, 4, generator=g)
    vc = torch.randn(1, 96, 3, 4, 4, generator=g)
    text = model.prepare_text(torch.randn(1, 5, CFG.text_dim, generator=g))
    with torch.no_grad():
        return model(x, torch.full((1, 3), 750.0), text, vace_context=vc), text


def test_targets_are_exactly_the_300_main_block_linears_of_full_size_vace_model():
    from peft import LoraConfig, inject_adapter_in_model

    with torch.device("meta"):
        model = VaceWanModel(CausalWanModel(WAN_1_3B))
    names = lora_target_names(model)
    assert len(names) == 300
    assert {n.split(".", 2)[2] for n in names} == SUFFIXES and {int(n.split(".")[1]) for n in names} == set(range(30))
    inject_adapter_in_model(LoraConfig(r=256, lora_alpha=256, target_modules=names), model, low_cpu_mem_usage=True)
    wrapped = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    assert sorted(wrapped) == sorted(names) and not any(n.startswith("vace_") for n in wrapped)
    assert model.blocks[0].self_attn.q.lora_A["default"].weight.shape == (256, 1536)


@pytest.mark.parametrize("scales", [(0.7, 0.2), (1.0, 0.0)])
def test_live_runtime_scale_equals_merged_scale(tmp_path, scales):
    merged, live = make_pair()
    torch.save(random_lora(merged), tmp_path / "lora.pt")
    base_out, _ = run(merged)
    m_set, l_set = LoraSet(merged), LoraSet(live)
    m_set.add("style", tmp_path / "lora.pt", scale=scales[0], mode="merged")
    l_set.add("style", tmp_path / "lora.pt", scale=scales[0], mode="live")
    y_m, _ = run(merged)
    y_l, _ = run(live)
    assert (y_m - y_l).abs().max() <= 1e-5 and (y_m - base_out).abs().max() > 1e-3
    m_set.set_scale("style", scales[1])
    l_set.set_scale("style", scales[1])
    y_m, _ = run(merged)
    y_l, _ = run(live)
    assert (y_m - y_l).abs().max() <= 1e-5
    if scales[1] == 0.0:
        assert (y_m - base_out).abs().max() <= 1e-5


def test_several_named_loras_each_with_its_own_scale(tmp_path):
    mixed, all_live = make_pair()
    a, b = random_lora(mixed, seed=1), random_lora(mixed, rank=2, seed=2)
    s_mixed, s_live = LoraSet(mixed), LoraSet(all_live)
    s_mixed.add("longlive", a, mode="merged")
    s_mixed.add("user", b, scale=0.5, mode="live")
    s_live.add("longlive", a, mode="live")
    s_live.add("user", b, scale=0.5, mode="live")
    assert s_mixed.scales == {"longlive": 1.0, "user": 0.5}
    y1, _ = run(mixed)
    y2, _ = run(all_live)
    assert (y1 - y2).abs().max() <= 1e-5
    for s in (s_mixed, s_live):
        s.set_scale("user", 1.5)
    assert (run(mixed)[0] - run(all_live)[0]).abs().max() <= 1e-5
    # removing everything restores the plain model and its public state-dict layout
    before = {k: v.clone() for k, v in make_pair()[0].state_dict().items()}
    for s in (s_mixed, s_live):
        s.remove("user")
        s.remove("longlive")
    assert list(all_live.state_dict()) == list(before)
    for k, v in mixed.state_dict().items():
        assert torch.allclose(v, before[k], atol=1e-5), k


def test_scale_change_recomputes_cached_text_kv(tmp_path):
    model, _ = make_pair()
    loras = LoraSet(model)
    loras.add("user", random_lora(model), scale=0.3, mode="live")
    _, text = run(model)
    n = text.kv_computations
    with torch.no_grad():
        model(torch.randn(1, 16, 3, 4, 4), torch.zeros(1, 3), text)
    assert text.kv_computations == n  # cached
    loras.set_scale("user", 0.9)
    with torch.no_grad():
        model(torch.randn(1, 16, 3, 4, 4), torch.zeros(1, 3), text)
    assert text.kv_computations == n + CFG.num_layers  # cross_attn.k/v changed -> recomputed


def test_file_layouts_and_errors(tmp_path):
    model, _ = make_pair()
    sd = random_lora(model)
    torch.save(sd, tmp_path / "raw.pt")
    torch.save({"generator_lora": sd, "critic_lora": {"x": torch.zeros(1)}}, tmp_path / "lora.pt")
    save_file({k.replace("lora_A.weight", "lora_A.default.weight").replace("lora_B.weight", "lora_B.default.weight"): v for k, v in sd.items()}, tmp_path / "named.safetensors")
    ref = read_lora(tmp_path / "raw.pt")
    assert len(ref) == 3 * 10
    for name in ("lora.pt", "named.safetensors"):
        got = read_lora(tmp_path / name)
        assert got.keys() == ref.keys() and all(torch.equal(got[k][0], ref[k][0]) and torch.equal(got[k][1], ref[k][1]) for k in ref)

    vace = {**sd, "base_model.model.vace_blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, CFG.dim),
            "base_model.model.vace_blocks.0.self_attn.q.lora_B.weight": torch.zeros(CFG.dim, 4)}
    torch.save(vace, tmp_path / "vace_lora.pt")
    with pytest.raises(CheckpointError, match=r"vace_lora.pt.*vace_blocks.0.self_attn.q"):
        read_lora(tmp_path / "vace_lora.pt")
    half = {k: v for k, v in sd.items() if k != "base_model.model.blocks.2.ffn.0.lora_B.weight"}
    torch.save(half, tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match="blocks.2.ffn.0 has lora_A but no lora_B"):
        read_lora(tmp_path / "half.pt")
    wrong = dict(sd)
    wrong["base_model.model.blocks.1.ffn.0.lora_A.weight"] = torch.zeros(4, CFG.dim + 1)
    wrong["base_model.model.blocks.1.ffn.0.lora_B.weight"] = torch.zeros(CFG.ffn_dim, 4)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match=r"wrong.pt.*blocks.1.ffn.0"):
        LoraSet(model).add("x", tmp_path / "wrong.pt")
    loras = LoraSet(model)
    loras.add("ok", tmp_path / "raw.pt")
    with pytest.raises(ValueError, match="already"):
        loras.add("ok", tmp_path / "raw.pt")
    with pytest.raises(ValueError, match="mode"):
        loras.add("y", tmp_path / "raw.pt", mode="fused")
