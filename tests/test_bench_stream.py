"""scripts/bench_stream.py runs end to end on the CPU (--smoke) and writes its JSON."""
import importlib.util
import json
from pathlib import Path

import pytest

from vacelive.bridge.run.generators import vace_available

pytestmark = pytest.mark.usefixtures("single_thread")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_stream.py"


def test_bench_stream_smoke_writes_a_row_per_variant(tmp_path):
    vace = vace_available()
    spec = importlib.util.spec_from_file_location("bench_stream", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "b.json"
    rc = bench.main(["--smoke", "--codecs", "tae", "--modes", "text,depth" if vace else "text", "--chunks", "2",
                     "--hint-reuse", "off,on", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    rows = data["results"]
    expected = [("text", False), ("depth", False), ("depth", True)] if vace else [("text", False)]
    assert [(r["mode"], r["hint_reuse"]) for r in rows] == expected
    for r in rows:
        assert r["frames"] == 24 and r["first_chunk_frames"] == 9 and r["fps"] > 0
        assert r["dit_ms"] > 0 and r["decode_ms"] > 0 and r["cut_recache_ms"] > 0
    assert rows[0]["hints_ms"] == 0
    if vace:
        assert rows[1]["vace_ms"] > 0 and rows[1]["hints_ms"] > 0
