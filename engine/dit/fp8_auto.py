"""`--fp8 auto`: FP8 block Linears only at the token counts where a whole block measured faster.

FP8 (engine.dit.fp8) halves the matmul time but adds a per-token activation quantisation; for
small token counts the extra work can cost more than the matmul saves. What a Linear costs
alone does not predict what it costs inside a compiled block graph (where the quantisation
fuses, or fails to fuse, with its neighbours): timing the Linears one by one chose FP8 at
576x320 and the compiled stream then ran slower than compiled bf16.

So the unit timed is the unit that runs: one main block of the model (engine.dit.block.WanBlock:
`modulations` -> `pre_attention` -> self-attention over the block's own keys -> `post_attention`
with a random 512-token text K/V) at every token count the stream's forwards have (latent frames
x frame tokens), in bf16 and with block Linears (fp8.BLOCK_LINEARS) in FP8. With compiled blocks
every candidate runs through torch.compile of the block's methods with the options the
model's blocks were compiled with (engine.dit.compile; attention stays eager between them, as
in the stream); otherwise eagerly. Three candidates per token count: bf16, every block Linear in
FP8 ("fp8"), and only the two feed-forward Linears in FP8 ("ffn"). The FFN matmuls carry about
two thirds of a block's Linear FLOPs in wide shapes where FP8 pays; the six dim x dim Linears of
the attention are narrow, and there the activation quantisation can cost what the matmul saves
(an H200 at 4,680 tokens: the all-FP8 block tied bf16). The fastest candidate is kept for a token
count when it beat the bf16 block by `margin`; the chosen Linears then run FP8 at exactly those
token counts and bf16 at all others (Fp8Linears(rows_by_shape=...), keyed by Linear shape, so the
"ffn" candidate is only offered when no other block Linear shares an FFN shape). A timing that
fails (a kernel that refuses the shape, a compile error) keeps bf16 for that token count. The
attention over the KV cache is the same in every candidate, so leaving it out shifts all alike.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
from torch import nn

from vacelive.engine.dit.attention import attend
from vacelive.engine.dit.compile import COMPILED_METHODS, allow_many_graphs
from vacelive.engine.dit.fp8 import BLOCK_LINEARS, Fp8Linear, _block_linears
from vacelive.engine.dit.sdpa_select import time_ms

log = logging.getLogger(__name__)
FFN_LINEARS = ("ffn.0", "ffn.2")  # the "ffn" candidate (module docstring)


def representative_block(model: nn.Module) -> nn.Module:
    """The first main block (the VACE blocks share its class and shapes)."""
    blocks = getattr(model, "blocks", None)
    if blocks is not None and len(blocks):
        return blocks[0]
    for module in model.modules():
        if all(hasattr(module, n) for n in COMPILED_METHODS):
            return module
    raise ValueError("the model has no DiT block to time")


class _BlockRun:
    """One block's forward at one token count on random inputs, as the stream calls it, through
    `methods` (the block's eager methods or torch.compile of them)."""

    def __init__(self, model: nn.Module, block: nn.Module, methods: dict, frames: int, grid_hw: tuple[int, int],
                 text_tokens: int):
        cfg = model.cfg
        dev = block.modulation.device
        dtype = block.compute_dtype
        h, w = grid_hw
        self.block, self.methods = block, methods
        self.x = torch.randn(1, frames * h * w, cfg.dim, device=dev)  # fp32 residual stream
        self.e0 = torch.randn(1, frames, 6, cfg.dim, device=dev) * 0.1
        self.q_freqs = model.rope.token_freqs(range(frames), h, w).to(dev)
        heads = (1, text_tokens, cfg.num_heads, cfg.dim // cfg.num_heads)
        self.text_k = torch.randn(heads, device=dev, dtype=dtype)
        self.text_v = torch.randn(heads, device=dev, dtype=dtype)

    def __call__(self) -> torch.Tensor:
        m = self.methods
        mods = m["modulations"](self.e0)
        q, k, v = m["pre_attention"](self.x, mods, self.q_freqs, True)
        y = attend(q, k, v)
        return m["post_attention"](self.x, y, mods, self.text_k, self.text_v)


def choose_fp8_rows(model: nn.Module, frames: Iterable[int], grid_hw: tuple[int, int], *,
                    compile_options: dict | None = None, reps: int = 10, rounds: int = 3, margin: float = 0.03,
                    timer=None, names=BLOCK_LINEARS, text_tokens: int | None = None
                    ) -> tuple[dict[tuple[int, int], frozenset[int]], list[dict[str, Any]]]:
    """Time one block in bf16, all-FP8 and FFN-only FP8 for every latent frame count in `frames` on
    a token grid `grid_hw` (h, w after patching); returns ({(in, out): token counts where that
    Linear shape runs FP8} for every block Linear shape of the model, one report row per token
    count with `bf16_ms`, `fp8_ms`, `ffn_ms` and the `choice`: "bf16", "fp8" or "ffn").
    compile_options: None times the eager block; a dict times torch.compile(method, **options)
    of its COMPILED_METHODS (the options the model's blocks were compiled with).
    timer(fn, reps, device, name) -> ms with name "<candidate>:block:<tokens>", candidate bf16,
    fp8 or ffn (default sdpa_select.time_ms; tests inject one). The candidates are timed in
    `rounds` alternating rounds and each keeps its fastest: GPU clocks ramp up from idle and a busy
    host adds noise, which one timing per candidate turned into wrong choices on an H200 host."""
    timer = timer or time_ms
    block = representative_block(model)
    h, w = grid_hw
    text_tokens = text_tokens or getattr(model.cfg, "text_len", 512)
    compiled = compile_options is not None
    shape = lambda lin: (lin.in_features, lin.out_features)  # noqa: E731
    shapes = sorted({shape(lin) for _, _, lin in _block_linears(model, names)})
    ffn_names = [n for n in names if n in FFN_LINEARS]
    ffn_shapes = {shape(lin) for _, _, lin in _block_linears(model, ffn_names)}
    other_shapes = {shape(lin) for _, _, lin in _block_linears(model, [n for n in names if n not in FFN_LINEARS])}
    named = [(n, entry) for n in names for entry in _block_linears(block, (n,))]
    candidates = {"fp8": {n for n, _ in named}}
    if ffn_names and not ffn_shapes & other_shapes:
        candidates["ffn"] = set(ffn_names)
    eager = {n: getattr(type(block), n).__get__(block, type(block)) for n in COMPILED_METHODS}
    report: list[dict[str, Any]] = []
    wins: dict[str, set[int]] = {c: set() for c in candidates}
    try:
        fp8_mods = [Fp8Linear(lin) for _, (_, _, lin) in named]
    except (ValueError, RuntimeError) as exc:  # a Linear FP8 cannot run: bf16 everywhere
        log.warning("fp8 auto: the block Linears cannot run in FP8 (%s); bf16", exc)
        return {s: frozenset() for s in shapes}, report
    methods = eager
    if compiled:
        # The model's blocks compile the same code objects; graphs made here are ordinary cache
        # entries of those functions (the start-up warm-up compiles and seals the final set).
        allow_many_graphs()
        methods = {n: torch.compile(fn, **compile_options) for n, fn in eager.items()}

    def use_fp8(which: set[str]) -> None:
        for (name, (parent, attr, lin)), fp8 in zip(named, fp8_mods):
            setattr(parent, attr, fp8 if name in which else lin)

    with torch.no_grad():
        for f in sorted(set(int(n) for n in frames)):
            rows = f * h * w
            row: dict[str, Any] = {"unit": "block", "frames": f, "rows": rows, "compiled": compiled,
                                   "bf16_ms": None, "fp8_ms": None, "ffn_ms": None, "choice": "bf16", "fp8": False}
            report.append(row)
            try:
                run = _BlockRun(model, block, methods, f, grid_hw, text_tokens)
                for _ in range(max(1, rounds)):
                    for cand, which in (("bf16", set()), *candidates.items()):
                        use_fp8(which)
                        try:
                            ms = timer(run, reps, run.x.device, f"{cand}:block:{rows}")
                        finally:
                            use_fp8(set())
                        key = f"{cand}_ms"
                        row[key] = round(min(ms, row[key] or ms), 4)
            except Exception as exc:  # a kernel that refuses the shape, a compile error: bf16 here
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                log.warning("fp8 auto: timing the block at %d tokens failed (%s); bf16 there", rows, row["error"])
                continue
            best = min(candidates, key=lambda c: row[f"{c}_ms"])
            if row[f"{best}_ms"] < row["bf16_ms"] * (1 - margin):
                row["choice"], row["fp8"] = best, True
                wins[best].add(rows)
    log.info("fp8 auto: %s block timings (bf16 / all FP8 / FFN FP8 ms): %s", "compiled" if compiled else "eager",
             ", ".join(f"{r['rows']}: {r['bf16_ms']} / {r['fp8_ms']} / {r['ffn_ms']} -> {r['choice']}" for r in report))
    every, ffn_only = frozenset(wins["fp8"]), frozenset(wins.get("ffn", ()))
    return {s: every | ffn_only if s in ffn_shapes else every for s in shapes}, report


__all__ = ["FFN_LINEARS", "choose_fp8_rows", "representative_block"]
