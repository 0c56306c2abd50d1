"""Pose tokens through the StreamGenerator: off is the exact path, every chunk's add_condition is
exactly its slice of the whole-clip UniAnimate embedding (chunk 0, chunk 5, 1-latent chunks), a
pose switched on at chunk N leaves earlier chunks alone, and the KV re-cache re-runs frames with
the conditions they were generated with."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vacelive.engine.generator import StreamGenerator
from vacelive.engine.pose import LOOKAHEAD, chunk_pixel_range
from vacelive.engine.pose.timeline import whole_clip_input
from vacelive.engine.request import ChunkRequest, Prompt

W, H = 64, 48


def make(recipe="longlive", **kw):
    return StreamGenerator.random("tiny", width=W, height=H, codec="tae", device="cpu", vace=False, recipe=recipe, **kw)


def pose_video(frames, seed=0):
    """A deterministic RGBA 'pose map' video: a coloured bar moving over black, plus noise."""
    rng = np.random.default_rng(seed)
    v = np.zeros((frames, H, W, 4), np.uint8)
    v[..., 3] = 255
    for i in range(frames):
        x = (3 * i) % (W - 10)
        v[i, 10:30, x:x + 10, :3] = (255, 85 * (i % 3), 0)
    v[..., :3] = np.clip(v[..., :3].astype(int) + rng.integers(0, 40, v[..., :3].shape), 0, 255)
    return v


def capture(gen):
    """Every DiT call's (start_frame, number of latent frames, add_condition) in order."""
    calls = []

    def hook(module, args, kwargs):
        cond = kwargs.get("add_condition")
        calls.append((args[4], args[0].shape[2], None if cond is None else cond.clone()))

    gen.model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def run(gen, video, chunks, strength=1.0, lookahead="wait", strength_from=0, prompts=None):
    outs = []
    for c in range(chunks):
        j0, n = gen.frame, gen.next_chunk_latents
        a, b = chunk_pixel_range(j0, n)
        assert b - a == gen.next_chunk_frames
        req = ChunkRequest(prompts=[Prompt((prompts or {}).get(c, "a dancer"))], steps=1, video=video[a:b],
                           pose_strength=strength if c >= strength_from else 0.0, pose_source="rendered",
                           pose_lookahead=lookahead)
        outs.append(gen.step(req).frames.clone())
    return outs


def expected_tokens(gen, video, j0, n, strength, lookahead):
    emb = gen.pose.embedding
    v = torch.from_numpy(video[..., :3]).permute(0, 3, 1, 2).float() / 255
    v = v.flip(1)  # UniAnimate's channel order
    if lookahead == "wait":
        v = torch.cat([v[:1].expand(LOOKAHEAD, -1, -1, -1), v])
    whole = emb.embed_video(whole_clip_input(v))
    return emb.tokens(whole[:, :, j0:j0 + n]) * strength


def test_pose_off_is_bit_identical_to_a_generator_without_pose():
    video = pose_video(40)
    a, b = make(), make()
    b.pose = None
    ca = capture(a)
    assert all(torch.equal(x, y) for x, y in zip(run(a, video, 3, strength=0.0), run(b, video, 3, strength=0.0)))
    assert all(cond is None for _, _, cond in ca)


@pytest.mark.parametrize("recipe,lookahead", [("longlive", "wait"), ("streamdiffusionv2", "causal")])
def test_each_chunk_gets_exactly_its_slice_of_the_clip_embedding(recipe, lookahead):
    gen = make(recipe)
    calls = capture(gen)
    video = pose_video(80)
    run(gen, video, 6, strength=0.7, lookahead=lookahead)
    # the denoising + clean passes of a chunk all carry the chunk's condition
    by_start = {}
    for start, n, cond in calls:
        by_start.setdefault(start, []).append((n, cond))
    starts = sorted(by_start)
    assert len(starts) == 6
    for c in (0, 5):
        j0 = starts[c]
        n, cond = by_start[j0][0]
        assert all(torch.equal(cond, other) for _, other in by_start[j0])
        assert cond.shape == (1, n * (H // 16) * (W // 16), gen.model.cfg.dim)
        want = expected_tokens(gen, video, j0, n, 0.7, "wait" if lookahead == "wait" else "none")
        if lookahead == "wait":
            assert torch.allclose(cond, want, atol=1e-5, rtol=1e-4), (recipe, c)
        else:  # causal: every latent but the chunk's last is exact
            per = cond.shape[1] // n
            assert torch.allclose(cond[:, :per * (n - 1)], want[:, :per * (n - 1)], atol=1e-5, rtol=1e-4)
    if recipe == "streamdiffusionv2":
        assert [by_start[s][0][0] for s in starts] == [2, 1, 1, 1, 1, 1]  # 2-latent first chunk, then 1


def test_pose_switched_on_at_chunk_n_never_changes_earlier_chunks():
    video = pose_video(60)
    plain = run(make(), video, 4, strength=0.0)
    posed = run(make(), video, 4, strength=1.5, strength_from=2)
    assert torch.equal(plain[0], posed[0]) and torch.equal(plain[1], posed[1])
    assert not torch.equal(plain[2], posed[2])


def test_recache_after_a_prompt_cut_reuses_the_generated_conditions():
    gen = make()
    calls = capture(gen)
    video = pose_video(60)
    run(gen, video, 4, strength=1.0, prompts={3: "a different prompt"})
    conds = {}
    for start, n, cond in calls:
        if n == 3 and cond is not None:
            conds.setdefault(start, cond)
    recache = [(s, n, c) for s, n, c in calls if n > 3]
    assert len(recache) == 1
    s, n, c = recache[0]
    assert s == 0 and n == 9  # min(window 12, frames so far 9)
    assert torch.equal(c, torch.cat([conds[0], conds[3], conds[6]], 1))


def test_pose_without_video_and_bad_values_are_notices_not_errors():
    gen = make()
    r = gen.step(ChunkRequest(pose_strength=1.0, steps=1))
    assert any("no control video" in n for n in r.notices)
    r = gen.step(ChunkRequest(pose_strength="lots", pose_source="kinect", pose_lookahead="never", steps=1,
                              video=pose_video(12), pose_ref=True))
    text = " ".join(r.notices)
    assert "pose_strength 'lots' is not a number" in text and "pose_source 'kinect'" in text
    assert "pose_lookahead 'never'" in text and "Reference pose" in text


def test_krea_context_recompute_reruns_recent_frames_with_their_conditions():
    gen = make("krea-realtime")
    calls = []

    def hook(module, args, kwargs):
        cond = kwargs.get("add_condition")
        calls.append((args[4], args[0].shape[2], float(torch.as_tensor(args[1]).flatten()[0]),
                      None if cond is None else cond.clone()))

    gen.model.register_forward_pre_hook(hook, with_kwargs=True)
    video = pose_video(60)
    run(gen, video, 4, strength=1.0)
    chunk_conds = [c for s, n, t, c in calls if t > 0]  # one denoising pass per chunk (steps=1)
    assert len(chunk_conds) == 4
    context = [(n, c) for s, n, t, c in calls if t == 0]
    assert context, "Krea rebuilds its cache from context frames every chunk"
    per = (H // 16) * (W // 16)
    n, c = context[-1]  # before chunk 3: [re-encoded first | the recent latents]
    assert c is not None and c.shape[1] == n * per
    assert not c[:, :per].any()  # the re-encoded first frame has no condition
    assert n > 1
    recent = torch.cat([chunk_conds[1], chunk_conds[2]], 1)[:, -(n - 1) * per:]  # chunks 1-2's latents
    assert torch.equal(c[:, per:], recent)


@pytest.mark.parametrize("policy", ["crop", "letterbox"])
def test_pose_frames_are_fitted_like_the_vace_video(policy):
    from vacelive.engine.conditioning.inputs import fit

    gen = make()
    wide = np.zeros((9, H, 2 * W, 4), np.uint8)
    wide[..., 3] = 255
    wide[:, :, :W // 2, 0] = 255  # a red band on the far left: cut by crop, kept by letterbox
    wide[:, :, W:W + 8, 1] = 200
    gen.step(ChunkRequest(video=wide, pose_strength=1.0, pose_source="rendered", fit=policy, steps=1))
    src = torch.from_numpy(wide[..., :3]).permute(0, 3, 1, 2).float() / 255
    want = (fit(src, H, W, policy, 0.0)[0].flip(1) * 255).round().to(torch.uint8)
    assert torch.equal(gen.pose.timeline.buffer[:9], want)
    assert bool(want[:, 2].any()) == (policy == "letterbox")  # R (now channel 2) survives only letterboxed


def test_real_pose_weights_say_what_they_can_do(tmp_path):
    """Loaded through from_recipe's path (engine.pose.build): a 1.3B-wide DiT without a trained
    pose_proj and a 5120-wide one (UniAnimate's own width, text-to-video base) each get a notice."""
    from test_pose_embedding import public_state_dict

    from vacelive.engine.config import tiny_config
    from vacelive.engine.factory import random_dit
    from vacelive.engine.pose.build import UNIANIMATE_FILE, UNIANIMATE_FOLDER, pose_from_models

    assert pose_from_models(random_dit(tiny_config(), vace=False), tmp_path, width=W, height=H, frames_per_chunk=3,
                            device="cpu", dtype=torch.float32) is None  # no file: pose tokens off
    (tmp_path / UNIANIMATE_FOLDER).mkdir()
    torch.save(public_state_dict(), tmp_path / UNIANIMATE_FOLDER / UNIANIMATE_FILE)
    video = pose_video(9)
    for dim, expect in ((64, "needs a trained pose_proj"), (5120, "never learned to read it")):
        model = random_dit(tiny_config(), vace=False).to(torch.float32)
        model.cfg = model.cfg.with_(dim=dim)  # only pose_proj's shape reads it here
        pose = pose_from_models(model, tmp_path, width=W, height=H, frames_per_chunk=3, device="cpu",
                                dtype=torch.float32)
        chunk = pose.prepare(ChunkRequest(video=video, pose_strength=1.0, pose_source="rendered"),
                             start_frame=0, num_latents=3, num_frames=9, pixel_start=0)
        assert chunk.condition.shape[-1] == dim
        assert any(expect in n for n in pose.notices), pose.notices
