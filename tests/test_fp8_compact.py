"""Compact FP8 (engine.dit.fp8 keep_originals=False): the same e4m3 forward as the reversible
switch, the bf16 weights of the swapped Linears freed, and a one-way switch that says so."""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.dit.fp8 import Fp8Linears
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.lora import lora_target_names
from vacelive.engine.request import ChunkRequest

from test_dit_fp8 import make_model, run_chunks

pytestmark = pytest.mark.usefixtures("single_thread")


def test_compact_fp8_is_the_same_forward_with_the_bf16_weights_freed():
    ref, compact = make_model(), make_model()
    before = sum(p.numel() for p in compact.parameters())
    keep = Fp8Linears(ref)
    swap = Fp8Linears(compact, keep_originals=False)
    assert swap.count == keep.count > 0 and swap.released and not keep.released
    with torch.no_grad():
        assert torch.equal(run_chunks(ref), run_chunks(compact))
    freed = sum(linear.weight.numel() == 0 for _, _, linear in swap._swapped)
    assert freed == swap.count
    assert sum(p.numel() for p in compact.parameters()) < before // 2
    with pytest.raises(RuntimeError, match="freed"):
        swap.restore()


def test_generator_with_compact_fp8_keeps_streaming_and_refuses_lora_rescale_with_a_notice():
    g = StreamGenerator.random("tiny", width=32, height=32, codec="tae", vace=False, recipe="memflow")
    gen = torch.Generator().manual_seed(0)
    lora = {}
    for name in lora_target_names(g.model):
        lin = g.model.get_submodule(name)
        lora[f"base_model.model.{name}.lora_A.weight"] = torch.randn(2, lin.in_features, generator=gen) * 0.01
        lora[f"base_model.model.{name}.lora_B.weight"] = torch.randn(lin.out_features, 2, generator=gen) * 0.01
    g.loras.add("pipeline", lora)  # merged, like MemFlow's own LoRA
    g.set_fp8(True, compact=True)
    r = g.step(ChunkRequest(lora_scales={"pipeline": 0.5}))
    assert any("compact FP8" in n for n in r.notices) and g.loras.scales["pipeline"] == 1.0
    assert g.describe()["fp8"] is True
