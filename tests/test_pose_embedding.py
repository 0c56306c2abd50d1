"""UniAnimate-DiT pose embedding: public key layout and shapes, loading through the checkpoint
reader, equality with a plain conv chain, and the per-chunk window == the whole-clip embedding."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vacelive.engine.checkpoint import CheckpointError
from vacelive.engine.pose import (
    LOOKAHEAD, POSE_CHANNELS, PoseEmbedding, PoseTimeline, chunk_pixel_range, load_pose_embedding, load_pose_proj,
)
from vacelive.engine.pose.timeline import whole_clip_input

# (key, shape) of the released checkpoint's pose modules, from UniAnimate-DiT's layer definitions.
DWPOSE_SHAPES = {
    "0.weight": (16, 3, 3, 3, 3), "0.bias": (16,),
    **{f"{i}.weight": (16, 16, 3, 3, 3) for i in (2, 4, 6, 8, 10)}, **{f"{i}.bias": (16,) for i in (2, 4, 6, 8, 10)},
    "12.weight": (5120, 16, 1, 2, 2), "12.bias": (5120,),
}
RANDOMREF_SHAPES = {
    "0.weight": (16, 3, 3, 3), "0.bias": (16,),
    **{f"{i}.weight": (16, 16, 3, 3) for i in (2, 4, 6, 8)}, **{f"{i}.bias": (16,) for i in (2, 4, 6, 8)},
    "10.weight": (20, 16, 3, 3), "10.bias": (20,),
}
# strides/paddings of the plain reimplementation
DW_STRIDES = [(1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)]
DW_PADS = [1, 1, 1, 1, 1, 1, 0]
REF_STRIDES = [1, 1, 1, 2, 2, 2]


def public_state_dict(seed=0, lora=True):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, shapes in (("dwpose_embedding.", DWPOSE_SHAPES), ("randomref_embedding_pose.", RANDOMREF_SHAPES)):
        for k, shape in shapes.items():
            fan = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 16
            sd[prefix + k] = torch.randn(shape, generator=g) / fan ** 0.5
    if lora:  # the released file also holds the 14B LoRA: skipped by the pose loader
        sd["pipe.dit.blocks.0.self_attn.q.lora_A.default.weight"] = torch.randn(4, 8, generator=g)
    return sd


def plain_dwpose(sd, x):
    for n, (s, p) in enumerate(zip(DW_STRIDES, DW_PADS)):
        x = F.conv3d(x, sd[f"dwpose_embedding.{2 * n}.weight"], sd[f"dwpose_embedding.{2 * n}.bias"], stride=s, padding=p)
        if n < 6:
            x = x * torch.sigmoid(x)
    return x


def plain_randomref(sd, x):
    for n, s in enumerate(REF_STRIDES):
        x = F.conv2d(x, sd[f"randomref_embedding_pose.{2 * n}.weight"], sd[f"randomref_embedding_pose.{2 * n}.bias"], stride=s, padding=1)
        if n < 5:
            x = x * torch.sigmoid(x)
    return x


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = tmp_path_factory.mktemp("ua") / "UniAnimate-Wan2.1-14B-Lora-12000.ckpt"
    sd = public_state_dict()
    torch.save(sd, path)
    emb = PoseEmbedding(64)
    assert load_pose_embedding(emb, path) == len(DWPOSE_SHAPES) + len(RANDOMREF_SHAPES)
    return emb.eval(), sd


def test_public_key_names_and_shapes():
    emb = PoseEmbedding(POSE_CHANNELS)
    got = {k: tuple(v.shape) for k, v in emb.state_dict().items()}
    want = {**{f"dwpose_embedding.{k}": s for k, s in DWPOSE_SHAPES.items()},
            **{f"randomref_embedding_pose.{k}": s for k, s in RANDOMREF_SHAPES.items()}}
    assert got == want  # 14B: pose_proj is the identity, no keys
    small = PoseEmbedding(1536)
    assert {k: tuple(v.shape) for k, v in small.state_dict().items() if k.startswith("pose_proj")} == {
        "pose_proj.weight": (1536, 5120), "pose_proj.bias": (1536,)}


def test_full_size_output_grids_on_meta():
    emb = PoseEmbedding(POSE_CHANNELS).to("meta")
    out = emb.embed_video(torch.empty(1, 3, 84, 480, 832, device="meta"))
    assert tuple(out.shape) == (1, 5120, 21, 30, 52)  # 81 frames + 3 -> 21 latents, the 480x832 token grid
    ref = emb.embed_reference(torch.empty(1, 3, 480, 832, device="meta"))
    assert tuple(ref.shape) == (1, 20, 1, 60, 104)  # the VAE latent grid


def test_loaded_weights_round_trip_and_match_a_plain_reimplementation(loaded):
    emb, sd = loaded
    got = emb.state_dict()
    for k, v in sd.items():
        if "lora" not in k:
            assert torch.equal(got[k], v), k
    torch.manual_seed(1)
    x = torch.rand(1, 3, 12, 64, 48)
    assert torch.allclose(emb.embed_video(x), plain_dwpose(sd, x), atol=1e-5, rtol=1e-4)
    r = torch.rand(1, 3, 64, 48)
    assert torch.allclose(emb.embed_reference(r), plain_randomref(sd, r).unsqueeze(2), atol=1e-5, rtol=1e-4)
    # tokens: 'b c f h w -> b (f h w) c' then pose_proj
    e = emb.embed_video(x)
    t = emb.tokens(e)
    flat = e.permute(0, 2, 3, 4, 1).reshape(1, -1, POSE_CHANNELS)
    assert torch.allclose(t, F.linear(flat, emb.pose_proj.weight, emb.pose_proj.bias), atol=1e-5)


def test_loader_errors_are_clear(tmp_path):
    bad = public_state_dict(lora=False)
    bad["dwpose_embedding.12.weight"] = torch.zeros(1536, 16, 1, 2, 2)
    torch.save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"dwpose_embedding.12.weight has shape \(1536, 16, 1, 2, 2\)"):
        load_pose_embedding(PoseEmbedding(64), tmp_path / "bad.ckpt")
    torch.save({"pipe.dit.x.lora_A.weight": torch.zeros(2)}, tmp_path / "lora_only.ckpt")
    with pytest.raises(CheckpointError, match="no dwpose_embedding"):
        load_pose_embedding(PoseEmbedding(64), tmp_path / "lora_only.ckpt")
    short = {k: v for k, v in public_state_dict().items() if k != "dwpose_embedding.4.bias"}
    torch.save(short, tmp_path / "short.ckpt")
    with pytest.raises(CheckpointError, match="missing: 4.bias"):
        load_pose_embedding(PoseEmbedding(64), tmp_path / "short.ckpt")


def test_pose_proj_loads_from_its_own_file(tmp_path):
    from safetensors.torch import save_file

    emb = PoseEmbedding(64)
    assert emb.needs_proj and not emb.pose_proj_trained
    w, b = torch.randn(64, 5120), torch.randn(64)
    save_file({"pose_proj.weight": w, "pose_proj.bias": b}, str(tmp_path / "pose_proj.safetensors"))
    assert load_pose_proj(emb, tmp_path / "pose_proj.safetensors") == 2
    assert torch.equal(emb.pose_proj.weight, w) and emb.pose_proj_trained
    torch.save({"weight": w, "bias": b}, tmp_path / "bare.pt")
    assert load_pose_proj(PoseEmbedding(64), tmp_path / "bare.pt") == 2
    with pytest.raises(CheckpointError, match="needs no projection"):
        load_pose_proj(PoseEmbedding(POSE_CHANNELS), tmp_path / "bare.pt")


# ---- per-chunk slicing ---------------------------------------------------------------------------------
H, W = 32, 32


def chunk_latents(frames_per_chunk, index):
    return index * frames_per_chunk, frames_per_chunk


def stream(emb, video, frames_per_chunk, chunks, lookahead):
    """Push each chunk's pixel frames as the generator would and embed its window."""
    tl = PoseTimeline(H, W, frames_per_chunk, "cpu")
    out = []
    for c in range(chunks):
        j0, n = chunk_latents(frames_per_chunk, c)
        a, b = chunk_pixel_range(j0, n)
        tl.push(a, video[a:b])
        x, skip = tl.window_frames(j0, n, lookahead)
        out.append(emb.embed_video(x)[:, :, skip:skip + n])
    return out


def moving_video(frames):
    g = torch.Generator().manual_seed(3)
    v = torch.zeros(frames, 3, H, W)
    for i in range(frames):  # a bright square walking across, plus noise: every frame differs
        x = (2 * i) % (W - 8)
        v[i, :, 8:16, x:x + 8] = 1.0
    return (v + 0.2 * torch.rand(v.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("frames_per_chunk", [3, 1])
def test_window_equals_the_whole_clip_embedding_chunk_0_and_5(loaded, frames_per_chunk):
    emb, _ = loaded
    chunks = 6
    total = chunk_pixel_range(0, chunks * frames_per_chunk)[1]
    video = (moving_video(total + 8) * 255).round().to(torch.uint8)
    # first-chunk frame count is the engine's: 1 + 4 (n - 1) pixel frames for n latents
    assert chunk_pixel_range(0, frames_per_chunk) == (0, 1 + 4 * (frames_per_chunk - 1))
    assert chunk_pixel_range(5 * frames_per_chunk, frames_per_chunk)[1] - chunk_pixel_range(5 * frames_per_chunk, frames_per_chunk)[0] == 4 * frames_per_chunk
    v01 = video.float() / 255

    # wait: exactly the whole-clip embedding of the pose video delayed by LOOKAHEAD frames
    delayed = torch.cat([v01[:1].expand(LOOKAHEAD, -1, -1, -1), v01])[:total + 8]
    whole = emb.embed_video(whole_clip_input(delayed))
    got = stream(emb, video, frames_per_chunk, chunks, "wait")
    for c in (0, 5):
        j0, n = chunk_latents(frames_per_chunk, c)
        assert torch.allclose(got[c], whole[:, :, j0:j0 + n], atol=1e-5, rtol=1e-4), c

    # causal: the undelayed clip; only the chunk's last latent differs (its 4 future frames)
    whole = emb.embed_video(whole_clip_input(v01))
    got = stream(emb, video, frames_per_chunk, chunks, "causal")
    for c in (0, 5):
        j0, n = chunk_latents(frames_per_chunk, c)
        ref = whole[:, :, j0:j0 + n]
        assert torch.allclose(got[c][:, :, :n - 1], ref[:, :, :n - 1], atol=1e-5, rtol=1e-4), c
        assert not torch.allclose(got[c][:, :, n - 1], ref[:, :, n - 1], atol=1e-3), c


def test_timeline_holds_the_last_pose_over_a_gap_and_resizes():
    tl = PoseTimeline(16, 16, 3, "cpu")
    tl.push(0, torch.full((9, 3, 8, 8), 0.5))  # other size: resized
    tl.push(21, torch.ones(12, 3, 16, 16))  # a chunk without pose frames in between
    assert tl.source_index(12, 0) == 12
    x, _ = tl.window_frames(5, 3, "causal")
    assert x.shape[:3] == (1, 3, 24)
    gap = tl.buffer[15 % tl.capacity]
    assert torch.equal(gap, torch.full((3, 16, 16), 128, dtype=torch.uint8))  # the held pose
    with pytest.raises(ValueError, match=r"\[n, 3, H, W\]"):
        tl.push(33, torch.ones(3, 16, 16))
