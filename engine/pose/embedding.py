"""UniAnimate-DiT's pose embeddings, and `pose_proj` for DiTs narrower than 5120.

The two CNNs are exactly those of ali-vilab/UniAnimate-DiT (`WanUniAnimateVideoPipeline.
fetch_models` in diffsynth/pipelines/wan_video.py, same layers in
examples/unianimate_wan/train_unianimate_wan.py), concat_dim = 4 so the hidden width is 16, SiLU
after every conv but the last, no normalisation:

  dwpose_embedding (3D, input the rendered pose video [B, 3, F', H, W] in 0..1)
    0 Conv3d 3->16 k3 s1 p1 | 2, 4 Conv3d 16->16 k3 s1 p1 | 6 Conv3d 16->16 k3 s(1,2,2) p1
    8, 10 Conv3d 16->16 k3 s2 p1 | 12 Conv3d 16->5120 k(1,2,2) s(1,2,2)
    -> [B, 5120, F'/4, H/16, W/16]: the Wan token grid (VAE /8, patch /2).
  randomref_embedding_pose (2D, input one rendered reference pose [B, 3, H, W] in 0..1)
    0, 2, 4 Conv2d 3/16->16 k3 s1 p1 | 6, 8 Conv2d 16->16 k3 s2 p1 | 10 Conv2d 16->20 k3 s2 p1
    -> [B, 20, H/8, W/8]: the VAE latent grid; UniAnimate adds it to the I2V `y` (4 mask + 16
    latent channels), which a text-to-video DiT does not have.

The released file (`UniAnimate-Wan2.1-14B-Lora-12000.ckpt`, Hugging Face ZheWang123/UniAnimate-DiT)
is a flat dict holding the 14B LoRA and both CNNs; UniAnimate picks the CNN tensors by substring
and splits the key on "dwpose_embedding." / "randomref_embedding_pose." (strict load). We do the
same through the one checkpoint reader.

`pose_proj`: Linear(5120 -> dim) when the DiT is narrower (1.3B: 1536), identity when dim is
5120 (14B), as in the Self-Forcing pose port (alazarteka/Self-Forcing wan/modules/causal_model.py).
No trained 1.3B pose_proj is public; it loads from its own file (keys `pose_proj.weight`,
`pose_proj.bias`, or bare `weight`/`bias`).
"""
from __future__ import annotations

import os

import torch
from torch import nn

POSE_CHANNELS = 5120  # dwpose_embedding output width (= Wan 14B dim)
REF_CHANNELS = 20  # randomref_embedding_pose output width (= I2V `y` channels)
HIDDEN = 16  # concat_dim * 4
DWPOSE_PREFIX = "dwpose_embedding."
RANDOMREF_PREFIX = "randomref_embedding_pose."
POSE_PROJ_PREFIX = "pose_proj."
# Pose-video frames (pixel frames) per latent frame, and the UniAnimate first-frame padding:
# the first pose frame is repeated 3 extra times so 1 + 4k frames give 1 + k latent frames.
TEMPORAL_STRIDE = 4
FIRST_FRAME_PAD = 3


def dwpose_embedding() -> nn.Sequential:
    c = HIDDEN
    return nn.Sequential(
        nn.Conv3d(3, c, (3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1)), nn.SiLU(),
        nn.Conv3d(c, c, (3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1)), nn.SiLU(),
        nn.Conv3d(c, c, (3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1)), nn.SiLU(),
        nn.Conv3d(c, c, (3, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1)), nn.SiLU(),
        nn.Conv3d(c, c, 3, stride=(2, 2, 2), padding=1), nn.SiLU(),
        nn.Conv3d(c, c, 3, stride=(2, 2, 2), padding=1), nn.SiLU(),
        nn.Conv3d(c, POSE_CHANNELS, (1, 2, 2), stride=(1, 2, 2), padding=0),
    )


def randomref_embedding_pose() -> nn.Sequential:
    c = HIDDEN
    return nn.Sequential(
        nn.Conv2d(3, c, 3, stride=1, padding=1), nn.SiLU(),
        nn.Conv2d(c, c, 3, stride=1, padding=1), nn.SiLU(),
        nn.Conv2d(c, c, 3, stride=1, padding=1), nn.SiLU(),
        nn.Conv2d(c, c, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(c, c, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(c, REF_CHANNELS, 3, stride=2, padding=1),
    )


class PoseEmbedding(nn.Module):
    """dwpose_embedding + randomref_embedding_pose + pose_proj for a DiT of width `dim`.

    state_dict keys: `dwpose_embedding.{0,2,...,12}.{weight,bias}`, `randomref_embedding_pose.
    {0,2,...,10}.{weight,bias}` (the public names) and, for dim != 5120, `pose_proj.{weight,bias}`.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.dwpose_embedding = dwpose_embedding()
        self.randomref_embedding_pose = randomref_embedding_pose()
        if dim == POSE_CHANNELS:
            self.pose_proj: nn.Module = nn.Identity()
        else:
            self.pose_proj = nn.Linear(POSE_CHANNELS, dim)
            nn.init.xavier_uniform_(self.pose_proj.weight)  # the port's init_weights(); untrained
            nn.init.zeros_(self.pose_proj.bias)
        self.pose_proj_trained = dim == POSE_CHANNELS  # an identity needs no training

    @property
    def needs_proj(self) -> bool:
        return isinstance(self.pose_proj, nn.Linear)

    def embed_video(self, pose: torch.Tensor) -> torch.Tensor:
        """Rendered pose frames [B, 3, F', H, W] in 0..1 -> [B, 5120, ceil-ish(F'/4), H/16, W/16]
        (the raw CNN; frame padding is the caller's, see PoseTimeline)."""
        w = self.dwpose_embedding[0].weight
        return self.dwpose_embedding(pose.to(device=w.device, dtype=w.dtype))

    def tokens(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, 5120, f, h, w] -> [B, f*h*w, dim] in (f, h, w) token order, through pose_proj."""
        t = emb.flatten(2).transpose(1, 2)
        if self.needs_proj:
            t = self.pose_proj(t.to(self.pose_proj.weight.dtype))
        return t

    def embed_reference(self, ref_pose: torch.Tensor) -> torch.Tensor:
        """One rendered reference pose [B, 3, H, W] in 0..1 -> [B, 20, 1, H/8, W/8] (what
        UniAnimate adds to the I2V `y`)."""
        w = self.randomref_embedding_pose[0].weight
        return self.randomref_embedding_pose(ref_pose.to(device=w.device, dtype=w.dtype)).unsqueeze(2)


# ---- loading --------------------------------------------------------------------------------------
def _select(keys, marker: str) -> dict[str, str]:
    """{sub-key after `marker`: file key} for the keys containing `marker` (UniAnimate's rule)."""
    return {k.split(marker, 1)[1]: k for k in keys if marker in k}


def _load_into(module: nn.Module, path: str, reader, picked: dict[str, str], what: str) -> int:
    from vacelive.engine.checkpoint import CheckpointError, first_keys

    expected = module.state_dict()
    missing = sorted(set(expected) - set(picked))
    unexpected = sorted(set(picked) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: {what} keys do not match UniAnimate-DiT's layers "
                              f"(missing: {first_keys(missing) or 'none'}; unexpected: {first_keys(unexpected) or 'none'})")
    tensors = {}
    for sub, key in picked.items():
        shape = reader.shape(key)
        if shape != tuple(expected[sub].shape):
            raise CheckpointError(f"{path}: {key} has shape {shape}, {what}.{sub} needs {tuple(expected[sub].shape)}")
        ref = expected[sub]
        tensors[sub] = reader.tensor(key).to(device=ref.device, dtype=ref.dtype)
    module.load_state_dict(tensors, strict=True)
    return len(tensors)


def load_pose_embedding(emb: PoseEmbedding, path: str | os.PathLike) -> int:
    """dwpose_embedding and randomref_embedding_pose from a UniAnimate-DiT checkpoint (keys picked
    by substring, as UniAnimate does; the file's LoRA keys are skipped). Returns tensors loaded."""
    from vacelive.engine.checkpoint import CheckpointError, CheckpointReader

    path = str(path)
    with CheckpointReader(path, prefer=()) as ck:
        keys = ck.keys()
        dw, ref = _select(keys, DWPOSE_PREFIX), _select(keys, RANDOMREF_PREFIX)
        if not dw:
            raise CheckpointError(f"{path}: no {DWPOSE_PREFIX}* keys (is this the UniAnimate-DiT checkpoint?)")
        n = _load_into(emb.dwpose_embedding, path, ck, dw, "dwpose_embedding")
        if ref:
            n += _load_into(emb.randomref_embedding_pose, path, ck, ref, "randomref_embedding_pose")
    return n


def load_pose_proj(emb: PoseEmbedding, path: str | os.PathLike) -> int:
    """A trained pose_proj (5120 -> dim) from its own file: keys `pose_proj.weight/bias` (any
    prefix before `pose_proj.`) or bare `weight`/`bias`."""
    from vacelive.engine.checkpoint import CheckpointError, CheckpointReader

    path = str(path)
    if not emb.needs_proj:
        raise CheckpointError(f"{path}: this DiT is {emb.dim} wide, the pose embedding needs no projection")
    with CheckpointReader(path, prefer=()) as ck:
        picked = _select(ck.keys(), POSE_PROJ_PREFIX) or {k: k for k in ck.keys() if k in ("weight", "bias")}
        n = _load_into(emb.pose_proj, path, ck, picked, "pose_proj")
    emb.pose_proj_trained = True
    return n
