"""The --smoke paths of scripts/bench_precision.py and scripts/bench_latency.py (CPU, tiny model):
what the GPU runs must not crash on a typo. Figures are not asserted, only their presence."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name):
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_precision_smoke(tmp_path):
    out = tmp_path / "prec.json"
    rc = _load("bench_precision").main(["--smoke", "--variants", "exact,fp8-auto,clean-reuse,fast-auto,fast-auto-cc",
                                        "--out", str(out)])
    assert rc == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["exact"]["exact_path"] is True
    for name in ("fp8-auto", "clean-reuse", "fast-auto", "fast-auto-cc"):
        assert "error" not in rows[name], rows[name]
        assert {"fps", "fwd_max", "fwd_rel", "psnr_db"} <= set(rows[name])
    assert rows["clean-reuse"]["fwd_max"] == 0.0  # one forward does not involve the clean pass
    assert isinstance(rows["fp8-auto"]["fp8_auto"], list) and rows["fp8-auto"]["fp8_auto"]
    assert rows["fast-auto-cc"]["compile_codec"] is True and rows["fast-auto"]["compile_codec"] is False


def test_bench_latency_smoke(tmp_path):
    out = tmp_path / "lat.json"
    rc = _load("bench_latency").main(["--smoke", "--seconds", "1.5", "--pacing", "follow", "--out", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["frames_measured"] > 0 and row["errors"] == 0
    assert row["latency_p50_ms"] > 0 and row["latency_p99_ms"] >= row["latency_p50_ms"]
