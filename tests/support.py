"""Small helpers that several engine test modules share: a tolerance check, the hand-written key
manifests, the reference KV-window mask, a tiny VACE-wrapped model, and a hint-call counter."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from vacelive.engine.config import tiny_config
from vacelive.engine.dit import CausalWanModel, VaceWanModel

MANIFESTS = Path(__file__).parent / "manifests"
TOL = 2e-5
CHUNK = 3  # latent frames per chunk


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    """max |a - b| <= tol * max(1, max |b|); the shapes must match."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


def read_manifest(name: str) -> dict[str, tuple[int, ...]]:
    """{key: shape} of tests/manifests/NAME: one `key<TAB>shape` a line, the shape written
    `(96, 3, 3)` or `96,3,3`; `{a..b}` in a key stands for every integer a..b; `#` starts a comment
    line. A key listed twice is an error in the manifest."""
    out = {}
    for line in (MANIFESTS / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        dims = tuple(int(s) for s in shape.strip().strip("()").split(",") if s.strip())
        m = re.search(r"\{(\d+)\.\.(\d+)\}", key)
        keys = [key[: m.start()] + str(i) + key[m.end():] for i in range(int(m[1]), int(m[2]) + 1)] if m else [key]
        for k in keys:
            assert k not in out, f"duplicate manifest key {k}"
            out[k] = dims
    return out


def windowed_mask(frames: int, window: int, sink: int, frame_tokens: int, chunk: int = CHUNK) -> torch.Tensor:
    """Reference mask written from the semantics: a query in the chunk ending at `end` sees the
    sink frames and the most recent window - sink frames ending at `end` (and nothing later)."""
    allow = torch.zeros(frames, frames, dtype=torch.bool)
    for qf in range(frames):
        end = (qf // chunk + 1) * chunk
        for kf in range(frames):
            allow[qf, kf] = kf < end and (kf < sink or kf >= end - (window - sink))
    return allow.repeat_interleave(frame_tokens, 0).repeat_interleave(frame_tokens, 1)


def vace_pair(seed: int = 0, random_vace: bool = True, layers: int = 4,
              vace_layers: tuple[int, ...] = (0, 2)) -> tuple[CausalWanModel, VaceWanModel]:
    """(base, VACE wrapper over it) of a tiny config, seeded. With `random_vace` the VACE
    before/after projections get random weights: upstream zero-inits them, so with zeros the
    wrapper would equal the base and prove nothing (real checkpoints are not zero)."""
    torch.manual_seed(seed)
    base = CausalWanModel(tiny_config(num_layers=layers, vace_layers=vace_layers)).eval()
    wrapped = VaceWanModel(base).eval()
    if random_vace:
        with torch.no_grad():
            for n, p in wrapped.named_parameters():
                if "_proj" in n:
                    p.normal_(0, 0.2)
    return base, wrapped


def count_hints(gen) -> dict[str, int]:
    """Count the VACE hint computations of a StreamGenerator: the returned {"n": calls}."""
    counter = {"n": 0}
    real = gen.model.compute_hints

    def counting(*a, **k):
        counter["n"] += 1
        return real(*a, **k)

    gen.model.compute_hints = counting
    return counter
