"""Small per-stream pieces of the StreamGenerator: the clean-latent history used by the KV
re-cache, the per-stage clock, and the conversion of decoded frames to RGBA uint8."""
from __future__ import annotations

import time

import torch

from vacelive.engine.dit.rope import position_runs


class LatentHistory:
    """The last `capacity` clean latent frames of the stream, in a preallocated ring
    [B, C, capacity, h, w] (frame f lives in slot f % capacity). Never grows."""

    def __init__(self, capacity: int, batch: int, channels: int, latent_hw: tuple[int, int], *, device, dtype=torch.float32):
        self.capacity = capacity
        self.buffer = torch.zeros(batch, channels, capacity, *latent_hw, device=device, dtype=dtype)
        self.head = 0  # one past the newest stored frame (stream frame index)

    def reset(self) -> None:
        self.head = 0  # old contents are unreachable: only frames in [head - capacity, head) are read

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def _runs(self, start: int, count: int) -> list[tuple[int, int, int]]:
        """(slot_a, slot_b, offset) runs covering frames start..start+count-1."""
        slots = [(start + i) % self.capacity for i in range(count)]
        out, offset = [], 0
        for a, b in position_runs(slots):
            out.append((a, b, offset))
            offset += b - a
        return out

    def write(self, start: int, latents: torch.Tensor) -> None:
        """Store latents [B, C, F, h, w] as frames start..start+F-1. start is `head`, or earlier
        when a chunk rewrites the previous chunk's last frames (RewardForcing's V2V overlap)."""
        if not (self.head - self.capacity < start <= self.head) and start != self.head:
            raise ValueError(f"history is at frame {self.head}, cannot write frame {start}")
        count = latents.shape[2]
        for a, b, off in self._runs(start, count):
            self.buffer[:, :, a:b].copy_(latents[:, :, off:off + b - a])
        self.head = start + count

    def last(self, count: int) -> torch.Tensor:
        """The newest `count` frames in time order, [B, C, count, h, w] (a view when contiguous)."""
        count = min(count, self.capacity, self.head)
        runs = self._runs(self.head - count, count)
        parts = [self.buffer[:, :, a:b] for a, b, _ in runs]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


class StageClock:
    """Per-stage milliseconds of one chunk. On CUDA: events recorded on the current stream (no
    sync until `finish`, which waits once for the last event); elsewhere: perf_counter.

    Usage per chunk: start(); mark("text"); ...; mark("decode"); finish() -> {stage: ms, total: ms}.
    A stage marked several times (per denoising step) accumulates."""

    def __init__(self, device: torch.device, stages: tuple[str, ...]):
        self.cuda = torch.device(device).type == "cuda"
        self.stages = stages
        self._events: list = []
        self._marks: list[tuple[str, int]] = []  # (stage, index of the event that ends it)
        self._t: list[float] = []

    def _event(self, i: int):
        while len(self._events) <= i:  # the pool grows to the largest chunk once, then is reused
            self._events.append(torch.cuda.Event(enable_timing=True))
        return self._events[i]

    def start(self) -> None:
        self._marks.clear()
        self._t.clear()
        self._record()

    def _record(self) -> int:
        i = len(self._t)
        self._t.append(time.perf_counter())
        if self.cuda:
            self._event(i).record()
        return i

    def mark(self, stage: str) -> None:
        """The time since the previous mark (or start) belongs to `stage`."""
        self._marks.append((stage, self._record()))

    def finish(self) -> dict[str, float]:
        """{stage: ms} for every declared stage (0.0 when absent) and `total`; waits for the GPU once."""
        out = {s: 0.0 for s in self.stages}
        if self.cuda:
            last = self._event(len(self._t) - 1)
            last.synchronize()
            elapsed = lambda a, b: self._event(a).elapsed_time(self._event(b))
        else:
            elapsed = lambda a, b: (self._t[b] - self._t[a]) * 1e3
        prev = 0
        for stage, i in self._marks:
            out[stage] = out.get(stage, 0.0) + elapsed(prev, i)
            prev = i
        out["total"] = elapsed(0, len(self._t) - 1)
        return out


def frames_to_rgba(frames: torch.Tensor) -> torch.Tensor:
    """Decoded frames [1, 3, F, H, W] in [-1, 1] -> uint8 RGBA [F, H, W, 4] (alpha 255) on the same
    device. Rounds to nearest: floor(127.5 x + 128) = round(127.5 (x + 1))."""
    if frames.dim() != 5 or frames.shape[:2] != (1, 3):
        raise ValueError(f"expected decoded frames [1, 3, F, H, W], got {tuple(frames.shape)}")
    _, _, f, h, w = frames.shape
    out = torch.empty(f, h, w, 4, dtype=torch.uint8, device=frames.device)
    rgb = frames[0].permute(1, 2, 3, 0).to(torch.float32, copy=True).mul_(127.5).add_(128.0).clamp_(0.0, 255.0)
    out[..., :3].copy_(rgb)  # float -> uint8 truncates: the +128 (not +127.5) makes it round
    out[..., 3].fill_(255)
    return out
