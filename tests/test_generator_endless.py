"""Endless streams: past the 1024-frame RoPE table with no reset, bounded memory, finite output;
the rope setting's three modes."""
from __future__ import annotations

import gc

import pytest
import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.generator import StreamGenerator
from vacelive.engine.request import ChunkRequest, Prompt

W, H = 32, 32


pytestmark = pytest.mark.usefixtures("single_thread")


def make(rope="auto", table=1024, layers=2):
    cfg = tiny_config(num_layers=layers).with_(rope_max_positions=table)
    return StreamGenerator.random("tiny", width=W, height=H, codec="tae", vace=False, rope=rope, cfg=cfg)


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_stream_runs_past_the_rope_table_end_with_bounded_memory():
    gen = make()
    kv_ptr, kv_bytes = gen.kv.storage.data_ptr(), gen.kv.nbytes
    hist_ptr = gen.history.buffer.data_ptr()
    request = ChunkRequest(prompts=[Prompt("a red cat")], steps=1)
    switched_at = None
    counts, decoder_bytes = {}, {}
    for c in range(367):  # 1101 latent frames
        if c == 350:
            request = ChunkRequest(prompts=[Prompt("blue sea")], steps=1)  # a cut after the switch
        r = gen.step(request)
        if switched_at is None and gen.kv.rope_mode == "relative":
            switched_at = r.chunk_index * 3
        if c in (100, 349):
            counts[c] = live_tensors()
            decoder_bytes[c] = gen.decoder.state.nbytes()
        assert r.frames.shape == (9 if c == 0 else 12, H, W, 4)
    assert gen.frame == 1101 and gen.counters["resets"] == 0 and gen.counters["chunks"] == 367
    assert switched_at == 1023 and gen.counters["rope_switches"] == 1  # 1023 + 3 > 1024
    assert gen.counters["recaches"] == 1  # the re-cache ran in relative mode
    assert gen.kv.window_frames() == [0, 1, 2] + list(range(1092, 1101))
    # bounded: same storage, same history ring, same decoder cache, no accumulating tensors
    assert gen.kv.storage.data_ptr() == kv_ptr and gen.kv.nbytes == kv_bytes
    assert gen.history.buffer.data_ptr() == hist_ptr and gen.history.head == 1101
    assert decoder_bytes[100] == decoder_bytes[349]
    assert counts[349] <= counts[100]
    assert len(gen.prompt_state.cache) == 2  # the embedding LRU holds the two prompts only
    assert torch.isfinite(gen.kv.storage).all() and torch.isfinite(gen.history.buffer).all()
    assert r.frames[..., :3].float().std() > 0


def test_absolute_setting_switches_at_the_table_end_with_a_notice_and_relative_starts_relative():
    gen = make(rope="absolute", table=24)
    notes = [n for _ in range(10) for n in gen.step(ChunkRequest(steps=1)).notices]
    assert len(notes) == 1 and "window-relative" in notes[0] and gen.kv.rope_mode == "relative"
    assert gen.counters["rope_switches"] == 1
    gen.reset()  # a hard reset returns to the configured start mode
    assert gen.kv.rope_mode == "absolute"

    auto = make(table=24)
    notes = [n for _ in range(10) for n in auto.step(ChunkRequest(steps=1)).notices]
    assert notes == [] and auto.kv.rope_mode == "relative"  # expected in auto: logged, not a notice

    rel = make(rope="relative", table=24)
    assert rel.kv.rope_mode == "relative"
    for _ in range(10):
        rel.step(ChunkRequest(steps=1))
    assert rel.counters["rope_switches"] == 0 and rel.frame == 30
    with pytest.raises(ValueError, match="rope"):
        make(rope="sideways")
