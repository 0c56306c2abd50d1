"""Live texture handling: layouts, dtypes, channels, frame counts, sizes, NaN/Inf - fixed with a
notice or refused with a readable sentence; and the conditioner never crashes on them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vacelive.engine.codecs import random_codec
from vacelive.engine.conditioning import VaceConditioner
from vacelive.engine.conditioning.inputs import InputError, fit, frames01, mask_plane, take_frames, to_rgb
from vacelive.engine.request import ChunkRequest

CPU = torch.device("cpu")
H, W = 32, 48


pytestmark = pytest.mark.usefixtures("single_thread")


def test_layouts_and_dtypes():
    notes = []
    rgba = np.arange(2 * 4 * 5 * 4, dtype=np.uint8).reshape(2, 4, 5, 4)
    x = frames01(rgba, "Video", CPU, notes)
    assert x.shape == (2, 4, 4, 5) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(rgba).permute(0, 3, 1, 2).float() / 255)
    assert frames01(rgba[0], "Image", CPU, notes).shape == (1, 4, 4, 5)  # [H, W, C]
    assert frames01(rgba[..., 0], "Gray frames", CPU, notes).shape == (2, 1, 4, 5)  # [F, H, W]
    assert frames01(rgba[0, ..., 0], "Mask", CPU, notes).shape == (1, 1, 4, 5)  # [H, W]
    assert frames01(rgba[None], "Batch", CPU, notes).shape == (2, 4, 4, 5)  # [1, F, H, W, C]
    u16 = (rgba.astype(np.uint16) * 257)
    assert torch.allclose(frames01(u16, "16-bit", CPU, notes), x)
    assert frames01(torch.ones(4, 5, dtype=torch.bool), "Bool", CPU, notes).sum() == 20
    half = torch.from_numpy(rgba).to(torch.float16) / 255
    assert torch.allclose(frames01(half, "Half", CPU, notes), x, atol=1e-3)
    assert notes == []


def test_nan_inf_and_range_are_sanitised_with_a_notice():
    notes = []
    f = torch.tensor([[float("nan"), float("inf")], [-float("inf"), 0.25]])
    x = frames01(f, "Video", CPU, notes)
    assert torch.equal(x[0, 0], torch.tensor([[0.0, 1.0], [0.0, 0.25]]))
    assert len(notes) == 1 and "NaN" in notes[0]
    notes.clear()
    x = frames01(torch.tensor([[-1.0, 2.0]]), "Video", CPU, notes)
    assert torch.equal(x[0, 0], torch.tensor([[0.0, 1.0]])) and "clipped" in notes[0]


@pytest.mark.parametrize("bad, words", [
    (np.zeros((4, 5, 6), np.float32) [..., None].repeat(7, -1), "channels"),
    (np.zeros((4, 5, 3), np.int32), "int32"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    ("picture.png", "not an array"),
    (np.zeros((1, 2, 3, 4, 5, 3), np.uint8), "shape"),
])
def test_unusable_inputs_raise_a_readable_sentence(bad, words):
    with pytest.raises(InputError, match=words) as e:
        frames01(bad, "Video", CPU, [])
    assert str(e.value)[0].isupper() and str(e.value).rstrip().endswith(".")


def test_frame_counts():
    notes = []
    x = torch.arange(5.0).view(5, 1, 1, 1)
    assert take_frames(x, 3, "Video", notes).flatten().tolist() == [2, 3, 4]  # newest
    assert take_frames(x[:1], 4, "Video", notes).flatten().tolist() == [0, 0, 0, 0]  # a still
    assert notes == []
    assert take_frames(x[:2], 4, "Video", notes).flatten().tolist() == [0, 1, 1, 1]
    assert "repeated" in notes[0]


def test_channels_to_rgb_and_mask_planes():
    notes = []
    rgba = torch.rand(2, 4, 3, 3)
    assert torch.equal(to_rgb(rgba, "V"), rgba[:, :3])
    white = to_rgb(rgba, "Ref", background=1.0)  # alpha composited on white
    assert torch.allclose(white, rgba[:, :3] * rgba[:, 3:] + (1 - rgba[:, 3:]))
    assert torch.equal(to_rgb(rgba[:, :1], "V"), rgba[:, :1].expand(-1, 3, -1, -1))
    assert torch.equal(mask_plane(rgba, "alpha", "Mask", notes), rgba[:, 3:])
    assert torch.equal(mask_plane(rgba, "red", "Mask", notes), rgba[:, :1])
    luma = 0.299 * rgba[:, 0:1] + 0.587 * rgba[:, 1:2] + 0.114 * rgba[:, 2:3]
    assert torch.allclose(mask_plane(rgba, "luma", "Mask", notes), luma)
    assert notes == []
    assert torch.allclose(mask_plane(rgba[:, :3], "alpha", "Mask", notes), luma) and "no alpha" in notes[0]
    with pytest.raises(InputError, match="channels"):
        to_rgb(torch.rand(1, 5, 2, 2), "V")


def test_fit_policies():
    x = torch.rand(1, 3, 20, 60)  # 3:1 into 32x48 (2:3)
    s, rect = fit(x, H, W, "stretch", 0.5)
    assert s.shape == (1, 3, H, W) and rect == (0, H, 0, W)
    c, rect = fit(x, H, W, "crop", 0.5)
    assert c.shape == (1, 3, H, W) and rect == (0, H, 0, W)
    # crop keeps the centre: a centred crop of the same aspect, resized, is the same picture
    cw = round(20 * W / H)
    x0 = (60 - cw) // 2
    assert torch.allclose(c, fit(x[..., x0:x0 + cw], H, W, "stretch", 0.5)[0])
    lb, (y0, y1, x0, x1) = fit(x, H, W, "letterbox", 0.5)
    assert (x0, x1) == (0, W) and y1 - y0 == 16  # 60 -> 48 wide, 20 -> 16 high
    assert (lb[..., :y0, :] == 0.5).all() and (lb[..., y1:, :] == 0.5).all()
    same = torch.rand(1, 3, H, W)
    assert fit(same, H, W, "crop", 0.0)[0] is same  # right size: untouched


# ---- the conditioner on bad inputs: documented handling, never a crash --------------------------
@pytest.fixture(scope="module")
def tae():
    return random_codec("tae", seed=0)


def frames(n, h=H, w=W, c=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def run(codec, request, n=12, first=False):
    cond = VaceConditioner(codec, W, H, "cpu", torch.float32)
    return cond.prepare(request, first_chunk=first, num_frames=n), cond


def test_conditioner_fits_converts_and_trims_without_complaint(tae):
    ok, _ = run(tae, ChunkRequest(video=frames(12)))
    big, cond = run(tae, ChunkRequest(video=frames(12, 2 * H, 2 * W), fit="stretch"))
    assert big.context.shape == ok.context.shape == (1, 96, 3, H // 8, W // 8) and cond.notices == []
    gray1, cond = run(tae, ChunkRequest(video=frames(12, c=1)))
    rgb, _ = run(tae, ChunkRequest(video=np.repeat(frames(12, c=1), 3, -1)))
    assert torch.equal(gray1.context, rgb.context) and cond.notices == []
    more, cond = run(tae, ChunkRequest(video=np.concatenate([frames(4, seed=9), frames(12)])))
    assert torch.equal(more.context, ok.context) and cond.notices == []  # the newest 12 are used
    torch_in, _ = run(tae, ChunkRequest(video=torch.from_numpy(frames(12)).float() / 255))
    assert torch.allclose(torch_in.context, ok.context, atol=1e-5)


def test_conditioner_reports_what_it_fixed_or_dropped(tae):
    few, cond = run(tae, ChunkRequest(video=frames(5)))
    assert few is not None and "5 frames" in cond.notices[0]
    nan = torch.from_numpy(frames(12)).float() / 255
    clean, _ = run(tae, ChunkRequest(video=nan.clone()))
    nan[0, 0, 0, 0] = float("nan")
    nan[3, 1, 1, 1] = float("inf")
    fixed, cond = run(tae, ChunkRequest(video=nan))
    assert torch.isfinite(fixed.context).all() and "NaN" in cond.notices[0]
    dropped, cond = run(tae, ChunkRequest(video=frames(12, c=4)[..., None].repeat(2, -1).reshape(12, H, W, 8)))
    assert dropped is None and "8 channels" in cond.notices[0] and "ignored" in cond.notices[0]
    no_video_mask, cond = run(tae, ChunkRequest(mask=frames(1)[0]))
    assert no_video_mask is None and "no video" in cond.notices[0]
    bad_mask, cond = run(tae, ChunkRequest(video=frames(12), mask=np.zeros((H, W, 3), np.int64)))
    control, _ = run(tae, ChunkRequest(video=frames(12)))
    assert torch.equal(bad_mask.context, control.context) and "Mask ignored" in cond.notices[0]


def test_a_persisting_problem_is_reported_once(tae):
    cond = VaceConditioner(tae, W, H, "cpu", torch.float32)
    seen = []
    for i in range(4):
        video = frames(5) if i < 3 else frames(12)
        cond.prepare(ChunkRequest(video=video), first_chunk=False, num_frames=12)
        seen.append(list(cond.notices))
    assert len(seen[0]) == 1 and seen[1] == [] and seen[2] == [] and seen[3] == []
    cond.prepare(ChunkRequest(video=frames(5)), first_chunk=False, num_frames=12)
    assert len(cond.notices) == 1  # it came back: reported again
