"""scripts/bench_cuts.py runs end to end on the CPU (--smoke): every phase is written, the long run
passes the (short) RoPE table end, and nothing compiles during the show after the warm-up."""
import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("single_thread")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_cuts.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_cuts", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_cuts_smoke_writes_every_phase_without_recompiles(tmp_path):
    out = tmp_path / "cuts.json"
    assert load().main(["--smoke", "--compare-exact", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["warmup"]["compiles"] >= 0 and data["warmup"]["failed"] == []
    first = data["first_frame"]
    assert first["frames"] == 9 and len(first["ms"]) == 5 and first["recompiles"] == 0 and first["stages_ms"]["dit"] > 0
    for phase in ("fixed", "follow", "fixed_after", "follow_after"):
        row = data[phase]
        assert row["recompiles"] == 0 and row["eager_calls"] == 0 and row["errors"] == 0
        assert row["frames_out"] > 0 and row["chunks"] > 0
        assert {"p50", "p99", "max"} <= set(row["interval_ms"]) and "stalls" in row and "cut_ratio" in row
    assert data["fixed"]["mode"] == "fixed 24 fps" and data["follow"]["mode"] == "follow generation"
    long = data["long"]
    assert long["past_table_end"] and long["rope_switches"] >= 1 and long["recompiles"] == 0
    compare = data["compare"]
    assert compare["recache"] == "exact"
    for part in ("before_switch", "after_switch"):
        assert compare[part]["recompiles"] == 0 and len(compare[part]["cut_chunk_ms"]) >= 3
    assert compare["after_switch"]["rope_mode"] == "relative"
    assert data["generator"]["recache"] == "newest" and data["counters"]["recompiles"] == 0


def test_jump_moves_a_running_stream_to_a_chunk_boundary():
    bench = load()

    class Gen:
        class recipe:
            frames_per_chunk = 3

        class history:
            head = 12

        frame = 12

    g = Gen()
    bench.jump(g, 1000)
    assert g.frame == 999 and g.history.head == 999  # a multiple of the chunk
    bench.jump(g, 10)  # never backwards
    assert g.frame == 999


def test_chunk_stats_compares_each_cut_chunk_with_the_median_plain_chunk():
    bench = load()

    class R:
        def __init__(self, prompt, ms, recache=0.0, error=None):
            self.snapshot = {"prompt": prompt}
            self.latency_ms, self.error = ms, error
            self.result = None if error else type("Res", (), {"timings_ms": {"recache": recache}})()

    records = [R("a", 100), R("a", 110), R("b", 150, 40), R("b", 90), R("b", 100, error="boom"),
               R("a", 120, 30), R("a", 100)]
    s = bench.chunk_stats(records)
    assert s["chunks"] == 6 and s["cut_chunks"] == 2 and s["errors"] == 1
    assert s["plain_chunk_ms"]["p50"] == 100  # 100, 110, 90, 100
    assert s["cut_chunk_ms"] == [150, 120] and s["cut_recache_ms"] == [40, 30]
    assert s["cut_ratio"]["max"] == 1.5 and s["cut_ratio"]["p50"] == 1.35
