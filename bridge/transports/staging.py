"""Device → host staging for sinks that need CPU pixels (shared memory, Spout/Syphon CPU path).

A CUDA frame is copied with `non_blocking=True` into a reused *pinned* host buffer (a DMA at full
PCIe speed, no pageable bounce buffer), then one event wait. numpy and CPU tensors pass through
without a copy.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import as_rgba_numpy, check_rgba


class HostStager:
    def __init__(self) -> None:
        self._buf = None  # pinned torch tensor, reused while the frame shape stays the same
        self._event = None

    def to_numpy(self, frame: Any) -> np.ndarray:
        """The frame as C-contiguous uint8 numpy [H,W,4]. For CUDA input the returned array is the
        pinned staging buffer: valid until the next call (sinks consume it synchronously)."""
        if isinstance(frame, np.ndarray) or frame.device.type == "cpu":
            return as_rgba_numpy(frame)
        import torch

        check_rgba(frame)
        if self._buf is None or tuple(self._buf.shape) != tuple(frame.shape):
            self._buf = torch.empty(tuple(frame.shape), dtype=torch.uint8, pin_memory=True)
            self._event = torch.cuda.Event()
        self._buf.copy_(frame, non_blocking=True)
        self._event.record(torch.cuda.current_stream(frame.device))
        self._event.synchronize()
        return self._buf.numpy()
