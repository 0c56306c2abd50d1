"""Quantised changes on an injected clock (no wall time): an armed change is applied at the
boundary whose chunk's first output frame is nearest the target beat, checked against a brute-force
search over the simulated chunk timeline; beat lengths become the right number of chunks."""
from __future__ import annotations

import pytest

from vacelive.bridge.quantize import (
    Quantizer, Timing, beats_to_chunks, next_grid_beat, parse_length, parse_quantum,
)
from vacelive.bridge.store import ParamStore
from vacelive.bridge.tempo import InternalClock


def simulate(bpm, latency, fps, chunk, buffered, first_boundary, arm_at, grid, offset=0.0,
             chunks=64):
    """Run-loop boundaries every chunk/fps seconds; returns (index of the chunk the quantiser
    applied the change to, index of the chunk a brute-force search says is nearest the target)."""
    clock = InternalClock(bpm, origin=0.0, now=lambda: arm_at)
    q = Quantizer(clock)
    fired = []
    target = q.arm(grid, "prompt cut", lambda: fired.append(True), at=arm_at)
    period = chunk / fps
    applied = None
    shown = []
    for k in range(chunks):
        t0 = first_boundary + k * period
        timing = Timing(now=t0, latency=latency, buffered=buffered, fps=fps, chunk_frames=chunk,
                        offset=offset)
        shown.append(timing.first_frame_time())
        if t0 < arm_at:
            continue  # boundaries before the change was armed cannot take it
        for a in q.due(timing):
            a.apply()
            applied = k if applied is None else applied
    target_time = clock.time_at_beat(target)
    eligible = [k for k in range(chunks) if first_boundary + k * (chunk / fps) >= arm_at]
    nearest = min(eligible, key=lambda k: (abs(shown[k] - target_time), k))
    # a target that is already behind the first eligible chunk: apply at once
    if shown[eligible[0]] > target_time:
        nearest = eligible[0]
    return applied, nearest, fired


CASES = [
    # bpm, latency s, fps, frames/chunk, buffered frames, first boundary, armed at, grid beats
    (120, 0.30, 24, 12, 12, 0.13, 0.40, 4.0),  # bar; the pacer buffer dominates
    (120, 0.80, 24, 12, 12, 0.13, 0.40, 4.0),  # generation slower than the buffer
    (120, 0.30, 24, 12, 12, 0.13, 1.95, 4.0),  # armed just before a bar: lands on the next one
    (128, 0.45, 30, 12, 6, 0.02, 3.10, 1.0),  # next beat
    (90, 0.25, 24, 12, 14, 0.31, 0.00, 8.0),  # 2 bars
    (174, 0.60, 24, 4, 4, 0.05, 5.00, 4.0),  # 4-frame chunks (StreamDiffusionV2), fast tempo
    (60, 1.20, 16, 12, 20, 0.50, 2.20, 16.0),  # 4 bars, slow machine
    (140, 0.35, 24, 12, 12, 0.20, 0.90, 4.0),
]


@pytest.mark.parametrize("bpm,latency,fps,chunk,buffered,first,arm,grid", CASES)
def test_armed_change_lands_on_the_chunk_nearest_the_beat(bpm, latency, fps, chunk, buffered,
                                                          first, arm, grid):
    applied, nearest, fired = simulate(bpm, latency, fps, chunk, buffered, first, arm, grid)
    assert fired == [True]
    assert applied == nearest


def test_offset_moves_the_change_earlier():
    base, _, _ = simulate(120, 0.3, 24, 12, 12, 0.13, 0.4, 4.0)
    later, nearest, _ = simulate(120, 0.3, 24, 12, 12, 0.13, 0.4, 4.0, offset=1.0)
    assert later == nearest and later == base - 2  # one second of output offset = 2 chunks


def test_worked_example_from_the_docs():
    # 120 bpm (bar = 2 s), 24 fps, 12-frame chunks (0.5 s), 12 frames buffered, 0.3 s generation:
    # a chunk taken at t0 shows its first frame at t0 + max(0.3, 0.5) = t0 + 0.5.
    t = Timing(now=1.0, latency=0.3, buffered=12, fps=24, chunk_frames=12)
    assert t.first_frame_time() == pytest.approx(1.5)
    clock = InternalClock(120, origin=0.0, now=lambda: 0.9)
    q = Quantizer(clock)
    assert q.arm(4.0, "cut", lambda: None, at=0.9) == 4.0  # the bar at t = 2.0 s
    assert q.due(Timing(now=1.0, latency=0.3, buffered=12, fps=24, chunk_frames=12)) == []  # 1.5 s
    due = q.due(Timing(now=1.5, latency=0.3, buffered=12, fps=24, chunk_frames=12))  # shows at 2.0
    assert [a.label for a in due] == ["cut"]


def test_a_passed_target_applies_at_once_and_grid_none_is_next_boundary():
    clock = InternalClock(120, origin=0.0, now=lambda: 10.0)
    q = Quantizer(clock)
    q.arm(0.0, "now", lambda: None, at=10.0)
    assert [a.label for a in q.due(Timing(10.0, 0.3, 12, 24, 12))] == ["now"]
    q.arm(1.0, "late", lambda: None, at=0.0)  # target beat 1 = 0.5 s, long gone
    assert [a.label for a in q.due(Timing(10.0, 0.3, 12, 24, 12))] == ["late"]


@pytest.mark.parametrize("beats,bpm,fps,chunk,expected", [
    (8, 120, 24, 12, 8),  # 4 s of output = 96 frames = 8 chunks
    (8, 90, 24, 12, 11),  # 5.33 s = 128 frames = 10.67 chunks -> 11
    (4, 174, 24, 12, 3),  # 1.38 s = 33.1 frames = 2.76 chunks -> 3
    (16, 140, 30, 12, 17),  # 6.86 s = 205.7 frames = 17.1 -> 17
    (1, 60, 16, 4, 4),  # 1 s = 16 frames = 4 chunks of 4
    (0.25, 180, 24, 12, 1),  # shorter than a chunk: still one chunk
    (0, 120, 24, 12, 0),
])
def test_beats_to_chunks(beats, bpm, fps, chunk, expected):
    seconds = beats * 60 / bpm
    plain = 0 if beats == 0 else max(1, int(seconds * fps / chunk + 0.5))  # the rule, spelled out
    assert beats_to_chunks(beats, bpm, fps, chunk) == plain == expected


@pytest.mark.parametrize("bpm", [90, 120, 128, 174])
def test_beat_length_morph_takes_that_many_chunks(bpm):
    store = ParamStore()
    chunks = beats_to_chunks(8, bpm, 24, 12)
    store.morph_to("p", {"context_scale": 2.0}, chunks)
    seen = []
    while True:
        snap = store.snapshot()
        seen.append(snap["context_scale"])
        if snap.morph is None or snap.morph[1] == snap.morph[2]:
            break
    assert len(seen) == chunks and seen[-1] == 2.0
    assert all(v < 2.0 for v in seen[:-1])


def test_parsing():
    assert parse_quantum("bar") == 4.0 and parse_quantum("4bars") == 16.0
    assert parse_quantum("beat") == 1.0 and parse_quantum("2beats") == 2.0
    assert parse_quantum("none") == 0.0 and parse_quantum(3) == 3.0
    with pytest.raises(ValueError):
        parse_quantum("soon")
    assert parse_length("8beats") == (8.0, "beats") and parse_length("2bars") == (8.0, "beats")
    assert parse_length(6) == (6.0, "chunks") and parse_length("3") == (3.0, "chunks")
    assert next_grid_beat(3.99, 4.0) == 4.0 and next_grid_beat(4.0, 4.0) == 8.0


def test_tap_tempo_and_tempo_changes_keep_the_beat():
    now = [0.0]
    clock = InternalClock(100, origin=0.0, now=lambda: now[0])
    for t in (10.0, 10.5, 11.0, 11.5):
        clock.tap(at=t)
    assert clock.tempo == pytest.approx(120.0)
    assert clock.beat_at(11.5) == pytest.approx(round(clock.beat_at(11.5)))  # a tap is a beat
    b = clock.beat_at(20.0)
    clock.set_tempo(60.0, at=20.0)
    assert clock.beat_at(20.0) == pytest.approx(b) and clock.beat_at(21.0) == pytest.approx(b + 1)
