"""`vacelive serve` with the pose-dancer preset on the tiny random model (the session `serve` runs,
in-process): real shared-memory textures, real OSC over UDP, DWPose through onnxruntime on the
stand-in ONNX files (tests/pose_support.py). The preset's VACE pose control gets DWPose maps, and
pose tokens go on and off over OSC."""
from __future__ import annotations

import pytest

pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from pose_support import write_dwpose_standins  # noqa: E402
from runloop_support import Recorder, wait_until  # noqa: E402
from test_serve import rig, tiny  # noqa: E402,F401  (the serve rig fixture)


def test_pose_preset_streams_with_pose_tokens_on_and_off_over_osc(rig, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VACELIVE_MODELS", str(write_dwpose_standins(tmp_path)))
    gen = Recorder(tiny())
    pose = gen.inner.pose
    session, writer, reader, peer = rig(gen)
    records = []
    session.loop.add_observer(records.append)
    peer.send("/vace/preset/load", "pose-dancer", 0)
    wait_until(lambda: peer.got("/vace/preset/loaded"), 10, "preset loaded")
    wait_until(lambda: any(r.request is not None and r.request.annotator == "pose" for r in records), 30,
               "a chunk with the preset")
    # the preset's VACE pose control: DWPose ran on the pose conditioner's annotator thread
    wait_until(lambda: pose._maps is not None and pose._maps.runner.take("pose") is not None, 30, "a DWPose map")
    assert pose.annotators._loaded["pose"].frames_done > 0
    assert pose.stats["chunks"] == 0  # pose tokens still off (the preset's pose_strength 0)

    peer.send("/vace/pose_strength", 1.0)
    wait_until(lambda: pose.stats["chunks"] >= 2, 60, "chunks with pose tokens")
    on = [r for r in records if r.request is not None and r.request.pose_strength == 1.0]
    assert on and all(r.error is None for r in on)

    peer.send("/vace/pose_strength", 0.0)
    wait_until(lambda: sum(1 for r in records if r.request is not None and r.request.pose_strength == 0.0
                           and r.boundary > on[-1].boundary) >= 2, 60, "chunks with pose tokens off")
    n = pose.stats["chunks"]
    wait_until(lambda: len(records) >= len(on) + 4, 60, "more chunks")
    assert pose.stats["chunks"] <= n + 1  # (one chunk may have started before the change)
    assert session.loop.errors == 0 and not peer.got("/vace/error")
    frame = reader.items[-1][2]
    assert frame.shape[-1] == 4
