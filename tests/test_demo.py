"""`vacelive demo` as CI runs it: the command, a few chunks, its files decode."""
from __future__ import annotations

import json
import subprocess
import sys

import av
from PIL import Image

from runloop_support import REPO


def test_demo_runs_and_writes_its_files(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "vacelive.bridge.cli", "demo", "--chunks", "5", "--out", str(out),
         "--width", "128", "--height", "96", "--timeout", "90"],
        cwd=REPO, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "RANDOM weights" in text and "vacelive weights download longlive" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chunks"] >= 5 and summary["failed_chunks"] == 0

    with av.open(str(out / "vacelive-demo.mp4")) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert (stream.width, stream.height) == (128, 96)
    assert len(frames) == summary["files"]["mp4_frames"] >= 5 * 12 - 3  # every read-back frame
    assert frames[0].shape == (96, 128, 3)
    assert frames[0].std() > 0 or frames[-1].std() > 0  # not an empty picture

    sheet = Image.open(out / "contact-sheet.png")
    sheet.load()
    assert list(sheet.size) == summary["files"]["contact_sheet_size"] and sheet.size[0] > 256

    # each OSC message reached the loop and was used
    by_address = {c["address"]: c for c in summary["osc"]}
    prompt = by_address["/vace/prompt"]
    # cues go out at chunk indices: cue k after chunk k-1 is used by exactly chunk k
    assert (prompt["sent_after_chunk"], prompt["chunk"]) == (0, 1)
    assert (by_address["/vace/context_scale"]["sent_after_chunk"],
            by_address["/vace/context_scale"]["chunk"]) == (1, 2)
    assert [m["chunk"] for m in by_address["/vace/preset/load"]["morph"]] == [3, 4]
    assert by_address["/vace/snapshot"]["sent_after_chunk"] == 4
    assert [t for t, _ in prompt["value"]] == ["a glowing jellyfish drifting through deep blue water"]
    assert by_address["/vace/context_scale"]["value"] == 0.4
    morph = by_address["/vace/preset/load"]["morph"]
    assert [m["step"] for m in morph] == ["1/2", "2/2"]
    assert by_address["/vace/preset/load"]["reply"] == ["demo-dream", 2]
    snap = by_address["/vace/snapshot"]["file"]
    assert snap and Image.open(snap).size == (128, 96)
    assert summary["osc_feedback"]["status"]["chunk"] >= 4  # /vace/status/* came back over UDP
    assert "used from chunk" in text and "morph chunk" in text
    # V2V: the control video is restyled; the strength change is reported with its chunk
    strength = by_address["/vace/noise_scale"]
    assert strength["value"] == 0.35 and (strength["sent_after_chunk"], strength["chunk"]) == (3, 4)
    v2v = summary["v2v"]
    assert v2v["input_mode"] == "video" and v2v["spans"][0] == {"first_chunk": 0, **v2v["spans"][0],
                                                                 "noise_scale": 0.7}
    assert v2v["changes"] == [{"chunk": strength["chunk"], "from": 0.7, "to": 0.35}]
    assert "V2V restyle of the control input" in text
