"""`--sdpa auto`: the attention kernel picked per attention shape by measurement.

Which SDPA kernel is fastest depends on the shape: on an H200 (bf16, 12 heads x 128, no mask)
cuDNN ran 487-640 TFLOP/s at the DiT's chunk and re-cache shapes where PyTorch's own default
order (flash first) ran ~308, and the ranking can change with the query/key counts, the GPU
and the PyTorch/cuDNN versions. So with "auto" every new attention shape (query shape, key
shape, dtype, mask or not) is timed once on its real inputs with each candidate kernel of
`CANDIDATES` that accepts it, the fastest is kept for that shape (logged, and listed by
`SdpaSelector.describe()` for the start-up log and the engine's describe()), and every later
call of that shape runs it. The stream's warm-up runs every shape it can reach, so the timing
happens at start-up; a shape met later is timed on first use (a few milliseconds, once).

Where it does not apply: off CUDA (PyTorch's default kernel choice, nothing timed), and inside a
torch.compile trace (the compiled cross-attention takes the kernel of the enclosing context).
Every candidate computes the same exact attention; they differ in rounding only.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# SDPBackend member names tried by "auto", in the order ties are broken.
CANDIDATES = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")
_SHORT = {"CUDNN_ATTENTION": "cudnn", "FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "efficient",
          "MATH": "math", None: "default"}


def _is_compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except Exception:
        return False


def time_ms(fn, reps: int, device: torch.device, name: str = "") -> float:
    """Median of `reps` timings of fn() after one untimed call (CUDA events on CUDA)."""
    times = sorted(time_samples(fn, reps, device))
    return times[len(times) // 2]


def time_samples(fn, reps: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Milliseconds of each of `reps` calls of fn() after `warmup` untimed ones (CUDA events on
    CUDA, so only fn's own GPU work is timed)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


class SdpaSelector:
    """Per-shape kernel choice (see module docstring). `choices` maps a shape key to the SDPBackend
    name chosen (None: none of the candidates ran it; PyTorch's default then)."""

    def __init__(self, candidates=CANDIDATES, reps: int = 5, devices=("cuda",), timer=time_ms, tie: float = 0.03):
        """devices: device types on which kernels are measured (elsewhere PyTorch's default runs);
        timer(fn, reps, device, kernel name) -> ms (tests inject one)."""
        self.candidates = tuple(candidates)
        self.reps = reps
        self.devices, self.timer, self.tie = tuple(devices), timer, tie
        self.choices: dict[tuple, str | None] = {}
        self.timings_ms: dict[tuple, dict[str, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(q: torch.Tensor, k: torch.Tensor, mask) -> tuple:
        return (tuple(q.shape), tuple(k.shape), q.dtype, mask is not None, q.device.index)

    def attention(self, q, k, v, mask=None) -> torch.Tensor:
        """scaled_dot_product_attention([B, H, L, D] x3) with this shape's chosen kernel."""
        if q.device.type not in self.devices or _is_compiling():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        key = self.key(q, k, mask)
        if key not in self.choices:
            with self._lock:
                if key not in self.choices:
                    self._measure(key, q, k, v, mask)
        name = self.choices[key]
        if name is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([getattr(SDPBackend, name)]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def _measure(self, key, q, k, v, mask) -> None:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        times: dict[str, float] = {}
        for name in self.candidates:
            backend = getattr(SDPBackend, name, None)
            if backend is None:
                continue

            def run(backend=backend):
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            try:
                times[name] = self.timer(run, self.reps, q.device, name)
            except RuntimeError:  # this kernel does not take the shape/dtype/mask
                continue
        best = min(times, key=times.get) if times else None
        # A near tie (timing noise) keeps the earlier candidate: cuDNN, PyTorch's own first choice
        # on Hopper, unless another kernel is clearly faster.
        for name in self.candidates:
            if best is not None and name in times and times[name] <= times[best] * (1 + self.tie):
                best = name
                break
        self.choices[key] = best
        self.timings_ms[key] = times
        qs, ks, dtype, masked, _ = key
        log.info("sdpa auto: q %s k %s %s%s -> %s (%s)", qs, ks, str(dtype).removeprefix("torch."),
                 " masked" if masked else "", _SHORT[best],
                 ", ".join(f"{_SHORT[n]} {t:.3f} ms" for n, t in sorted(times.items(), key=lambda x: x[1])))

    def describe(self) -> list[dict[str, Any]]:
        """One row per measured shape: shapes, the kernel chosen and every candidate's time."""
        rows = []
        for key, best in self.choices.items():
            qs, ks, dtype, masked, _ = key
            rows.append({"q": list(qs), "k": list(ks), "dtype": str(dtype).removeprefix("torch."), "masked": masked,
                         "kernel": _SHORT[best],
                         "ms": {_SHORT[n]: round(t, 4) for n, t in self.timings_ms.get(key, {}).items()}})
        return rows


# The selector of the running stream: attention.attend routes through it while `active` is set.
_state = threading.local()


def active() -> SdpaSelector | None:
    return getattr(_state, "selector", None)


class use_selector:
    """Context: attention.attend picks kernels through `selector` on this thread (None: off)."""

    def __init__(self, selector: SdpaSelector | None):
        self.selector = selector

    def __enter__(self):
        self._saved = active()
        _state.selector = self.selector
        return self.selector

    def __exit__(self, *exc) -> None:
        _state.selector = self._saved


__all__ = ["CANDIDATES", "SdpaSelector", "active", "use_selector"]
