"""Building the generator's PoseConditioner: random weights (tests, demo, benchmarks) or the
released UniAnimate-DiT checkpoint from the models folder.

Models-folder layout (the `<repo name>/<path in repo>` rule of docs/models.md):
    <models>/UniAnimate-DiT/UniAnimate-Wan2.1-14B-Lora-12000.ckpt   (Hugging Face ZheWang123/UniAnimate-DiT)
    <models>/UniAnimate-DiT/pose_proj_<dim>.safetensors               (a pose_proj you trained; none is public)
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from vacelive.engine.pose.conditioner import PoseConditioner
from vacelive.engine.pose.embedding import PoseEmbedding, load_pose_embedding, load_pose_proj

log = logging.getLogger(__name__)

UNIANIMATE_REPO = "ZheWang123/UniAnimate-DiT"
UNIANIMATE_FILE = "UniAnimate-Wan2.1-14B-Lora-12000.ckpt"
UNIANIMATE_FOLDER = "UniAnimate-DiT"


def pose_proj_file(dim: int) -> str:
    return f"pose_proj_{dim}.safetensors"


def random_pose(model, *, width: int, height: int, frames_per_chunk: int, device, dtype, seed: int = 0) -> PoseConditioner:
    """Random pose CNNs (PyTorch default init) and pose_proj (Xavier, like the Self-Forcing port)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        emb = PoseEmbedding(model.cfg.dim)
    emb = emb.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return PoseConditioner(emb, width=width, height=height, frames_per_chunk=frames_per_chunk,
                           device=device, dtype=dtype, warn_untrained=False)


def pose_from_models(model, models: Path | str, *, width: int, height: int, frames_per_chunk: int, device, dtype,
                     weights: str | None = None, proj: str | None = None) -> PoseConditioner | None:
    """The UniAnimate pose CNNs from `weights` (default: the models folder's released file) and, for
    a DiT narrower than 5120, pose_proj from `proj` (default: `pose_proj_<dim>.safetensors` beside
    it, when present). None when no UniAnimate file is there (pose tokens then report that)."""
    folder = Path(models) / UNIANIMATE_FOLDER
    path = Path(weights) if weights else folder / UNIANIMATE_FILE
    if not path.is_file():
        if weights:
            raise FileNotFoundError(f"pose weights not found: {path}")
        log.info("no UniAnimate-DiT pose weights at %s: pose tokens are off", path)
        return None
    emb = PoseEmbedding(model.cfg.dim)
    n = load_pose_embedding(emb, path)
    log.info("pose embedding: %d tensors from %s", n, path)
    proj_path = Path(proj) if proj else folder / pose_proj_file(model.cfg.dim)
    if emb.needs_proj:
        if proj_path.is_file():
            load_pose_proj(emb, proj_path)
            log.info("pose_proj %d -> %d from %s", 5120, model.cfg.dim, proj_path)
        elif proj:
            raise FileNotFoundError(f"pose_proj weights not found: {proj_path}")
        else:
            log.warning("no trained pose_proj (5120 -> %d) at %s: pose tokens would be random features",
                        model.cfg.dim, proj_path)
    emb = emb.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return PoseConditioner(emb, width=width, height=height, frames_per_chunk=frames_per_chunk, device=device, dtype=dtype)
