"""Control-map annotators: depth (running range, Depth Anything V2 from its public folder layout),
optical flow (Middlebury wheel against a plain reimplementation of flow_vis, pairing across chunk
boundaries, RAFT from torchvision's own weight layout where torchvision imports), layout boxes
(where OSC put them, gliding between chunks) and the overlay of two maps."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vacelive.bridge import layout as osc_layout
from vacelive.engine.annotator_models import ANNOTATOR_MODELS
from vacelive.engine.conditioning.annotators import AnnotatorUnavailable, Annotators, overlay
from vacelive.engine.conditioning.depth import TemporalRange
from vacelive.engine.conditioning.flow import FlowPairs, flow_to_rgb
from vacelive.engine.conditioning.layout import LayoutTrack, render

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("single_thread")


# ---- depth -----------------------------------------------------------------------------------------
def ramp(f=2, h=8, w=16, lo=2.0, hi=5.0):
    return torch.linspace(lo, hi, w).view(1, 1, 1, w).expand(f, 1, h, w).clone()


def test_depth_range_maps_a_ramp_to_a_ramp_and_holds_across_chunks():
    r = TemporalRange(decay=0.25)
    out = r(ramp())
    assert torch.allclose(out[0, 0, 0], torch.linspace(0, 1, 16), atol=1e-6)
    assert torch.equal(r(ramp()), out)  # the same depths next chunk: the same map, no flicker


def test_depth_range_widens_at_once_and_narrows_by_decay():
    r = TemporalRange(decay=0.25)
    r(ramp(lo=2.0, hi=5.0))
    wide = r(ramp(lo=1.0, hi=9.0))  # a new extreme: taken in at once, nothing clips
    assert wide.min() == 0.0 and wide.max() == 1.0
    narrow = r(ramp(lo=2.0, hi=5.0))  # back to the old scene: the range narrows by 1/4 only
    lo, hi = 1.0 + 0.25 * (2.0 - 1.0), 9.0 + 0.25 * (5.0 - 9.0)
    assert (r.lo.item(), r.hi.item()) == pytest.approx((lo, hi))
    assert torch.allclose(narrow, (ramp() - lo) / (hi - lo))
    per_chunk = TemporalRange(decay=1.0)  # decay 1: exactly a per-chunk min-max
    per_chunk(ramp(lo=1.0, hi=9.0))
    assert torch.allclose(per_chunk(ramp()), (ramp() - 2.0) / 3.0)


def tiny_depth_anything(folder):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=518, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 16, 32],
                              fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    model = DepthAnythingForDepthEstimation(cfg).eval()
    model.save_pretrained(folder)  # the public layout: config.json + model.safetensors
    return model


@pytest.mark.parametrize("name", ["depth", "depth-large"])
def test_depth_anything_loads_from_its_public_folder_and_follows_the_reference_pipeline(tmp_path, name):
    folder = tmp_path / ANNOTATOR_MODELS[name].folder
    ann = Annotators(CPU, torch.float32, models=tmp_path)
    x = torch.rand(2, 3, 30, 40)
    with pytest.raises(AnnotatorUnavailable, match=f"vacelive weights download {name} "):
        ann(name, x)
    model = tiny_depth_anything(folder)
    got = ann(name, x)
    # plain reference: Depth Anything V2 infer_image preprocessing, then one min-max per chunk
    h = math.ceil(30 * 518 / 30 / 14) * 14
    w = math.ceil(40 * 518 / 30 / 14) * 14
    pix = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    pix = (pix - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        d = model(pixel_values=pix).predicted_depth[:, None]
    d = F.interpolate(d, size=(30, 40), mode="bilinear", align_corners=False)
    want = ((d - d.min()) / (d.max() - d.min())).expand(-1, 3, -1, -1)
    assert torch.allclose(got, want, atol=1e-5)
    ann.reset()  # a new stream: the running range starts over
    assert torch.allclose(ann(name, x[:1]), ((d[:1] - d[:1].min()) / (d[:1].max() - d[:1].min())).expand(-1, 3, -1, -1),
                          atol=1e-5)


# ---- flow ------------------------------------------------------------------------------------------
def reference_flow_to_image(flow_uv: np.ndarray) -> np.ndarray:
    """flow_vis.flow_to_image (Tom Runia, MIT), written out plainly from the published algorithm."""
    RY, YG, GC, CB, BM, MR = 15, 6, 4, 11, 13, 6
    ncols = RY + YG + GC + CB + BM + MR
    wheel = np.zeros((ncols, 3))
    col = 0
    wheel[0:RY, 0] = 255
    wheel[0:RY, 1] = np.floor(255 * np.arange(0, RY) / RY)
    col += RY
    wheel[col:col + YG, 0] = 255 - np.floor(255 * np.arange(0, YG) / YG)
    wheel[col:col + YG, 1] = 255
    col += YG
    wheel[col:col + GC, 1] = 255
    wheel[col:col + GC, 2] = np.floor(255 * np.arange(0, GC) / GC)
    col += GC
    wheel[col:col + CB, 1] = 255 - np.floor(255 * np.arange(CB) / CB)
    wheel[col:col + CB, 2] = 255
    col += CB
    wheel[col:col + BM, 2] = 255
    wheel[col:col + BM, 0] = np.floor(255 * np.arange(0, BM) / BM)
    col += BM
    wheel[col:col + MR, 2] = 255 - np.floor(255 * np.arange(MR) / MR)
    wheel[col:col + MR, 0] = 255
    u, v = flow_uv[..., 0], flow_uv[..., 1]
    rad_max = np.max(np.sqrt(np.square(u) + np.square(v)))
    u, v = u / (rad_max + 1e-5), v / (rad_max + 1e-5)
    img = np.zeros((*u.shape, 3), np.uint8)
    rad = np.sqrt(np.square(u) + np.square(v))
    a = np.arctan2(-v, -u) / np.pi
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int32)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f = fk - k0
    for i in range(3):
        col0, col1 = wheel[k0, i] / 255.0, wheel[k1, i] / 255.0
        c = (1 - f) * col0 + f * col1
        idx = rad <= 1
        c[idx] = 1 - rad[idx] * (1 - c[idx])
        c[~idx] = c[~idx] * 0.75
        img[:, :, i] = np.floor(255 * c)
    return img


def test_flow_colours_match_flow_vis():
    g = torch.Generator().manual_seed(0)
    flow = torch.randn(3, 2, 12, 20, generator=g) * 4
    got = (flow_to_rgb(flow) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(3):
        want = reference_flow_to_image(flow[i].permute(1, 2, 0).double().numpy())
        diff = np.abs(got[i].astype(int) - want.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float32 vs float64 at floor() edges only


def test_flow_direction_colours_of_the_middlebury_wheel():
    def colour(u, v):
        flow = torch.zeros(1, 2, 2, 2)
        flow[:, 0], flow[:, 1] = u, v
        return [round(c * 255) for c in flow_to_rgb(flow)[0, :, 0, 0].tolist()]

    assert colour(3.0, 0.0) == [255, 0, 0]  # rightwards: red
    assert colour(-3.0, 0.0) == [0, 255 - 46, 255]  # leftwards: cyan-blue (wheel index 27)
    assert colour(0.0, 0.0) == [255, 255, 255]  # no motion: white
    down, up = colour(0.0, 3.0), colour(0.0, -3.0)
    assert down[0] == 255 and down[2] == 0  # downwards: between red and yellow (index 13.5)
    assert up[2] == 255 and up[1] == 0  # upwards: between blue and magenta (index 40.5)


class RecordingEstimator:
    """Flow whose u is the index of the frame paired from, v the one paired to (frame index in
    the red channel)."""

    def __init__(self):
        self.pairs = []

    def __call__(self, a, b):
        ia, ib = (a[:, 0, 0, 0] * 100).round().long().tolist(), (b[:, 0, 0, 0] * 100).round().long().tolist()
        self.pairs += list(zip(ia, ib))
        return torch.zeros(a.shape[0], 2, *a.shape[-2:])


def indexed(start, n):
    x = torch.zeros(n, 3, 4, 4)
    x[:, 0] = (torch.arange(start, start + n, dtype=torch.float32) / 100).view(n, 1, 1)
    return x


def test_flow_pairs_consecutive_frames_across_chunk_boundaries():
    est = RecordingEstimator()
    pairs = FlowPairs(est)
    assert pairs.flows(indexed(0, 9)).shape == (9, 2, 4, 4)  # first chunk: 9 frames, 8 pairs
    assert est.pairs == [(i, i + 1) for i in range(8)]
    est.pairs.clear()
    pairs.flows(indexed(9, 12))  # the next chunk's first frame pairs with the previous chunk's last
    assert est.pairs == [(i, i + 1) for i in range(8, 20)]
    pairs.reset()  # a new stream: nothing before its first frame
    est.pairs.clear()
    pairs.flows(indexed(50, 3))
    assert est.pairs == [(50, 51), (51, 52)]


def shift_estimator(max_shift=4):
    """Obviously-correct global flow: the integer shift (dx, dy) minimising |b(x) - a(x - d)|."""
    def estimate(a, b):
        out = []
        for fa, fb in zip(a, b):
            best = min(((torch.roll(fa, (dy, dx), (1, 2)) - fb).abs().sum().item(), dx, dy)
                       for dx in range(-max_shift, max_shift + 1) for dy in range(-max_shift, max_shift + 1))
            out.append(torch.tensor([float(best[1]), float(best[2])]).view(2, 1, 1).expand(2, *a.shape[-2:]))
        return torch.stack(out)
    return estimate


def square_clip(start, n, step=(2, 0), size=32):
    x = torch.zeros(n, 3, size, size)
    for i in range(n):
        t = start + i
        x0, y0 = 12 + step[0] * t, 12 + step[1] * t
        x[i, :, y0:y0 + 6, x0:x0 + 6] = 1.0
    return x


@pytest.mark.parametrize("step,rgb", [((1, 0), (1.0, 0.0, 0.0)), ((-1, 0), (0.0, 209 / 255, 1.0))])
def test_a_translating_square_gives_constant_flow_of_its_direction_and_colour(step, rgb):
    pairs = FlowPairs(shift_estimator())
    first = pairs.flows(square_clip(0, 5, step))
    second = pairs.flows(square_clip(5, 4, step))  # across the chunk boundary
    for f in (first, second):
        assert torch.equal(f[:, 0], torch.full_like(f[:, 0], float(step[0])))
        assert torch.equal(f[:, 1], torch.zeros_like(f[:, 1]))
    maps = flow_to_rgb(second)
    assert torch.allclose(maps[:, :, 5, 5], torch.tensor(rgb).expand(4, 3), atol=1 / 255)


def test_flow_without_weights_or_torchvision_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models.optical_flow", None)
    ann = Annotators(CPU, torch.float32, models=tmp_path)
    x = torch.rand(2, 3, 16, 16)
    for name in ("flow", "flow-large"):
        with pytest.raises(AnnotatorUnavailable) as e:
            ann(name, x)
        assert f"vacelive weights download {name} --models {tmp_path}" in str(e.value)
        assert str(tmp_path / ANNOTATOR_MODELS[name].files[0].path) in str(e.value)
    path = tmp_path / ANNOTATOR_MODELS["flow"].files[0].path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")  # the weights are there now, torchvision is not
    with pytest.raises(AnnotatorUnavailable, match=r"vacelive\[annotators\]"):
        ann("flow", x)


def test_raft_from_torchvision_weights_in_the_models_folder(tmp_path):
    tv = pytest.importorskip("torchvision.models.optical_flow", reason="torchvision not importable here")
    ann = Annotators(CPU, torch.float32, models=tmp_path)
    x = torch.rand(3, 3, 32, 48)
    with pytest.raises(AnnotatorUnavailable, match="vacelive weights download flow "):
        ann("flow", x)
    torch.manual_seed(0)
    path = tmp_path / ANNOTATOR_MODELS["flow"].files[0].path
    path.parent.mkdir(parents=True)
    torch.save(tv.raft_small(weights=None).state_dict(), path)  # torchvision's own file layout
    out = ann("flow", x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


# ---- layout ----------------------------------------------------------------------------------------
def test_boxes_render_where_osc_put_them():
    value = osc_layout.with_box((), ["car", 0.25, 0.5, 0.5, 0.25])
    value = osc_layout.with_box(value, ["sun", 0.0, 0.0, 0.125, 0.25])
    boxes = osc_layout.request_layout(value)
    assert boxes == {"car": (0.25, 0.5, 0.5, 0.25), "sun": (0.0, 0.0, 0.125, 0.25)}
    m = render([boxes], 32, 64)[0]
    black = (m == 0).all(0)
    assert (m[:, ~black] == 1).all()  # white background, black outlines only
    # car: x 16..48, y 16..24, a 2-px outline centred on those edges
    assert black[16, 16:49].all() and black[24, 16:49].all() and black[16:25, 16].all() and black[16:25, 48].all()
    assert not black[19:22, 19:46].any()  # inside stays white
    assert black[0, 0:9].all() and black[0:9, 8].all()  # sun, clipped at the frame's edge
    assert not black[26:, :].any() and not black[:, 50:].any()
    assert osc_layout.request_layout(osc_layout.without_box(value, ["car"])) == {"sun": (0.0, 0.0, 0.125, 0.25)}


def test_boxes_glide_between_chunks():
    track = LayoutTrack()
    a, b = (0.0, 0.0, 0.2, 0.2), (0.4, 0.2, 0.2, 0.4)
    assert track.frames({"p": a}, 3) == [{"p": a}] * 3  # a new box appears where it was put
    frames = track.frames({"p": b}, 4)
    for i, f in enumerate(frames):  # VACE: start + (end - start) * i / n
        assert f["p"] == pytest.approx(tuple(s + (e - s) * i / 4 for s, e in zip(a, b)))
    assert track.frames({"p": b}, 2)[0]["p"] == b  # the next chunk starts exactly at the target
    assert track.frames({}, 2) == [{}, {}]  # removed: gone at once


def test_overlay_draws_the_top_map_where_it_is_not_background():
    base = torch.full((1, 3, 4, 4), 0.5)  # e.g. gray
    top = torch.zeros(1, 3, 4, 4)  # e.g. scribble: white lines on black
    top[..., 1, :] = 1.0
    out = overlay(base, top, 0.0)
    assert torch.equal(out[..., 1, :], top[..., 1, :]) and torch.equal(out[..., 0, :], base[..., 0, :])
    flow = torch.ones(1, 3, 4, 4)  # flow / layout: white background
    flow[..., 2, 2] = torch.tensor([1.0, 0.0, 0.0])
    out = overlay(base, flow, None)  # background read from the corners
    assert torch.equal(out[0, :, 2, 2], torch.tensor([1.0, 0.0, 0.0])) and (out[0, :, 0, 0] == 0.5).all()


def test_raft_estimator_feeds_torchvision_conventions_and_scales_the_flow_back():
    from vacelive.engine.conditioning.flow import RaftEstimator

    calls = []

    class FakeRaft:  # torchvision's RAFT call: (image1, image2, num_flow_updates) -> list of flows
        def __call__(self, a, b, num_flow_updates):
            calls.append((a.shape, a.min().item(), b.max().item(), num_flow_updates))
            f = torch.zeros(a.shape[0], 2, *a.shape[-2:])
            f[:, 0], f[:, 1] = 4.0, -2.0  # pixels at the working size
            return [f * 0.5, f]  # the last prediction is the refined one

    est = RaftEstimator(FakeRaft(), num_flow_updates=12, max_side=64)
    a, b = torch.zeros(2, 3, 60, 100), torch.ones(2, 3, 60, 100)
    flow = est(a, b)
    (shape, lo, hi, updates), = calls
    assert shape == (2, 3, 40, 64) and (lo, hi, updates) == (-1.0, 1.0, 12)  # multiples of 8, -1..1
    assert flow.shape == (2, 2, 60, 100)
    assert torch.allclose(flow[:, 0], torch.full((2, 60, 100), 4.0 * 100 / 64))
    assert torch.allclose(flow[:, 1], torch.full((2, 60, 100), -2.0 * 60 / 40))
