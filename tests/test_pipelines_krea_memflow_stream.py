"""Krea Realtime and MemFlow through the real StreamGenerator (tiny random DiT with live VACE
projections, tiny TAE, the real VaceConditioner): 20 chunks with every VACE task and a hard prompt
cut, bounded memory; MemFlow's live bank settings and its relative-RoPE fallback; rollback."""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkRequest, Prompt

from test_pipelines_rf_sdv2_stream import task_request

W, H = 48, 32
pytestmark = pytest.mark.usefixtures("single_thread")


def gen(recipe, **kw):
    return StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=True, recipe=recipe, **kw)


@pytest.mark.parametrize("recipe", ["krea-realtime", "memflow"])
def test_twenty_chunks_every_vace_task_and_a_prompt_cut_with_bounded_memory(recipe):
    g = gen(recipe)
    kv_bytes, seen, cond_bytes = g.kv.nbytes, set(), []
    bank_bytes = g.stream.bank.nbytes if recipe == "memflow" else None
    for i in range(20):
        n = g.next_chunk_frames
        assert n == (9 if i == 0 else 12)
        r = g.step(task_request(i, n, "a red cat" if i < 10 else "a blue boat"))  # hard cut at chunk 10
        assert r.frames.shape == (n, H, W, 4) and r.frames.dtype == torch.uint8
        assert not any("ignored" in x or "frames" in x for x in r.notices), (i, r.notices)
        assert torch.isfinite(g.history.last(3)).all()
        seen.update(g.conditioner.tasks.names)
        enc = g.conditioner.encoder
        cond_bytes.append(enc.inactive.stream.state.nbytes() + enc.reactive.stream.state.nbytes())
    assert seen == {"r2v", "control", "inpaint", "outpaint", "extension"}
    assert g.kv.nbytes == kv_bytes
    assert max(cond_bytes[5:]) <= max(cond_bytes[:5]) * 1.01
    assert g.counters["chunks"] == 20
    d = g.describe()
    if recipe == "krea-realtime":
        assert g.stream.recomputes == 19 and g.counters["recaches"] == 0
        assert g.kv.window_frames() == list(range(g.frame - 6, g.frame))  # 3 context + the last chunk
        assert g.kv.origin == g.frame - 6 and d["kv_recompute_frames"] == 3
        assert len(g.kv._bias_masks) <= 2  # one mask per attended layout and bias, not per chunk
    else:
        bank = g.stream.bank
        assert g.counters["recaches"] == 1 and bank.compressions > 0
        assert d["bank_frames_filled"] == 3 and bank.storage.shape[3] == 3 * g.kv.frame_tokens
        assert bank.nbytes == bank_bytes  # the memory bank never grows
        assert len(g.kv.window_frames()) == 12 and g.kv.window_frames()[:3] == [0, 1, 2]


def test_memflow_bank_attends_and_changes_the_output():
    def run(bank_size):
        g = gen("memflow")
        out = [g.step(ChunkRequest(prompts=[Prompt("lanterns")], bank_size=bank_size, seed=i)).frames
               for i in range(5)]
        return g, out

    on, a = run(3)
    off, b = run(0)
    assert on.stream.bank.local_end == 2 and off.stream.bank.storage is None
    assert torch.equal(a[0], b[0])  # chunk 0 never reads the bank
    assert not torch.equal(a[4], b[4])  # later chunks attend the remembered frames


def test_memflow_live_bank_settings_empty_the_memory_with_a_notice():
    g = gen("memflow")
    for i in range(4):
        g.step(ChunkRequest())
    assert g.stream.bank.local_end == 2
    r = g.step(ChunkRequest(bank_size=2, record_interval=1))
    assert any("memory emptied" in n for n in r.notices)
    assert g.stream.bank.size == 2 and g.stream.bank.storage.shape[3] == 2 * g.kv.frame_tokens
    r = g.step(ChunkRequest(bank_size=99, record_interval=1))
    assert any("out of range" in n for n in r.notices) and g.stream.bank.size == 6
    assert g.describe()["record_interval"] == 1


def test_memflow_bank_goes_off_in_relative_rope_mode():
    g = gen("memflow", rope="relative")
    notices = []
    for i in range(4):
        notices += g.step(ChunkRequest()).notices
    assert sum("memory bank off" in n for n in notices) == 1
    assert g.stream.bank.local_end == 0


@pytest.mark.parametrize("recipe", ["krea-realtime", "memflow"])
def test_a_failed_chunk_is_rolled_back_and_the_stream_goes_on(recipe):
    g = gen(recipe)
    for i in range(4):
        g.step(ChunkRequest(seed=i))
    frame, index = g.frame, g.chunk_index
    inner = g.decoder.decode

    def boom(x0):
        raise RuntimeError("decoder fell over")

    g.decoder.decode = boom
    with pytest.raises(RuntimeError):
        g.step(ChunkRequest(seed=9))
    g.decoder.decode = inner
    assert (g.frame, g.chunk_index) == (frame, index)
    r = g.step(ChunkRequest(seed=9))
    assert r.chunk_index == index and r.frames.shape[0] == 12
    if recipe == "krea-realtime":  # the context buffers are the last committed chunk's
        assert g.stream.recomputes == 5
