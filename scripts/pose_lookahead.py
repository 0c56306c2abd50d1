"""How far the causal pose embedding is from the exact (whole-clip / wait) one, on the CPU.

A synthetic dancer (DWPose drawing of a figure waving its arms and stepping) is embedded with
UniAnimate-DiT's dwpose_embedding (random weights in the real architecture: 5120 channels; the
numbers describe the architecture's sensitivity, not the trained weights') three ways per chunk:
  exact   the whole-clip embedding (what `pose_lookahead wait` gives, 4 frames later)
  hold    `causal`: the chunk's 4 future frames repeat its newest frame (what the engine does)
  black   the alternative: the 4 future frames are black (no pose)
and the relative L2 error of the pose-dependent part (embedding minus the embedding of a black clip)
of the chunk's last latent frame (the only one that differs) and of the whole chunk is printed,
also after a random 5120 -> 1536 pose_proj.

    python scripts/pose_lookahead.py [--height 128 --width 224 --chunks 6 --out result.json]
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from vacelive.engine.conditioning.pose_render import draw_pose, for_unianimate
from vacelive.engine.pose import PoseEmbedding, PoseTimeline, chunk_pixel_range, window
from vacelive.engine.pose.embedding import FIRST_FRAME_PAD
from vacelive.engine.pose.timeline import whole_clip_input


def dancer(frames: int, h: int, w: int, fps: float = 24.0) -> torch.Tensor:
    """[F, 3, H, W] float 0..1 renderings (UniAnimate channel order) of a moving figure."""
    out = []
    for i in range(frames):
        t = i / fps
        p = np.full((134, 2), -1.0)
        s = np.zeros(134)
        cx = 0.5 + 0.08 * math.sin(2 * math.pi * 0.25 * t)  # sways sideways
        pts = {0: (cx, 0.12), 1: (cx, 0.25), 2: (cx - 0.08, 0.25), 5: (cx + 0.08, 0.25),
               8: (cx - 0.05, 0.55), 11: (cx + 0.05, 0.55), 14: (cx - 0.02, 0.10), 15: (cx + 0.02, 0.10)}
        for side, sh, el, wr in ((-1, 2, 3, 4), (1, 5, 6, 7)):  # arms wave at 1 Hz, opposite phase
            a = math.pi / 2 + side * (0.6 + 0.5 * math.sin(2 * math.pi * 1.0 * t + (side > 0) * math.pi))
            ex, ey = pts[sh][0] + side * 0.12 * abs(math.cos(a)), pts[sh][1] + 0.12 * math.sin(a) - 0.06
            pts[el] = (ex, ey)
            pts[wr] = (ex + side * 0.10 * abs(math.cos(a)), ey - 0.10 * math.sin(a))
        for side, hip, kn, an in ((-1, 8, 9, 10), (1, 11, 12, 13)):  # stepping at 0.5 Hz
            lift = 0.05 * max(0.0, math.sin(2 * math.pi * 0.5 * t + (side > 0) * math.pi))
            pts[kn] = (pts[hip][0] + side * 0.02, 0.72 - lift)
            pts[an] = (pts[hip][0] + side * 0.03, 0.90 - lift)
        for k, xy in pts.items():
            p[k], s[k] = xy, 0.9
        out.append(for_unianimate(draw_pose(p, s, h, w)).copy())
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@torch.no_grad()
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=224)
    ap.add_argument("--chunks", type=int, default=6)
    ap.add_argument("--latents", type=int, default=3, help="latent frames per chunk")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    emb = PoseEmbedding(1536).eval()
    n = args.latents
    total = chunk_pixel_range(0, args.chunks * n)[1]
    video = dancer(total + 8, args.height, args.width)
    whole = emb.embed_video(whole_clip_input(video))
    # the pose-dependent part: random-init convs leave a large constant (bias) part, so errors are
    # measured against the embedding minus that of a black clip (no pose)
    base = emb.embed_video(whole_clip_input(torch.zeros_like(video)))
    rows = {"hold": [], "black": []}
    for mode in rows:
        tl = PoseTimeline(args.height, args.width, n, "cpu")
        for c in range(args.chunks):
            j0 = c * n
            a, b = chunk_pixel_range(j0, n)
            tl.push(a, video[a:b])
            x, skip = tl.window_frames(j0, n, "causal")
            if mode == "black":  # frames past the chunk (pixel >= b, padded q >= b + 3) -> black
                q_s = window(j0, n)[0]
                x = x.clone()
                x[:, :, b + FIRST_FRAME_PAD - q_s:] = 0
            got = emb.embed_video(x)[:, :, skip:skip + n]
            ref = whole[:, :, j0:j0 + n]
            zero = base[:, :, j0:j0 + n]
            rows[mode].append({
                "chunk": c,
                "last_latent_rel_l2": rel(got[:, :, -1] - zero[:, :, -1], ref[:, :, -1] - zero[:, :, -1]),
                "chunk_rel_l2": rel(got - zero, ref - zero),
                "tokens_rel_l2": rel(emb.tokens(got) - emb.tokens(zero), emb.tokens(ref) - emb.tokens(zero)),
                "exact_latents": int(sum(torch.allclose(got[:, :, i], ref[:, :, i], atol=1e-5, rtol=1e-4) for i in range(n))),
            })
    summary = {mode: {k: float(np.mean([r[k] for r in rs[1:]])) for k in ("last_latent_rel_l2", "chunk_rel_l2", "tokens_rel_l2")}
               for mode, rs in rows.items()}
    result = {"height": args.height, "width": args.width, "latents_per_chunk": n, "chunks": args.chunks,
              "weights": "random (PyTorch default init), real architecture", "mean_over_chunks_1_plus": summary,
              "per_chunk": rows}
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
