"""`--fp8 auto`: FP8 only for the Linear shapes where it measured faster than bf16.

FP8 (engine.dit.fp8) halves the matmul time but adds a per-token activation quantisation; for
small token counts (576x320: 2160 tokens per 3-frame chunk) the extra passes can cost more than
the matmul saves (the whole stream measured 12-15 % slower with FP8 there on H200s). So at
start-up every distinct block Linear shape (in, out) is timed at every row count (tokens per
call) the stream can reach, bf16 against FP8, on random inputs of that size; FP8 is kept only
for the (shape, row count) pairs where it won by `margin`, every other call runs the bf16
weight as before. When the blocks are compiled, both candidates are timed compiled behind a
producer kernel (fp32 -> bf16 cast), as in the blocks, where the activation quantisation fuses
into the kernel that makes the Linear's input; otherwise eagerly (where FP8's separate
quantisation passes rarely pay: an H200 at 832x480 measured FP8 slower for every shape).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
from torch import nn

from vacelive.engine.dit.fp8 import BLOCK_LINEARS, Fp8Linear, _block_linears
from vacelive.engine.dit.sdpa_select import time_ms

log = logging.getLogger(__name__)


def stream_row_counts(frame_tokens: int, max_frames: int) -> list[int]:
    """Row counts of the block Linears of a stream: frame_tokens x every frame count from 1 to
    max_frames (chunks, first chunks, re-caches, VACE hint blocks with reference frames)."""
    return [frame_tokens * n for n in range(1, max_frames + 1)]


def choose_fp8_rows(model: nn.Module, rows: Iterable[int], *, compiled: bool = False, reps: int = 5,
                    margin: float = 0.02, timer=time_ms, names=BLOCK_LINEARS
                    ) -> tuple[dict[tuple[int, int], frozenset[int]], list[dict[str, Any]]]:
    """({(in, out): row counts where FP8 was faster by `margin`}, one report row per timing).
    timer(fn, reps, device, name) -> ms, name "bf16:<in>x<out>:<rows>" or "fp8:..." (tests inject one)."""
    shapes: dict[tuple[int, int], nn.Linear] = {}
    for _, _, linear in _block_linears(model, names):
        shapes.setdefault((linear.in_features, linear.out_features), linear)
    chosen: dict[tuple[int, int], frozenset[int]] = {}
    report: list[dict[str, Any]] = []
    rows = sorted(set(int(r) for r in rows))
    with torch.no_grad():
        for shape, linear in shapes.items():
            fp8 = Fp8Linear(linear)
            dtype = linear.weight.dtype

            def bf16_eager(x):
                return nn.functional.linear(x, linear.weight, linear.bias)

            bf16_call, fp8_call = bf16_eager, fp8
            if compiled:
                # In the compiled blocks the activation quantisation fuses into the kernel that
                # makes the Linear's input (modulation / GELU: fp32 math cast to bf16), so both
                # candidates are timed compiled with such a producer in front.
                try:
                    bf16_call = torch.compile(lambda xf: bf16_eager(xf.to(dtype)), dynamic=True)
                    fp8_call = torch.compile(lambda xf: fp8(xf.to(dtype)), dynamic=True)
                except Exception as exc:  # no compiler here: eager candidates
                    log.warning("fp8 auto: cannot compile the candidates (%s); timing them eagerly", exc)
                    bf16_call, fp8_call = bf16_eager, fp8
            wins = set()
            for m in rows:
                in_dtype = torch.float32 if fp8_call is not fp8 else dtype
                x = torch.randn(m, shape[0], device=linear.weight.device, dtype=in_dtype)
                try:
                    tag = f"{shape[0]}x{shape[1]}:{m}"
                    try:
                        t_bf16 = timer(lambda: bf16_call(x), reps, x.device, f"bf16:{tag}")
                        t_fp8 = timer(lambda: fp8_call(x), reps, x.device, f"fp8:{tag}")
                    except Exception as exc:
                        if fp8_call is fp8:
                            raise
                        log.warning("fp8 auto: the compiled candidates failed (%s: %s); timing them eagerly",
                                    type(exc).__name__, exc)
                        bf16_call, fp8_call = bf16_eager, fp8
                        x = x.to(dtype)
                        t_bf16 = timer(lambda: bf16_call(x), reps, x.device, f"bf16:{tag}")
                        t_fp8 = timer(lambda: fp8_call(x), reps, x.device, f"fp8:{tag}")
                except RuntimeError as exc:  # FP8 kernel refuses the shape: bf16
                    log.warning("fp8 auto: %s x %s failed in FP8 (%s); bf16", m, shape, exc)
                    continue
                use = t_fp8 < t_bf16 * (1 - margin)
                if use:
                    wins.add(m)
                report.append({"in": shape[0], "out": shape[1], "rows": m, "bf16_ms": round(t_bf16, 4),
                               "fp8_ms": round(t_fp8, 4), "fp8": use})
            chosen[shape] = frozenset(wins)
            del fp8, fp8_call, bf16_call
    for shape, wins in chosen.items():
        log.info("fp8 auto: Linear %d->%d runs FP8 at %s of %d row counts", shape[0], shape[1],
                 sorted(wins) if wins else "none", len(rows))
    return chosen, report


__all__ = ["choose_fp8_rows", "stream_row_counts"]
