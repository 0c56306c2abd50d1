"""scripts/bench_v2v.py end to end on the CPU (--smoke): every row measured, the JSON and table written."""
from __future__ import annotations

import importlib.util
import json

import pytest

from runloop_support import REPO

pytestmark = pytest.mark.usefixtures("single_thread")


def test_bench_v2v_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_v2v", REPO / "scripts" / "bench_v2v.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "v2v.json"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert not data["partial"] and {r["pipeline"] for r in data["results"]} == {"longlive", "streamdiffusionv2"}
    for r in data["results"]:
        assert "skipped" not in r, r
        assert r["fps"] > 0 and r["latency_ms_p50"] > 0 and r["input_frames_used"] > 0
        assert r["noise_scale_used"] == r["noise_scale"]
    assert (tmp_path / "v2v.md").read_text().count("exact") == 2
