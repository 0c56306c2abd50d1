"""Texture transports: RGBA frame sources and sinks for Spout (Windows), Syphon (macOS) and shared
memory (any OS), the GPU zero-copy output path, and the input frame history.

Platform modules are imported only when their adapter is opened, so a missing library never breaks
the others; it raises TransportUnavailable naming the package to install. See docs/transports.md.

Specs for config files and flags (open_source / open_sink):
    shm:NAME            shared-memory ring NAME (any OS)
    spout:NAME          Spout sender NAME ("spout:" = the active sender when receiving)
    syphon:NAME         Syphon server NAME; syphon:APP/NAME to match the app too ("syphon:" = first)
    ndi:NAME[?opts]     NDI source/sender NAME over the network (any OS; options in ndi.py:
                        groups=, ips= for discovery by address, fourcc=RGBA|BGRA|UYVY, fps=)
"""
from __future__ import annotations

from typing import Any

from .base import (
    FrameHistory,
    FrameSink,
    FrameSource,
    FrameWindow,
    TransportUnavailable,
)
from .shm import ShmFrameSink, ShmFrameSource

KINDS = ("shm", "spout", "syphon", "ndi")


def _split(spec: str) -> tuple[str, str]:
    kind, sep, name = spec.partition(":")
    if not sep or kind not in KINDS:
        raise ValueError(f"transport spec {spec!r} must be one of {', '.join(k + ':NAME' for k in KINDS)}")
    return kind, name


def open_source(spec: str, **options: Any) -> FrameSource:
    """A FrameSource from a spec string; options go to the adapter (e.g. module=, flip_vertical=)."""
    kind, name = _split(spec)
    if kind == "shm":
        if not name:
            raise ValueError("shm needs a name: shm:NAME")
        return ShmFrameSource(name, **options)
    if kind == "spout":
        from .spout import SpoutSource

        return SpoutSource(name, **options)
    if kind == "ndi":
        from .ndi import NdiSource

        return NdiSource(name, **options)
    from .syphon import SyphonSource

    app, _, server = name.rpartition("/")
    return SyphonSource(server, app, **options)


def open_sink(spec: str, **options: Any) -> FrameSink:
    kind, name = _split(spec)
    if not name:
        raise ValueError(f"{kind} sink needs a name: {kind}:NAME")
    if kind == "shm":
        return ShmFrameSink(name, **options)
    if kind == "spout":
        from .spout import SpoutSink

        return SpoutSink(name, **options)
    if kind == "ndi":
        from .ndi import NdiSink

        return NdiSink(name, **options)
    from .syphon import SyphonSink

    return SyphonSink(name, **options)


__all__ = [
    "FrameHistory",
    "FrameSink",
    "FrameSource",
    "FrameWindow",
    "ShmFrameSink",
    "ShmFrameSource",
    "TransportUnavailable",
    "open_sink",
    "open_source",
]
