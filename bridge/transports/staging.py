"""Device → host staging for sinks that need CPU pixels (shared memory, Spout/Syphon CPU path),
and the private CUDA stream every output copy runs on.

A CUDA frame is copied with `non_blocking=True` into a reused *pinned* host buffer (a DMA at full
PCIe speed, no pageable bounce buffer), then one wait. numpy and CPU tensors pass through without a
copy.

Why a private stream: the pacer sends frames while the generator thread has already queued the
next chunk's kernels on torch's default stream. A copy issued there waits behind that whole chunk:
output frames then leave in bursts (measured on an H200 at 832×480: p99 frame interval 85 ms at
24 fps). Generator frames are complete when `step()` returns (engine.request.ChunkResult), so the
copy needs no ordering after the producer, only a stream of its own.

The run loop stages each chunk once (ChunkStager), on its own thread right after step() returns,
so the pacer thread sends host frames and makes no CUDA call at all: a per-frame copy there has to
get through the CUDA driver while the generator thread is launching the next chunk. Measured on
H200s at 832×480 in follow mode, a sink send took p99 0.7 ms staged, against 2.0 ms with a copy
per frame on the pacer thread (11 ms while a deferred clean pass launched). Sinks that take CUDA
frames without a host copy (Spout through CUDA-GL interop: `takes_cuda_frames()`) still get the
CUDA frames.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from .base import as_rgba_numpy, check_rgba


class CopyStreams:
    """One private CUDA stream per device for a sink's output copies (see the module docstring)."""

    def __init__(self) -> None:
        self._streams: dict = {}

    def for_frame(self, frame: Any):
        import torch

        stream = self._streams.get(frame.device)
        if stream is None:
            stream = self._streams[frame.device] = torch.cuda.Stream(frame.device)
        # The caching allocator must not hand the frame's memory to new work before this copy ran.
        frame.record_stream(stream)
        return stream

    def to_host(self, dst: Any, frame: Any) -> None:
        """Copy CUDA `frame` into pinned host tensor `dst` on the private stream, and wait for it."""
        import torch

        stream = self.for_frame(frame)
        with torch.cuda.stream(stream):
            dst.copy_(frame, non_blocking=True)
        stream.synchronize()


def takes_cuda_frames(sink: Any) -> bool:
    """Whether `sink` sends CUDA frames without a host copy (its own `takes_cuda_frames()`)."""
    fn = getattr(sink, "takes_cuda_frames", None)
    return bool(fn()) if callable(fn) else False


class ChunkStager:
    """A chunk's CUDA frames [F,H,W,4] -> one pinned host tensor (one copy, then one wait on the
    private stream); numpy and CPU frames pass through. Each call takes a fresh buffer from torch's
    caching pinned-memory allocator, and keeps the newest buffers covering `keep_frames` frames
    (at least what the pacer can hold): a buffer is freed here, on the staging thread, once the
    pacer can no longer hold a frame of it.

    Why keep them: freeing a pinned buffer records a CUDA event (torch's caching host allocator),
    a driver call, and the pacer freed the previous chunk's buffer with its last frame, just as
    the next chunk started. On an H200 at 832x480, fixed 24 fps, with graphed prompt-cut
    re-caches (the generator thread then waits in a copy queued behind the re-cache replay),
    a pacer tick came 30-50 ms late at every cut while another Python thread kept running (so
    not the GIL). With the buffers freed here (and the codec compiled, in the same run; the two
    were not measured apart): no late tick, interval p99 42-43 ms."""

    def __init__(self, keep_frames: int = 48) -> None:
        self._streams = CopyStreams()
        self.keep_frames = keep_frames
        self._kept: deque = deque()
        self._kept_frames = 0

    def __call__(self, frames: Any) -> Any:
        # numpy >= 2 arrays have a `device` too (the string "cpu"): ask for a torch CUDA device
        if getattr(getattr(frames, "device", None), "type", None) != "cuda":
            return frames
        import torch

        buf = torch.empty(tuple(frames.shape), dtype=frames.dtype, pin_memory=True)
        self._streams.to_host(buf, frames)
        self.keep(buf)
        return buf

    def keep(self, buf: Any) -> None:
        """Hold `buf`; drop the oldest held buffers the newest ones cover `keep_frames` without."""
        self._kept.append(buf)
        self._kept_frames += len(buf)
        while self._kept_frames - len(self._kept[0]) >= self.keep_frames:
            self._kept_frames -= len(self._kept.popleft())


class HostStager:
    def __init__(self) -> None:
        self._buf = None  # pinned torch tensor, reused while the frame shape stays the same
        self._streams = CopyStreams()

    def to_numpy(self, frame: Any) -> np.ndarray:
        """The frame as C-contiguous uint8 numpy [H,W,4]. For CUDA input the returned array is the
        pinned staging buffer: valid until the next call (sinks consume it synchronously)."""
        if isinstance(frame, np.ndarray) or frame.device.type == "cpu":
            return as_rgba_numpy(frame)
        import torch

        check_rgba(frame)
        if self._buf is None or tuple(self._buf.shape) != tuple(frame.shape):
            self._buf = torch.empty(tuple(frame.shape), dtype=torch.uint8, pin_memory=True)
        self._streams.to_host(self._buf, frame)
        return self._buf.numpy()
