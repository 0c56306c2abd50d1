"""Self-attention kernel shapes of the DiT chunk forward: is splitting the keys worth it?

Hypothesis: one chunk's self-attention at 832x480 has 4680 queries x 12 heads; with
cuDNN's 64/128-query tiles that is 444-888 tiles on 132 SMs, i.e. a fractional last wave. Running
the keys in S slices as extra batch entries (same queries) multiplies the tiles by S and shortens
each; the slices are merged exactly with their log-sum-exp: out = sum_s o_s * exp(lse_s - lse).
This script times plain SDPA against S = 2, 3, 4 slices per backend and checks the merge against
plain SDPA (relative L2 error) before timing.

    python scripts/bench_attention.py            # CUDA, bf16
    python scripts/bench_attention.py --smoke    # CPU: merge correctness only (math backend)
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vacelive.engine.dit.fp8 import relative_error  # noqa: E402

SHAPES = {  # name: (queries, keys)
    "832x480 main (3 of 12 frames)": (4680, 18720),
    "832x480 clean pass, window filling (3 of 6)": (4680, 9360),
    "576x320 main (3 of 12 frames)": (2160, 8640),
    "832x480 VACE hint block": (4680, 4680),
}


def attention_lse(q, k, v, backend: str):
    """(out [B,H,L,D], lse [B,H,L] fp32) from a fused kernel that reports its log-sum-exp."""
    if backend == "cudnn":
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True)[:2]
    elif backend == "flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
    elif backend == "efficient":
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)[:2]
        lse = lse[..., : q.shape[2]]  # padded to a multiple of 32
    else:  # math reference (CPU smoke)
        s = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        lse = torch.logsumexp(s, -1)
        out = (torch.softmax(s, -1) @ v.float()).to(q.dtype)
    return out, lse.float()


def split_attention(q, k, v, slices: int, backend: str):
    """Keys in `slices` batch entries (queries repeated), merged exactly by log-sum-exp."""
    b, h, n, d = q.shape
    m = k.shape[2]
    if m % slices:
        raise ValueError(f"{m} keys do not split into {slices}")
    ks = k.view(b, h, slices, m // slices, d).transpose(1, 2).reshape(b * slices, h, m // slices, d)
    vs = v.view(b, h, slices, m // slices, d).transpose(1, 2).reshape(b * slices, h, m // slices, d)
    qs = q.unsqueeze(1).expand(b, slices, h, n, d).reshape(b * slices, h, n, d)
    out, lse = attention_lse(qs, ks, vs, backend)
    out, lse = out.view(b, slices, h, n, d), lse.view(b, slices, h, n)
    w = torch.softmax(lse, dim=1)  # exp(lse_s - logsumexp_s lse_s)
    return (out.float() * w.unsqueeze(-1)).sum(1).to(q.dtype)


def time_ms(fn, iters=30, warmup=5) -> float:
    for _ in range(warmup):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for a, b in events:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in events)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--backends", default="cudnn,flash,efficient")
    p.add_argument("--slices", default="2,3,4")
    args = p.parse_args(argv)
    slices = [int(s) for s in args.slices.split(",")]
    if args.smoke:
        q, k, v = (torch.randn(1, 2, n, 32) for n in (48, 96, 96))
        ref = F.scaled_dot_product_attention(q, k, v)
        for s in slices:
            err = relative_error(split_attention(q, k, v, s, "math"), ref)
            print(f"smoke: {s} slices, rel err {err:.2e}")
            if err > 1e-5:
                return 1
        return 0
    dev, dt = "cuda", torch.bfloat16
    heads, d = 12, 128
    flops = lambda n, m: 4 * n * m * heads * d  # noqa: E731
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | bf16 | 12 heads x 128")
    print(f"{'shape':>44} {'backend':>9} {'variant':>9} {'ms':>7} {'TFLOP/s':>8} {'rel err':>8}")
    for name, (n, m) in SHAPES.items():
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(1, heads, L, d, device=dev, dtype=dt, generator=g) for L in (n, m, m))
        ref = F.scaled_dot_product_attention(q, k, v)
        for backend in args.backends.split(","):
            variants = [("plain", lambda: attention_lse(q, k, v, backend)[0])]
            variants += [(f"split{s}", (lambda s=s: split_attention(q, k, v, s, backend))) for s in slices if m % s == 0]
            for label, fn in variants:
                try:
                    err = relative_error(fn(), ref)
                    ms = time_ms(fn)
                    print(f"{name:>44} {backend:>9} {label:>9} {ms:7.3f} {flops(n, m) / ms / 1e9:8.0f} {err:8.1e}", flush=True)
                except Exception as exc:
                    print(f"{name:>44} {backend:>9} {label:>9}  ERROR {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
