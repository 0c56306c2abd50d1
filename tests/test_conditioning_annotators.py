"""GPU annotators (run on CPU here): gray, Sobel edges, Canny-style scribble; the weight-based
plug-in registry with Depth Anything V2 through transformers (tiny random weights saved as a
real model folder) and the clear messages when weights or implementations are missing."""
from __future__ import annotations

import pytest
import torch

from vacelive.engine.annotator_models import ANNOTATOR_MODELS
from vacelive.engine.conditioning.annotators import (
    PLUGINS, AnnotatorUnavailable, Annotators, canny, edges, gray, register_annotator, scribble,
)

DEPTH_FOLDER = ANNOTATOR_MODELS["depth"].folder

CPU = torch.device("cpu")


def square(size=32, lo=8, hi=24, level=1.0):
    x = torch.zeros(1, 3, size, size)
    x[..., lo:hi, lo:hi] = level
    return x


def test_gray_is_bt601_luma_on_three_channels():
    x = torch.rand(2, 3, 5, 7)
    g = gray(x)
    assert g.shape == x.shape and torch.equal(g[:, 0], g[:, 2])
    assert torch.allclose(g[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])


def test_edges_peak_at_the_step_and_are_normalised_per_frame():
    x = torch.zeros(2, 3, 16, 16)
    x[0, :, :, 8:] = 1.0  # vertical step between columns 7 and 8
    x[1, :, :, 8:] = 0.1  # same step, 10x weaker: same normalised map
    e = edges(x)
    assert e.shape == x.shape and e.max() == 1.0 and e.min() == 0.0
    cols = e[0, 0].mean(0)
    assert set(cols.nonzero().flatten().tolist()) == {7, 8}
    assert torch.allclose(e[0], e[1], atol=1e-5)


def test_scribble_draws_thin_closed_white_lines_on_black():
    s = scribble(square())
    assert s.shape == (1, 3, 32, 32) and set(s.unique().tolist()) <= {0.0, 1.0}
    on = s[0, 0] > 0
    assert not on[:5].any() and not on[27:].any() and not on[12:20, 12:20].any()  # background and inside stay black
    for r in range(10, 22):  # every row crossing the square has a line at its left and right side
        assert on[r, 6:10].sum() >= 1 and on[r, 22:26].sum() >= 1
        assert on[r, 6:10].sum() <= 2  # thin: non-maximum suppression
    assert on.sum() < 4 * 16 * 2  # ... around the whole outline, at most ~2 px wide


def test_canny_hysteresis_keeps_weak_edges_only_when_connected_to_strong_ones():
    rows = torch.arange(24.0)[:, None]
    g = torch.zeros(1, 1, 24, 48)
    g[..., :, 24:] = 0.6 - 0.45 * rows / 23  # one vertical edge, strong at the top, weak below
    g2 = torch.zeros(1, 1, 24, 48)
    g2[..., :, 24:] = 0.15  # a weak edge alone
    line = canny(g)[0, 0]
    assert line[:, 22:26].any(1).all()  # the whole edge, its weak part held by the strong part
    assert not canny(g2).any()
    assert canny(g2, low=0.1, high=0.25).any()


def test_unknown_missing_and_unbuilt_annotators_explain_themselves(tmp_path):
    ann = Annotators(CPU, torch.float32, models=tmp_path)
    x = torch.rand(1, 3, 16, 16)
    assert ann("none", x) is x
    with pytest.raises(AnnotatorUnavailable, match="Unknown annotator 'sepia'"):
        ann("sepia", x)
    with pytest.raises(AnnotatorUnavailable) as e:
        ann("depth", x)
    msg = str(e.value)
    assert str(tmp_path / DEPTH_FOLDER / "model.safetensors") in msg
    assert f"vacelive weights download depth --models {tmp_path}" in msg
    with pytest.raises(AnnotatorUnavailable, match="Pose annotator: DWPose weights not found") as e:
        ann("pose", x)
    assert "vacelive weights download pose" in str(e.value)


def tiny_depth_anything(folder):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=518, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 16, 32],
                              fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    DepthAnythingForDepthEstimation(cfg).eval().save_pretrained(folder)


def test_depth_plugin_loads_local_weights_and_gives_a_normalised_gray_map(tmp_path):
    ann = Annotators(CPU, torch.float32, models=tmp_path)
    x = torch.rand(2, 3, 32, 48)
    with pytest.raises(AnnotatorUnavailable, match="not found"):
        ann("depth", x)
    tiny_depth_anything(tmp_path / DEPTH_FOLDER)  # weights copied in while running: found next time
    d = ann("depth", x)
    assert d.shape == x.shape and torch.isfinite(d).all()
    assert torch.equal(d[:, 0], d[:, 1]) and torch.equal(d[:, 1], d[:, 2])
    assert d.min() == 0.0 and d.max() == 1.0  # one range for the whole chunk (no flicker inside it)
    assert not torch.equal(d[0], d[1])  # follows the picture


def test_a_plugin_can_be_registered(tmp_path):
    saved = dict(PLUGINS)
    try:
        register_annotator("invert", lambda models, device, dtype: (lambda f: 1.0 - f))
        x = torch.rand(1, 3, 4, 4)
        assert torch.equal(Annotators(CPU, torch.float32, models=tmp_path)("invert", x), 1.0 - x)
    finally:
        PLUGINS.clear()
        PLUGINS.update(saved)
