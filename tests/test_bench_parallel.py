"""scripts/bench_parallel.py --smoke runs end to end on the CPU (gloo, tiny model, 1 and 2 ranks, both
modes): well-formed rows, the 2-rank pipeline stream equals the 1-rank stream exactly and the
sequence-parallel one to round-off."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_parallel_smoke(tmp_path):
    out = tmp_path / "parallel.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_parallel.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["ranks"], r["mode"]) for r in rows] == [(1, "single"), (2, "pipeline"), (2, "sequence")]
    assert all(r["fps"] > 0 and r["chunks"] == 2 for r in rows)
    pipe, seq = rows[1], rows[2]
    assert pipe["diff_max"] == 0.0 and len(pipe["placement"]) == 2
    assert seq["diff_max"] <= 1.0 and seq["placement"] is None
    assert "| 32x32 | 2 | sequence |" in out.with_suffix(".md").read_text()
