"""Where each DiT block runs: a contiguous split of the block stack over N pipeline ranks,
balanced by block cost.

Costs are in "main block passes" of the chunk's own tokens: one denoising or clean pass through
a main block attends the chunk's queries to the cached window (sink + recent frames), a VACE hint
block attends the chunk to itself only, so its self-attention is cheaper. `block_costs` turns the
FLOP formula of one block (projections, FFN, self- and cross-attention) into per-layer costs for a
chunk; a layer's cost is its main block's passes plus, when the layer is a VACE injection layer,
the passes of the hint block that feeds it (placed on the same rank: the hint never travels).

Rank 0 also embeds, runs the head, decodes the codec, encodes prompts and runs the conditioner;
`first_extra` (in the same units) is added to its load so it gets fewer blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Placement:
    """Contiguous main-block ranges per rank; VACE block n lives where main layer vace_layers[n] does."""

    ranges: tuple[tuple[int, int], ...]  # rank -> [first layer, end layer)
    vace_layers: tuple[int, ...]

    @property
    def world(self) -> int:
        return len(self.ranges)

    def rank_of_layer(self, layer: int) -> int:
        for r, (a, b) in enumerate(self.ranges):
            if a <= layer < b:
                return r
        raise ValueError(f"layer {layer} is outside the block stack")

    def vace_blocks(self, rank: int) -> tuple[int, ...]:
        """Indices n of the VACE blocks that rank `rank` holds."""
        a, b = self.ranges[rank]
        return tuple(n for n, layer in enumerate(self.vace_layers) if a <= layer < b)

    def describe(self) -> list[dict]:
        return [{"rank": r, "layers": [a, b], "vace_blocks": list(self.vace_blocks(r))}
                for r, (a, b) in enumerate(self.ranges)]


def block_flops(dim: int, ffn_dim: int, text_len: int, q_tokens: int, k_tokens: int) -> float:
    """Multiply-add FLOPs (x2) of one Wan block for q_tokens queries attending k_tokens keys."""
    proj = 2 * q_tokens * (4 * dim * dim + 2 * dim * ffn_dim)  # q, k, v, o + FFN up/down
    cross = 2 * (2 * q_tokens * dim * dim + 2 * text_len * dim * dim)  # q, o; text k, v
    attn = 2 * 2 * q_tokens * dim * (k_tokens + text_len)  # QK^T and PV, self + cross
    return float(proj + cross + attn)


def block_costs(num_layers: int, vace_layers: Sequence[int], *, dim: int, ffn_dim: int, text_len: int,
                chunk_tokens: int, window_tokens: int, steps: int = 4, hint_passes: int | None = None) -> list[float]:
    """Per-layer cost of one chunk, in units of one main-block pass: steps + 1 (clean pass) main
    passes over the window, plus `hint_passes` (default: steps; 1 with hint reuse) hint-block passes
    over the chunk alone on VACE injection layers."""
    main = block_flops(dim, ffn_dim, text_len, chunk_tokens, window_tokens)
    hint = block_flops(dim, ffn_dim, text_len, chunk_tokens, chunk_tokens) / main
    hint_passes = steps if hint_passes is None else hint_passes
    vace = set(vace_layers)
    return [(steps + 1) + (hint_passes * hint if layer in vace else 0.0) for layer in range(num_layers)]


def partition(costs: Sequence[float], world: int, first_extra: float = 0.0) -> tuple[tuple[int, int], ...]:
    """Split layers 0..L-1 into `world` contiguous non-empty ranges minimising the largest rank
    load (rank 0's load includes first_extra). Exact dynamic programme, O(world * L^2)."""
    n = len(costs)
    if world < 1 or world > n:
        raise ValueError(f"cannot split {n} blocks over {world} ranks (1 <= ranks <= blocks)")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[r][i]: minimal max load placing layers [0, i) on ranks 0..r-1; cut[r][i]: start of rank r-1
    best = [[inf] * (n + 1) for _ in range(world + 1)]
    cut = [[0] * (n + 1) for _ in range(world + 1)]
    best[0][0] = 0.0
    for r in range(1, world + 1):
        extra = first_extra if r == 1 else 0.0
        for i in range(r, n + 1):
            for j in range(r - 1, i):
                load = max(best[r - 1][j], prefix[i] - prefix[j] + extra)
                if load < best[r][i] - 1e-12:
                    best[r][i], cut[r][i] = load, j
    ranges, end = [], n
    for r in range(world, 0, -1):
        start = cut[r][end]
        ranges.append((start, end))
        end = start
    return tuple(reversed(ranges))


def plan_placement(cfg, world: int, *, chunk_tokens: int, window_tokens: int, steps: int = 4,
                   hint_passes: int | None = None, first_extra: float = 0.0, vace: bool = True) -> Placement:
    """The balanced Placement of a WanConfig's blocks over `world` ranks."""
    vace_layers = tuple(cfg.vace_layers) if vace else ()
    costs = block_costs(cfg.num_layers, vace_layers, dim=cfg.dim, ffn_dim=cfg.ffn_dim, text_len=cfg.text_len,
                        chunk_tokens=chunk_tokens, window_tokens=window_tokens, steps=steps, hint_passes=hint_passes)
    return Placement(partition(costs, world, first_extra), vace_layers)
