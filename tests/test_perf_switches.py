"""--sdpa auto, --fp8 auto, --clean-pass reuse (CPU, tiny models, injected timers: nothing here
depends on how fast this machine is)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vacelive.engine.config import tiny_config
from vacelive.engine.dit.fp8 import Fp8Linear, Fp8Linears
from vacelive.engine.dit.model import CausalWanModel
from vacelive.engine.dit.sdpa_select import SdpaSelector, use_selector
from vacelive.engine.dit.attention import attend
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkRequest, Prompt


# ---- --sdpa auto --------------------------------------------------------------------------------
def _fake_sdpa_timer(costs, calls):
    def timer(fn, reps, device, name):
        fn()  # the candidate must really run
        calls.append(name)
        return costs[name]
    return timer


def test_sdpa_selector_keeps_the_fastest_kernel_per_shape_and_measures_each_shape_once():
    calls = []
    costs = {"FLASH_ATTENTION": 2.0, "MATH": 1.0}
    sel = SdpaSelector(candidates=("FLASH_ATTENTION", "MATH"), devices=("cpu",), timer=_fake_sdpa_timer(costs, calls))
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(sel.attention(q, k, v), ref)
    torch.testing.assert_close(sel.attention(q, k, v), ref)
    assert calls == ["FLASH_ATTENTION", "MATH"]  # measured once, on first sight
    k2, v2 = torch.randn(1, 2, 24, 16), torch.randn(1, 2, 24, 16)
    costs["FLASH_ATTENTION"] = 0.5  # another shape, another winner
    sel.attention(q, k2, v2)
    rows = {tuple(r["k"]): r["kernel"] for r in sel.describe()}
    assert rows == {(1, 2, 8, 16): "math", (1, 2, 24, 16): "flash"}
    assert len(calls) == 4


def test_sdpa_selector_skips_devices_it_does_not_measure_and_attend_routes_through_it():
    calls = []
    sel = SdpaSelector(devices=("cuda",), timer=_fake_sdpa_timer({}, calls))
    q, k, v = (torch.randn(1, 5, 2, 16) for _ in range(3))  # [B, L, H, D] as attend takes them
    with use_selector(sel):
        out = attend(q, k, v)
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2).flatten(2)
    torch.testing.assert_close(out, ref)
    assert calls == [] and sel.describe() == []  # CPU: PyTorch's default, nothing timed


def test_sdpa_selector_leaves_out_kernels_that_refuse_the_shape():
    def timer(fn, reps, device, name):
        if name == "FLASH_ATTENTION":
            raise RuntimeError("no kernel for this shape")
        fn()
        return 1.0
    sel = SdpaSelector(candidates=("FLASH_ATTENTION", "MATH"), devices=("cpu",), timer=timer)
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    sel.attention(q, k, v)
    (row,) = sel.describe()
    assert row["kernel"] == "math" and set(row["ms"]) == {"math"}


# ---- --fp8 auto (the block-level choice: tests/test_fp8_auto.py) -------------------------------
def _tiny_model():
    torch.manual_seed(0)
    cfg = tiny_config(dim=64, ffn_dim=128, num_layers=2)
    return CausalWanModel(cfg).eval()


def test_fp8_linears_with_rows_run_fp8_only_at_the_chosen_row_counts():
    model = _tiny_model()
    ffn0 = model.blocks[0].ffn[0]
    q_lin = model.blocks[0].self_attn.q
    handle = Fp8Linears(model, rows_by_shape={(64, 128): frozenset({32})})
    swapped = model.blocks[0].ffn[0]
    assert isinstance(swapped, Fp8Linear) and swapped.rows == frozenset({32})
    assert model.blocks[0].self_attn.q is q_lin  # shape without a winning row count: not swapped
    assert handle.count == 2  # ffn.0 of both blocks
    x32, x16 = torch.randn(1, 32, 64), torch.randn(1, 16, 64)
    always = Fp8Linear(ffn0)
    torch.testing.assert_close(swapped(x32), always(x32), rtol=0, atol=0)  # FP8 at 32 rows
    assert not torch.equal(swapped(x32), F.linear(x32, ffn0.weight, ffn0.bias))
    torch.testing.assert_close(swapped(x16), F.linear(x16, ffn0.weight, ffn0.bias), rtol=0, atol=0)  # bf16 path
    handle.restore()
    assert model.blocks[0].ffn[0] is ffn0


# ---- --clean-pass reuse -----------------------------------------------------------------------
def _record_forwards(model):
    calls = []

    def hook(module, args, kwargs, out):
        calls.append({"x": args[0].clone(), "t": torch.as_tensor(args[1]).clone(), "kv": args[3] if len(args) > 3 else kwargs.get("kv"),
                      "out": out.clone()})
    model.register_forward_hook(hook, with_kwargs=True)
    return calls


def _dense_reference(model, text, x_prev, t_prev, x_new, t_new):
    """The block-causal rule written out without a cache: one forward over [previous chunk's
    cached input || new chunk], previous frames attending only to themselves, new frames to
    everything; returns the new chunk's flow."""
    f = x_prev.shape[2]
    x = torch.cat([x_prev, x_new], dim=2)
    t = torch.cat([t_prev.reshape(1, 1).expand(1, f), t_new.reshape(1, 1).expand(1, x_new.shape[2])], dim=1)
    _, ph, pw = model.cfg.patch_size
    per_frame = (x.shape[3] // ph) * (x.shape[4] // pw)
    frame = torch.arange(x.shape[2]).repeat_interleave(per_frame)
    block = (frame >= f).long()  # 0: previous chunk, 1: new chunk
    mask = block[None, :] <= block[:, None]  # query block >= key block
    with torch.no_grad():
        out = model(x, t, text, attn_mask=mask)
    return out[:, :, f:]


def _two_chunks(clean_pass):
    gen = StreamGenerator.random("tiny", width=64, height=48, codec="tae", vace=False, seed=3, clean_pass=clean_pass)
    calls = _record_forwards(gen.model)
    frames = [gen.step(ChunkRequest(prompts=[Prompt("a red fox")], seed=5)).frames for _ in range(2)]
    return gen, calls, frames


def test_clean_pass_reuse_caches_the_last_denoising_pass_keys():
    gen, calls, _ = _two_chunks("reuse")
    steps = gen.schedule.max_steps
    assert len(calls) == 2 * steps  # no clean pass
    last, nxt = calls[steps - 1], calls[steps]
    ref = _dense_reference(gen.model, gen.text, last["x"], last["t"], nxt["x"], nxt["t"])
    torch.testing.assert_close(nxt["out"], ref, rtol=1e-4, atol=1e-4)


def test_clean_pass_exact_is_the_default_and_caches_the_clean_latents():
    gen, calls, frames = _two_chunks("exact")
    steps = gen.schedule.max_steps
    assert len(calls) == 2 * (steps + 1)  # the first chunk's clean pass ran first thing in the second step
    clean, nxt = calls[steps], calls[steps + 1]
    assert float(clean["t"].max()) == 0.0
    ref = _dense_reference(gen.model, gen.text, clean["x"], clean["t"], nxt["x"], nxt["t"])
    torch.testing.assert_close(nxt["out"], ref, rtol=1e-4, atol=1e-4)
    # the dense rule with the other chunk's keys is measurably different (the test can fail)
    wrong = _dense_reference(gen.model, gen.text, calls[steps - 1]["x"], calls[steps - 1]["t"], nxt["x"], nxt["t"])
    assert (nxt["out"] - wrong).abs().max() > 1e-3
    # the default constructor is this exact path, bit for bit
    gen2 = StreamGenerator.random("tiny", width=64, height=48, codec="tae", vace=False, seed=3)
    assert gen2.clean_pass == "exact"
    again = [gen2.step(ChunkRequest(prompts=[Prompt("a red fox")], seed=5)).frames for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(frames, again))


def test_deferred_clean_pass_is_bit_identical_to_the_inline_one():
    """The clean pass runs at the start of the next step (frames leave a forward earlier): the
    stream, a prompt cut's re-cache, a reset and a failed chunk give the inline path's frames."""
    def run(defer):
        gen = StreamGenerator.random("tiny", width=64, height=48, codec="tae", vace=False, seed=3)
        gen.defer_clean_pass = defer
        fox, owl = [Prompt("a red fox")], [Prompt("an owl")]
        out = []
        for i in range(7):
            prompts = owl if i in (2, 3) else fox  # cuts before chunks 2 and 4
            if i == 5 and defer:
                assert gen._pending_clean is not None
                broken = gen.decoder.decode
                gen.decoder.decode = lambda x: (_ for _ in ()).throw(RuntimeError("decode failed"))
                with pytest.raises(RuntimeError):
                    gen.step(ChunkRequest(prompts=prompts, seed=5))
                gen.decoder.decode = broken
                assert gen._pending_clean is None  # the failed chunk's clean pass never runs
            out.append(gen.step(ChunkRequest(prompts=prompts, seed=5, reset=(i == 6))).frames)
        return out

    inline, deferred = run(False), run(True)
    assert all(torch.equal(a, b) for a, b in zip(inline, deferred))


def test_clean_pass_reuse_changes_the_stream_but_not_the_first_chunk():
    _, _, exact = _two_chunks("exact")
    _, _, reuse = _two_chunks("reuse")
    assert torch.equal(exact[0], reuse[0])  # nothing cached yet when the first chunk is made
    assert not torch.equal(exact[1], reuse[1])


def test_sdpa_selector_keeps_the_first_candidate_on_a_near_tie():
    calls = []
    costs = {"CUDNN_ATTENTION": 1.02, "MATH": 1.0}

    def timer(fn, reps, device, name):
        calls.append(name)
        return costs[name]
    sel = SdpaSelector(candidates=("CUDNN_ATTENTION", "MATH"), devices=("cpu",), timer=timer)
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    sel._measure(sel.key(q, k, None), q, k, v, None)
    assert sel.describe()[0]["kernel"] == "cudnn"  # 2 % apart: noise, keep the first
    costs["MATH"] = 0.9
    sel._measure(sel.key(q, k2 := torch.randn(1, 2, 9, 16), None), q, k2, k2, None)
    assert sel.describe()[1]["kernel"] == "math"


def test_kv_window_shortens_the_cache_window_and_is_checked():
    import pytest

    gen = StreamGenerator.random("tiny", width=64, height=48, codec="tae", vace=False, kv_window=6)
    assert gen.policy.window == 6 and gen.policy.sink == 3 and gen.describe()["window"] == 6
    assert gen.history.capacity >= 6
    frames = [gen.step(ChunkRequest(prompts=[Prompt("a")])).frames for _ in range(4)]  # past the window
    assert all(f.shape[0] in (9, 12) for f in frames)
    assert StreamGenerator.random("tiny", width=64, height=48, codec="tae", vace=False).policy.window == 12
    for bad in (3, 13):
        with pytest.raises(ValueError, match="kv_window"):
            StreamGenerator.random("tiny", width=64, height=48, codec="tae", vace=False, kv_window=bad)


def test_start_up_log_names_the_auto_choices(caplog):
    import logging

    from vacelive.bridge.run.generators import log_speed_choices

    gen = StreamGenerator.random("tiny", width=64, height=48, codec="tae", vace=False, fp8="auto")
    with caplog.at_level(logging.INFO, logger="vacelive"):
        log_speed_choices(gen)
    assert any("fp8 auto:" in r.getMessage() for r in caplog.records)
