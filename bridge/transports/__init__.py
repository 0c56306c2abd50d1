"""Texture transports: RGBA frame sources and sinks for Spout (Windows), Syphon (macOS) and shared
memory (any OS), the GPU zero-copy output path, and the input frame history.

Platform modules are imported only when their adapter is opened, so a missing library never breaks
the others; it raises TransportUnavailable naming the package to install. See docs/transports.md.
"""
from .base import (
    FrameHistory,
    FrameSink,
    FrameSource,
    FrameWindow,
    TransportUnavailable,
)
from .shm import ShmFrameSink, ShmFrameSource

__all__ = [
    "FrameHistory",
    "FrameSink",
    "FrameSource",
    "FrameWindow",
    "ShmFrameSink",
    "ShmFrameSource",
    "TransportUnavailable",
]
