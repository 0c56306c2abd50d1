"""DWPose keypoints -> the standard DWPose/OpenPose rendering (what VACE's pose control and
UniAnimate-DiT's pose embedding were trained on).

Follows the drawing of ali-vilab/UniAnimate-DiT `run_align_pose.py` (DWposeDetector + draw_pose ->
dwpose/util.py draw_body_and_foot / draw_handpose, the same code as ControlNet's and DWPose's
util.draw_*), the without-face variant UniAnimate trains on:
  * black canvas; keypoints in the 134-point OpenPose order (body 0-17, feet 18-23, face 24-91,
    hands 92-112 / 113-133), normalised to 0..1; a point with score <= 0.3 is not drawn;
  * body + feet: 20 points (18 body + left/right foot = mean of big and small toe) and 19 limbs,
    each a filled ellipse (cv2.ellipse2Poly, half-width 4) in the 18 OpenPose colours plus
    (170,255,255) and (255,255,0); then the canvas is multiplied by 0.6; then keypoint discs of
    radius 4 at full colour;
  * hands: 20 edges, lines of thickness 2 in HSV(edge/20, 1, 1); keypoint discs radius 4 (0,0,255).
The colour triplets are written into the array as given. UniAnimate saved these canvases with
cv2.imwrite (BGR) and read them back as RGB, so its training tensors hold the triplets with R and B
swapped; `for_unianimate` does that swap. VACE/ControlNet pose maps show the triplets as RGB
(first limb red). Needs opencv (the `pose` extra).
"""
from __future__ import annotations

import colorsys
import math

import numpy as np

SCORE_THRESHOLD = 0.3
STICK_WIDTH = 4
# 1-based point pairs of the 17 OpenPose limbs followed by the two foot limbs (ankle -> foot).
LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
         (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (14, 19), (11, 20))
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85), (170, 255, 255), (255, 255, 0))
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
HAND_COLORS = tuple(tuple(c * 255 for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
                    for i in range(len(HAND_EDGES)))
HAND_POINT_COLOR = (0, 0, 255)
LEFT_HAND, RIGHT_HAND = slice(92, 113), slice(113, 134)
# OpenPose-order indices of the toes used for the foot points (COCO-WholeBody feet 17..22 -> 18..23):
# left big + small toe, right big + small toe.
LEFT_TOES, RIGHT_TOES = (18, 19), (21, 22)
_EPS = 0.01

# COCO-WholeBody (133, mmpose order) -> OpenPose order with a neck at 17 (134 points); the remap
# of UniAnimate's dwpose/wholebody.py.
_MMPOSE_IDX = (17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3)
_OPENPOSE_IDX = (1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17)


def to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, 133, 2], [N, 133] (COCO-WholeBody) -> [N, 134, 2], [N, 134] in OpenPose order: a neck
    (mean of the shoulders; visible when both are > 0.3) inserted at 17, body points remapped."""
    info = np.concatenate([keypoints, scores[..., None]], axis=-1)
    neck = info[:, [5, 6]].mean(axis=1)
    neck[:, 2] = np.logical_and(info[:, 5, 2] > SCORE_THRESHOLD, info[:, 6, 2] > SCORE_THRESHOLD).astype(info.dtype)
    info = np.insert(info, 17, neck, axis=1)
    info[:, list(_OPENPOSE_IDX)] = info[:, list(_MMPOSE_IDX)]
    return info[..., :2], info[..., 2]


def _body_and_feet(points: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """20 body+foot points (normalised) and their visibility."""
    pts = np.full((20, 2), -1.0)
    vis = np.zeros(20, dtype=bool)
    ok = scores > SCORE_THRESHOLD
    pts[:18], vis[:18] = points[:18], ok[:18]
    for slot, (a, b) in ((18, LEFT_TOES), (19, RIGHT_TOES)):
        if ok[a] and ok[b]:
            pts[slot], vis[slot] = (points[a] + points[b]) / 2, True
    return pts, vis


def draw_pose(points: np.ndarray, scores: np.ndarray, height: int, width: int, *, hands: bool = True) -> np.ndarray:
    """One person's 134 OpenPose-order keypoints (x, y normalised to 0..1) -> uint8 [H, W, 3]."""
    import cv2

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    body, vis = _body_and_feet(points, scores)
    for i, (a, b) in enumerate(LIMBS):
        a, b = a - 1, b - 1
        if not (vis[a] and vis[b]):
            continue
        ys = body[[a, b], 1] * float(height)
        xs = body[[a, b], 0] * float(width)
        length = math.hypot(ys[0] - ys[1], xs[0] - xs[1])
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly((int(xs.mean()), int(ys.mean())), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, COLORS[i])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(20):
        if vis[i]:
            x, y = body[i]
            cv2.circle(canvas, (int(x * width), int(y * height)), 4, COLORS[i], thickness=-1)
    if hands:
        for part in (LEFT_HAND, RIGHT_HAND):
            pts = np.where((scores[part] > SCORE_THRESHOLD)[:, None], points[part], -1.0)
            _draw_hand(canvas, pts, cv2)
    return canvas


def _draw_hand(canvas: np.ndarray, peaks: np.ndarray, cv2) -> None:
    h, w = canvas.shape[:2]
    px = [(int(x * w), int(y * h)) for x, y in peaks]
    for ie, (a, b) in enumerate(HAND_EDGES):
        (x1, y1), (x2, y2) = px[a], px[b]
        if x1 > _EPS and y1 > _EPS and x2 > _EPS and y2 > _EPS:
            cv2.line(canvas, (x1, y1), (x2, y2), HAND_COLORS[ie], thickness=2)
    for x, y in px:
        if x > _EPS and y > _EPS:
            cv2.circle(canvas, (x, y), 4, HAND_POINT_COLOR, thickness=-1)


def for_unianimate(rendering):
    """R and B swapped: the channel order of UniAnimate's training tensors (cv2-written, PIL-read).
    Works on [..., 3] numpy arrays and on torch [.., 3, H, W] tensors (channel dim -3)."""
    if isinstance(rendering, np.ndarray):
        return rendering[..., ::-1]
    return rendering.flip(-3)
