"""--fp8 auto decides by timing a whole block (engine.dit.fp8_auto), bf16 against FP8, eager or
through torch.compile like the model's blocks. CPU, tiny models, injected timers: nothing here
depends on how fast this machine is; torch.compile runs with backend="eager" (TorchDynamo only)."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import fp8_auto
from vacelive.engine.dit.attention import LocalAttention
from vacelive.engine.dit.compile import compile_count
from vacelive.engine.dit.fp8 import BLOCK_LINEARS, Fp8Linear, relative_error
from vacelive.engine.dit.fp8_auto import choose_fp8_rows
from vacelive.engine.dit.model import CausalWanModel
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkRequest, Prompt
from vacelive.engine.warmup import reachable_shapes

pytestmark = pytest.mark.usefixtures("single_thread")
GRID = (3, 4)  # tokens per latent frame: 12
SHAPES = {(64, 64), (64, 128), (128, 64)}


def _tiny_model():
    torch.manual_seed(0)
    return CausalWanModel(tiny_config(dim=64, ffn_dim=128, num_layers=2)).eval()


def _linears(block):
    return [block.get_submodule(n) for n in BLOCK_LINEARS]


class _Text:  # the TextState interface a block reads: the cross-attention K/V
    def __init__(self, k, v):
        self.k, self.v = k, v

    def kv(self, cross_attn):
        return self.k, self.v


def _fake_timer(fp8_costs, seen, fail=(), ffn_costs=None):
    """bf16 block: 1 ms; all-FP8 block: fp8_costs[tokens]; FFN-only FP8 block: ffn_costs[tokens]
    (2 ms when not given). Records what really ran."""
    def timer(fn, reps, device, name):
        kind, unit, rows = name.split(":")
        if name in fail:
            raise RuntimeError("no FP8 kernel for this shape")
        out = fn()  # the candidate really runs
        block = fn.block
        seen.append((name, [type(m) for m in _linears(block)], tuple(out.shape)))
        if kind == "bf16":
            # the timed function is the block's forward: attention over its own keys, given text K/V
            ref = block(fn.x, fn.e0, _Text(fn.text_k, fn.text_v), LocalAttention(fn.q_freqs))
            torch.testing.assert_close(out, ref, rtol=0, atol=0)
            return 1.0
        if kind == "ffn":
            return (ffn_costs or {}).get(int(rows), 2.0)
        return fp8_costs[int(rows)]
    return timer


FFN = {"ffn.0", "ffn.2"}
EXPECTED_TYPES = {  # which of the block Linears (BLOCK_LINEARS order) each candidate runs in FP8
    "bf16": [nn.Linear] * len(BLOCK_LINEARS),
    "fp8": [Fp8Linear] * len(BLOCK_LINEARS),
    "ffn": [Fp8Linear if n in FFN else nn.Linear for n in BLOCK_LINEARS],
}


def test_fp8_is_kept_exactly_at_the_token_counts_where_the_whole_block_won():
    model = _tiny_model()
    block = model.blocks[0]
    originals = _linears(block)
    seen = []
    # 12 tokens: FP8 block slower; 24: faster; 36: faster by less than the 3 % margin
    timer = _fake_timer({12: 1.5, 24: 0.5, 36: 0.985}, seen)
    chosen, report = choose_fp8_rows(model, [3, 1, 2, 2], GRID, timer=timer, rounds=2)
    assert chosen == {s: frozenset({24}) for s in SHAPES}
    assert [s[0] for s in seen] == [f"{c}:block:{n}" for n in (12, 24, 36) for _ in range(2)
                                    for c in ("bf16", "fp8", "ffn")]  # alternating rounds
    for name, types, shape in seen:  # each candidate runs exactly its Linears in FP8
        assert types == EXPECTED_TYPES[name.split(":")[0]]
        assert shape == (1, int(name.rsplit(":", 1)[1]), 64)
    assert all(a is b for a, b in zip(_linears(block), originals))  # the block is put back
    row = {"unit": "block", "compiled": False, "bf16_ms": 1.0, "ffn_ms": 2.0}
    assert report == [
        {**row, "frames": 1, "rows": 12, "fp8_ms": 1.5, "choice": "bf16", "fp8": False},
        {**row, "frames": 2, "rows": 24, "fp8_ms": 0.5, "choice": "fp8", "fp8": True},
        {**row, "frames": 3, "rows": 36, "fp8_ms": 0.985, "choice": "bf16", "fp8": False},
    ]
    chosen, _ = choose_fp8_rows(model, [1, 2, 3], GRID, margin=0.0, timer=_fake_timer({12: 1.5, 24: 0.5, 36: 0.985}, []))
    assert chosen[(64, 128)] == frozenset({24, 36})


def test_ffn_only_fp8_is_kept_for_the_ffn_shapes_where_it_was_the_fastest():
    """Per token count the fastest candidate wins: where only FFN FP8 beat bf16 (and all-FP8),
    the two FFN Linear shapes run FP8 at that count and the attention Linears stay bf16."""
    model = _tiny_model()
    # 12: all-FP8 fastest; 24: FFN-only fastest; 36: FFN-only beats bf16 by less than the margin
    timer = _fake_timer({12: 0.5, 24: 0.8, 36: 1.2}, [], ffn_costs={12: 0.6, 24: 0.7, 36: 0.99})
    chosen, report = choose_fp8_rows(model, [1, 2, 3], GRID, timer=timer)
    assert [(r["rows"], r["choice"]) for r in report] == [(12, "fp8"), (24, "ffn"), (36, "bf16")]
    assert chosen == {(64, 64): frozenset({12}), (64, 128): frozenset({12, 24}), (128, 64): frozenset({12, 24})}
    # the swap that follows it: FFN Linears FP8 at 12 and 24 tokens, attention Linears at 12 only
    from vacelive.engine.dit.fp8 import Fp8Linears
    swap = Fp8Linears(model, rows_by_shape=chosen)
    block = model.blocks[0]
    assert {n: block.get_submodule(n).rows for n in BLOCK_LINEARS} == {
        n: frozenset({12, 24}) if n in FFN else frozenset({12}) for n in BLOCK_LINEARS}
    swap.restore()


def test_no_ffn_candidate_when_an_attention_linear_shares_an_ffn_shape():
    """Choices are keyed by Linear shape: with ffn_dim == dim an FFN-only choice would also switch
    the attention Linears, which were never timed that way, so the candidate is not offered."""
    torch.manual_seed(0)
    model = CausalWanModel(tiny_config(dim=64, ffn_dim=64, num_layers=2)).eval()
    seen = []
    chosen, report = choose_fp8_rows(model, [1], GRID, timer=_fake_timer({12: 0.5}, seen), rounds=1)
    assert [s[0] for s in seen] == ["bf16:block:12", "fp8:block:12"]
    assert report[0]["ffn_ms"] is None and chosen == {(64, 64): frozenset({12})}


def test_each_candidate_keeps_its_fastest_round():
    costs = {"bf16": iter([2.0, 1.0, 1.5]), "fp8": iter([0.9, 1.2, 1.1]),  # a slow first round (cold clocks)
             "ffn": iter([3.0, 3.0, 3.0])}
    chosen, report = choose_fp8_rows(_tiny_model(), [1], GRID, rounds=3,
                                     timer=lambda fn, reps, dev, name: next(costs[name.split(":")[0]]))
    assert (report[0]["bf16_ms"], report[0]["fp8_ms"], report[0]["ffn_ms"], report[0]["fp8"]) == (1.0, 0.9, 3.0, True)


def test_a_failed_timing_keeps_bf16_there_and_says_so(caplog):
    model = _tiny_model()
    block = model.blocks[0]
    originals = _linears(block)
    timer = _fake_timer({12: 0.5, 24: 0.5, 36: 0.5}, [], fail={"fp8:block:24", "bf16:block:36"})
    with caplog.at_level(logging.WARNING, logger="vacelive.engine.dit.fp8_auto"):
        chosen, report = choose_fp8_rows(model, [1, 2, 3], GRID, timer=timer)
    assert chosen == {s: frozenset({12}) for s in SHAPES}
    assert [(r["rows"], r["fp8"], r["bf16_ms"], r["fp8_ms"]) for r in report] == [
        (12, True, 1.0, 0.5), (24, False, 1.0, None), (36, False, None, None)]
    assert "no FP8 kernel" in report[1]["error"] and "no FP8 kernel" in report[2]["error"]
    assert any("at 24 tokens failed" in m for m in caplog.messages)
    assert any("at 36 tokens failed" in m for m in caplog.messages)
    assert all(a is b for a, b in zip(_linears(block), originals))  # restored after the failure too


def test_linears_that_cannot_be_fp8_keep_bf16_everywhere(monkeypatch, caplog):
    def refuse(linear):
        raise ValueError("FP8 matmul needs feature sizes divisible by 16")

    monkeypatch.setattr(fp8_auto, "Fp8Linear", refuse)
    calls = []
    with caplog.at_level(logging.WARNING, logger="vacelive.engine.dit.fp8_auto"):
        chosen, report = choose_fp8_rows(_tiny_model(), [1, 2], GRID, timer=lambda *a: calls.append(a) or 0.1)
    assert chosen == {s: frozenset() for s in SHAPES} and report == [] and calls == []
    assert any("cannot run in FP8" in m for m in caplog.messages)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_stream_times_compiled_blocks_then_warms_up_and_never_compiles(fresh_dynamo, monkeypatch):
    """With compiled blocks the candidates run through torch.compile (what the stream runs); the
    graphs made for the measurement do not disturb the warm-up's sealed set."""
    cfg = tiny_config(num_layers=2).with_(rope_max_positions=24)
    gen = StreamGenerator.random("tiny", width=32, height=32, codec="tae", vace=True, cfg=cfg)
    gen.set_compile(True, backend="eager")
    tokens = (32 // 16) * (32 // 16)
    frames = {s.frames for s in reachable_shapes(gen.recipe, recache=gen.recache, vace=True)}
    chunk = 3 * tokens  # FP8 wins only for the 3-latent-frame forwards
    seen, outs = [], {}

    def timer(fn, reps, device, name):
        before = compile_count()
        outs[name] = fn()
        mid = compile_count()
        fn()
        seen.append((name, mid - before, compile_count() - mid))
        return 0.5 if name == f"fp8:block:{chunk}" else 1.0

    monkeypatch.setattr(fp8_auto, "time_ms", timer)
    gen.set_fp8("auto")
    assert {r["rows"] for r in gen.fp8_report} == {f * tokens for f in frames}
    assert all(r["compiled"] for r in gen.fp8_report)
    assert [r["rows"] for r in gen.fp8_report if r["fp8"]] == [chunk]
    assert any(first > 0 for _, first, _ in seen)  # the candidates really compiled ...
    assert all(again == 0 for _, _, again in seen)  # ... once, then ran their graphs
    for rows in (f * tokens for f in frames):  # the FP8 graphs really ran FP8 (not a stale bf16 graph)
        bf16, fp8 = outs[f"bf16:block:{rows}"], outs[f"fp8:block:{rows}"]
        assert not torch.equal(bf16, fp8) and relative_error(fp8, bf16) < 0.1
    blocks = list(gen.model.blocks) + list(gen.model.vace_blocks)
    for block in blocks:
        for lin in _linears(block):
            assert isinstance(lin, Fp8Linear) and lin.rows == frozenset({chunk})
    assert gen.describe()["fp8_mode"] == "auto" and gen.describe()["fp8_linears"] == 8 * len(blocks)

    report = gen.warm_up()
    assert report["failed"] == []
    compiles = compile_count()
    for c in range(3):
        gen.step(ChunkRequest(prompts=[Prompt("ab"[c % 2])], steps=2))
    assert compile_count() == compiles and gen.counters["recompiles"] == 0
    assert gen._restore_compile.eager_calls == 0


def test_eager_generator_measures_every_reachable_token_count():
    gen = StreamGenerator.random("tiny", width=64, height=48, codec="tae", vace=False, fp8="auto")
    tokens = (48 // 16) * (64 // 16)
    frames = {s.frames for s in reachable_shapes(gen.recipe, recache=gen.recache)}
    assert [r["rows"] for r in gen.fp8_report] == sorted(f * tokens for f in frames)
    assert all(r["unit"] == "block" and not r["compiled"] and r["bf16_ms"] > 0 and r["fp8_ms"] > 0
               for r in gen.fp8_report)
    chosen = {r["rows"] for r in gen.fp8_report if r["fp8"]}
    for lin in _linears(gen.model.blocks[0]):  # whatever this CPU measured, the swap follows it
        assert (isinstance(lin, Fp8Linear) and lin.rows == chosen) if chosen else isinstance(lin, nn.Linear)
    gen.step(ChunkRequest(prompts=[Prompt("a")]))
    gen.set_fp8("off")
    assert gen.describe()["fp8_mode"] == "off" and gen.describe()["fp8_linears"] == 0
