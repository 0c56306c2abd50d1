"""The pose annotator: DWPose drawing of a known skeleton (limb colours and positions), the DWPose
decoding chain through onnxruntime on tiny hand-built ONNX models with known outputs (the real
YOLOX/DWPose files are 350 MB and cannot be in CI), and the pose conditioner running it on the
annotator thread.

What this does NOT cover: the accuracy of the real DWPose weights on camera frames."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")

from vacelive.engine.conditioning.pose_annotator import (  # noqa: E402
    DET_SIZE, DWPoseEstimator, crop_transform, dwpose_files, load_pose_annotator,
)
from vacelive.engine.conditioning.pose_render import (  # noqa: E402
    COLORS, HAND_COLORS, LIMBS, draw_pose, for_unianimate, to_openpose,
)

S = 256


def skeleton():
    """A standing figure in OpenPose order (normalised x, y), all points visible; left foot from
    its two toes; right-foot toes hidden; right hand drawn."""
    p = np.full((134, 2), -1.0)
    s = np.zeros(134)
    body = {0: (0.50, 0.10), 1: (0.50, 0.22), 2: (0.38, 0.22), 3: (0.30, 0.36), 4: (0.26, 0.50),
            5: (0.62, 0.22), 6: (0.70, 0.36), 7: (0.74, 0.50), 8: (0.42, 0.52), 9: (0.41, 0.70),
            10: (0.40, 0.88), 11: (0.58, 0.52), 12: (0.59, 0.70), 13: (0.60, 0.88),
            14: (0.47, 0.08), 15: (0.53, 0.08), 16: (0.44, 0.09), 17: (0.56, 0.09)}
    for i, xy in body.items():
        p[i], s[i] = xy, 0.9
    p[18], p[19], s[18], s[19] = (0.66, 0.94), (0.70, 0.95), 0.9, 0.9  # left big/small toe
    p[21], p[22], s[21], s[22] = (0.34, 0.94), (0.30, 0.95), 0.2, 0.9  # right big toe not confident
    # wrist, then 5 straight vertical fingers of 4 points, far enough apart to tell edges from discs
    hand = np.array([[0.80, 0.56]] + [[0.74 + 0.03 * (k // 4), 0.60 + 0.06 * (k % 4 + 1)] for k in range(20)])
    p[113:134], s[113:134] = hand, 0.9
    return p, s


def px(xy):
    return int(xy[1] * S), int(xy[0] * S)  # (row, col)


def test_known_skeleton_renders_standard_colours_at_the_right_places():
    p, s = skeleton()
    img = draw_pose(p, s, S, S)
    assert img.shape == (S, S, 3) and img.dtype == np.uint8
    # keypoint discs at full colour (drawn after the 0.6 dimming)
    for i in (0, 1, 2, 4, 7, 10, 13):
        assert tuple(img[px(p[i])]) == COLORS[i], i
    # limbs: dimmed colour at the midpoint of the segment (limb 1-based pairs)
    for k in (0, 2, 3, 6, 7, 9, 10):
        a, b = LIMBS[k]
        mid = (p[a - 1] + p[b - 1]) / 2
        assert tuple(img[px(mid)]) == tuple(int(c * 0.6) for c in COLORS[k]), k
    # left foot limb (left ankle 14 -> mean of the toes) is drawn, the right one is not
    foot = (p[18] + p[19]) / 2
    assert tuple(img[px(foot)]) == COLORS[19 - 1]  # foot keypoint disc, colour 18 (0-based)
    assert tuple(img[px((p[13] + foot) / 2)]) == tuple(int(c * 0.6) for c in COLORS[17])
    right_foot = (p[21] + p[22]) / 2
    assert not img[px((p[10] + right_foot) / 2)].any() and not img[px(right_foot)].any()
    # hand: an edge in its HSV colour, key points blue-triplet discs; background stays black
    a, b = p[113 + 2], p[113 + 3]  # edge 2 (points 2 -> 3)
    assert np.abs(img[px((a + b) / 2)].astype(int) - np.array(HAND_COLORS[2])).max() <= 1
    assert tuple(img[px(p[113 + 20])]) == (0, 0, 255)
    assert not img[5, 5].any() and not img[S - 5, 5].any()
    # UniAnimate's training order: R and B swapped
    assert tuple(for_unianimate(img)[px(p[0])]) == COLORS[0][::-1]
    t = torch.from_numpy(img).permute(2, 0, 1)
    assert torch.equal(for_unianimate(t), torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1))


def test_low_scores_are_not_drawn():
    p, s = skeleton()
    s[3] = 0.2  # right elbow
    img = draw_pose(p, s, S, S)
    assert not img[px(p[3])].any()
    assert not img[px((p[2] + p[3]) / 2)].any()  # shoulder-elbow limb gone


def test_coco_wholebody_to_openpose_order():
    k = np.zeros((1, 133, 2))
    k[0, :, 0] = np.arange(133)
    sc = np.full((1, 133), 0.9)
    sc[0, 6] = 0.1  # right shoulder hidden: no neck
    out, score = to_openpose(k, sc)
    assert out.shape == (1, 134, 2)
    assert out[0, 1, 0] == (5 + 6) / 2 and score[0, 1] == 0  # neck
    assert out[0, 2, 0] == 6 and out[0, 5, 0] == 5 and out[0, 8, 0] == 12 and out[0, 0, 0] == 0
    assert out[0, 18, 0] == 17 and out[0, 92, 0] == 91  # feet, left hand shift by one


# ---- the ONNX chain on tiny models with known outputs (tests/pose_support.py) -------------------------
from pose_support import BOX_IN, FRAME_HW, KP_IN, POSE_WH, write_dwpose_standins  # noqa: E402


@pytest.fixture(scope="module")
def dwpose_dir(tmp_path_factory):
    return write_dwpose_standins(tmp_path_factory.mktemp("models"))


def expected_frame_xy(k):
    """Plain top-down math: detector box -> frame box -> padded, aspect-fixed scale -> keypoint."""
    r = min(DET_SIZE[0] / FRAME_HW[0], DET_SIZE[1] / FRAME_HW[1])
    cx, cy, w, h = BOX_IN
    x1, y1, x2, y2 = (cx - w / 2) / r, (cy - h / 2) / r, (cx + w / 2) / r, (cy + h / 2) / r
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    sw, sh = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    aspect = POSE_WH[0] / POSE_WH[1]
    sw, sh = (sw, sw / aspect) if sw > sh * aspect else (sh * aspect, sh)
    x, y = KP_IN[k]
    return np.array([x / POSE_WH[0] * sw + center[0] - sw / 2, y / POSE_WH[1] * sh + center[1] - sh / 2])


def test_estimator_decodes_boxes_and_keypoints_like_the_reference(dwpose_dir):
    est = DWPoseEstimator(*dwpose_files(dwpose_dir), providers=["CPUExecutionProvider"])
    assert est.input_wh == POSE_WH and est.providers == ["CPUExecutionProvider"]
    bgr = np.zeros((*FRAME_HW, 3), np.uint8)
    kpts, scores = est(bgr)
    assert kpts.shape == (134, 2) and scores.shape == (134,)
    norm = np.array([FRAME_HW[1], FRAME_HW[0]])
    # COCO 0 nose -> OpenPose 0; COCO 6 right shoulder -> 2; COCO 5 -> 5; 9 left wrist -> 7; 15 left ankle -> 13
    for coco, op in ((0, 0), (6, 2), (5, 5), (9, 7), (15, 13)):
        assert np.allclose(kpts[op] * norm, expected_frame_xy(coco), atol=1e-3), (coco, op)
        assert scores[op] == pytest.approx(0.8)
    assert np.allclose(kpts[1] * norm, (expected_frame_xy(5) + expected_frame_xy(6)) / 2, atol=1e-3)  # neck
    assert scores[3] == 0  # a point with no response


def test_crop_puts_the_box_centre_at_the_input_centre():
    box = np.array([100.0, 50.0, 180.0, 250.0])
    mat, center, scale = crop_transform(box, POSE_WH)
    assert np.allclose(mat @ np.array([*center, 1.0]), [POSE_WH[0] / 2, POSE_WH[1] / 2], atol=1e-4)
    assert scale[0] / scale[1] == pytest.approx(POSE_WH[0] / POSE_WH[1])
    assert scale[1] == pytest.approx(200 * 1.25)


def test_plugin_draws_the_decoded_pose(dwpose_dir):
    from vacelive.engine.conditioning.annotators import Annotators

    ann = Annotators(torch.device("cpu"), torch.float32, models=dwpose_dir)
    frames = torch.zeros(3, 3, *FRAME_HW)
    out = ann("pose", frames)
    assert out.shape == frames.shape
    rgb = (out[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    x, y = expected_frame_xy(0)  # nose keypoint disc, colour 0
    assert tuple(rgb[int(y), int(x)]) == COLORS[0]
    fn = ann._loaded["pose"]
    assert fn.frames_done == 3 and fn.providers == ["CPUExecutionProvider"]


class ThreadSpy:
    """Annotators that record on which thread each annotation ran."""

    def __init__(self, inner):
        self.inner, self.threads, self._loaded = inner, [], inner._loaded

    def __call__(self, name, frames):
        self.threads.append(threading.current_thread().name)
        return self.inner(name, frames)


def test_pose_conditioner_annotates_on_the_annotator_thread_one_chunk_ahead(dwpose_dir):
    from vacelive.engine.conditioning.annotators import Annotators
    from vacelive.engine.config import tiny_config
    from vacelive.engine.factory import random_dit
    from vacelive.engine.pose.build import random_pose
    from vacelive.engine.request import ChunkRequest

    model = random_dit(tiny_config(), vace=False, device="cpu", dtype=torch.float32, seed=0)
    pose = random_pose(model, width=64, height=48, frames_per_chunk=3, device="cpu", dtype=torch.float32)
    pose.annotators = spy = ThreadSpy(Annotators(torch.device("cpu"), torch.float32, models=dwpose_dir))
    video = np.zeros((12, *FRAME_HW, 4), np.uint8)
    try:
        first = pose.prepare(ChunkRequest(video=video[:9], pose_strength=1.0), start_frame=0, num_latents=3,
                             num_frames=9, pixel_start=0)
        assert first.condition is None and any("starting" in n for n in pose.notices)  # never waited
        deadline = time.monotonic() + 30
        while pose.maps.runner.take("pose") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        second = pose.prepare(ChunkRequest(video=video, pose_strength=1.0), start_frame=3, num_latents=3,
                              num_frames=12, pixel_start=9)
        assert second.condition is not None and second.condition.shape == (1, 3 * 3 * 4, 64)
        assert second.rendered.shape == (12, *FRAME_HW, 3)  # the previous chunk's maps, fitted to 12
        assert spy.threads and all(t != threading.current_thread().name for t in spy.threads)
        assert "pose_annotator" in pose.timings_ms
    finally:
        pose.close()


def test_missing_dwpose_files_name_the_download_command(tmp_path):
    from vacelive.engine.conditioning.annotators import WeightsNotFound

    with pytest.raises(WeightsNotFound, match=r"vacelive weights download pose"):
        load_pose_annotator(tmp_path, torch.device("cpu"), torch.float32)


def test_download_registry_places_the_files_where_the_loaders_read_them(tmp_path):
    from vacelive.engine.annotator_models import ANNOTATOR_MODELS
    from vacelive.engine.pose.build import UNIANIMATE_FILE, UNIANIMATE_FOLDER, UNIANIMATE_REPO

    assert [tmp_path / f.path for f in ANNOTATOR_MODELS["pose"].files] == list(dwpose_files(tmp_path))
    (ua,) = ANNOTATOR_MODELS["unianimate"].files
    assert ua.path == f"{UNIANIMATE_FOLDER}/{UNIANIMATE_FILE}" and ua.repo_id == UNIANIMATE_REPO
