"""Shared-memory frame ring: a named, lock-free ring of RGBA frames for any OS and any process.

Two segments per stream `NAME` (names are short: macOS allows 31 characters):

* the directory `NAME` (64 bytes) says which data generation is current;
* the data segment `NAME.GEN` holds a header, one sequence lock per slot, and `slots` frames.
  A size change creates generation GEN+1 and marks the old one superseded; readers follow.

All integers little-endian. Directory:

    off size field
    0   4   magic b"VLSD"
    4   u32 version (1)
    8   u32 generation of the current data segment
    12  u32 flags (bit 0: writer closed)

Data segment `NAME.GEN`:

    0   4   magic b"VLFR"
    4   u32 version (1)
    8   u32 width
    12  u32 height
    16  u32 channels (4, RGBA, rows top-first)
    20  u32 slot count
    24  u64 write index: frames published so far; the newest is frame number `write index`,
            stored in slot (write index - 1) % slots
    32  u64 frame bytes (width * height * channels)
    40  u32 data offset (slot 0 starts here; 64-byte aligned)
    44  u32 generation
    48  u32 flags (bit 0: superseded by a newer generation or closed)
    64 + 16*i: u64 seq[i], u64 frame_number[i]     (per-slot sequence lock)
    data offset + i * frame bytes: pixels of slot i

Sequence lock (per slot). Writer: seq += 1 (odd: writing) → pixels → frame_number → seq += 1
(even) → write index. Reader: read write index w, slot s = (w-1) % slots; s1 = seq[s] (retry if
odd); check frame_number[s] == w; copy pixels; s2 = seq[s]; the copy is good iff s1 == s2. So a
reader never returns a torn frame, and always returns the newest complete one. The writer never
waits for readers; aligned 8-byte loads/stores are atomic on x86-64 and arm64.
"""
from __future__ import annotations

import logging
import os
import struct
import sys
import time
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Any, Iterator

import numpy as np

from .base import FrameSink, FrameSource
from .staging import HostStager

log = logging.getLogger(__name__)

DIR_MAGIC = b"VLSD"
DATA_MAGIC = b"VLFR"
VERSION = 1
DIR_SIZE = 64
HEADER_FIXED = 64
SLOT_META = 16  # u64 seq + u64 frame number
FLAG_SUPERSEDED = 1
FLAG_CLOSED = 1

_DIR = struct.Struct("<4sIII")
_HEAD = struct.Struct("<4sIIIIIQQIII")  # up to flags, 52 bytes


def data_offset_for(slots: int) -> int:
    return (HEADER_FIXED + SLOT_META * slots + 63) // 64 * 64


def data_name(name: str, generation: int) -> str:
    return f"{name}.{generation}"


# Segments created by writers in this process. Their resource-tracker entry belongs to the writer,
# so an in-process reader must not unregister it.
_OWNED: set[str] = set()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open an existing segment without letting this process's resource tracker unlink it at exit
    (Python < 3.13 registers attached segments too, which destroys the writer's ring)."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    shm = shared_memory.SharedMemory(name=name)
    if sys.platform != "win32" and name not in _OWNED:
        try:
            from multiprocessing import resource_tracker

            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        except Exception:  # pragma: no cover - best effort
            pass
    return shm


def _create(name: str, size: int) -> shared_memory.SharedMemory | None:
    """Create a segment; None if the name is taken. A POSIX segment left by a crashed writer is
    removed and created again; on Windows a name lives while any process holds it open."""
    try:
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
    except FileExistsError:
        if sys.platform == "win32":
            return None
        log.warning("shared memory %r already exists (a crashed writer?); replacing it", name)
        _unlink(name)
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            return None
    _OWNED.add(name)
    return shm


def _release_name(shm: shared_memory.SharedMemory) -> None:
    """Writer side: unlink a segment it created (POSIX; Windows frees it with the last handle)."""
    _OWNED.discard(shm.name)
    if sys.platform != "win32":
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


def _unlink(name: str) -> None:
    """Remove a stale POSIX segment name. (Open-then-unlink keeps the resource tracker balanced.)"""
    try:
        shm = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return
    shm.close()
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


class _DataView:
    """numpy views over one data segment (shared by the writer and the reader)."""

    def __init__(self, shm: shared_memory.SharedMemory) -> None:
        self.shm = shm
        buf = shm.buf
        magic, version, w, h, c, slots, _, frame_bytes, offset, gen, _ = _HEAD.unpack_from(buf, 0)
        if magic != DATA_MAGIC or version != VERSION:
            raise ValueError(f"{shm.name}: not a vacelive frame ring (magic {magic!r}, v{version})")
        self.width, self.height, self.channels, self.slots = w, h, c, slots
        self.frame_bytes, self.generation = frame_bytes, gen
        self.write_index = np.ndarray((1,), "<u8", buf, 24)
        self.flags = np.ndarray((1,), "<u4", buf, 48)
        meta = np.ndarray((slots, 2), "<u8", buf, HEADER_FIXED)
        self.seq, self.frame_no = meta[:, 0], meta[:, 1]
        self.pixels = np.ndarray((slots, h, w, c), np.uint8, buf, offset)

    def release(self, unlink: bool = False) -> None:
        # Views must go before the mmap can close.
        del self.write_index, self.flags, self.seq, self.frame_no, self.pixels
        self.shm.close()
        if unlink:
            _release_name(self.shm)


class ShmFrameSink(FrameSink):
    """Writer of a frame ring. `send()` copies a frame in; `frame()` hands out the slot itself
    (zero-copy) for producers that can render straight into it.

    The segment is created on the first frame (its size decides the layout); a frame of another
    size starts a new generation. `close()` unlinks the segments (the name is free again).
    """

    def __init__(self, name: str, slots: int = 3) -> None:
        if slots < 2:
            raise ValueError("a ring needs at least 2 slots (one being written, one readable)")
        self.name = name
        self.slots = slots
        self._dir = _create(name, DIR_SIZE)
        self._generation = 0
        if self._dir is None:
            # Windows: readers still hold the directory of a previous writer. Reuse it and go on
            # counting generations, so those readers see the change.
            self._dir = _attach(name)
            magic, version, gen, _ = _DIR.unpack_from(self._dir.buf, 0)
            if magic == DIR_MAGIC and version == VERSION:
                self._generation = gen
        _DIR.pack_into(self._dir.buf, 0, DIR_MAGIC, VERSION, self._generation, 0)
        self._dir_gen = np.ndarray((1,), "<u4", self._dir.buf, 8)
        self._view: _DataView | None = None
        self._stager = HostStager()

    @property
    def frames_written(self) -> int:
        return int(self._view.write_index[0]) if self._view else 0

    def _allocate(self, width: int, height: int) -> _DataView:
        old = self._view
        offset = data_offset_for(self.slots)
        frame_bytes = width * height * 4
        shm = None
        while shm is None:  # skip generation names still held elsewhere (Windows)
            self._generation += 1
            shm = _create(data_name(self.name, self._generation), offset + frame_bytes * self.slots)
        # write_index continues across generations so a reader's counters stay monotonic
        start_index = int(old.write_index[0]) if old else 0
        _HEAD.pack_into(shm.buf, 0, DATA_MAGIC, VERSION, width, height, 4, self.slots,
                        start_index, frame_bytes, offset, self._generation, 0)
        view = _DataView(shm)
        view.seq[:] = 0
        view.frame_no[:] = 0
        self._dir_gen[0] = self._generation  # publish the new generation only once it is complete
        if old is not None:
            old.flags[0] = FLAG_SUPERSEDED
            old.release(unlink=True)
        self._view = view
        log.info("shm %r: %dx%d, %d slots (generation %d)", self.name, width, height,
                 self.slots, self._generation)
        return view

    @contextmanager
    def frame(self, width: int, height: int) -> Iterator[np.ndarray]:
        """Zero-copy write: yields the next slot as a writable [H,W,4] view; publishes on exit."""
        view = self._view
        if view is None or (view.width, view.height) != (width, height):
            view = self._allocate(width, height)
        number = int(view.write_index[0]) + 1
        slot = (number - 1) % view.slots
        view.seq[slot] += 1  # odd: readers skip this slot
        try:
            yield view.pixels[slot]
        except BaseException:
            view.frame_no[slot] = 0  # half-written: never readable
            view.seq[slot] += 1
            raise
        view.frame_no[slot] = number
        view.seq[slot] += 1  # even: complete
        view.write_index[0] = number

    def send(self, frame: Any) -> None:
        pixels = self._stager.to_numpy(frame)
        h, w = pixels.shape[:2]
        with self.frame(w, h) as slot:
            np.copyto(slot, pixels)

    def close(self) -> None:
        if self._dir is None:
            return
        if self._view is not None:
            self._view.flags[0] = FLAG_SUPERSEDED
            self._view.release(unlink=True)
            self._view = None
        self._dir.buf[12] = FLAG_CLOSED
        del self._dir_gen
        self._dir.close()
        _release_name(self._dir)
        self._dir = None


class ShmFrameSource(FrameSource):
    """Reader of a frame ring written by any process. Attaches lazily (the writer may start later)
    and follows size changes (generations). `read()` copies the newest complete frame out."""

    def __init__(self, name: str, max_retries: int = 64) -> None:
        self.name = name
        self.max_retries = max_retries
        self._dir: shared_memory.SharedMemory | None = None
        self._dir_gen: np.ndarray | None = None
        self._view: _DataView | None = None
        self._last = 0  # frame number last returned
        self.retries = 0  # seqlock retries (a copy raced the writer): a health statistic
        self._idle_since = time.monotonic()

    @property
    def size(self) -> tuple[int, int] | None:
        return (self._view.width, self._view.height) if self._view else None

    @property
    def frame_counter(self) -> int:
        return self._last

    def _detach(self) -> None:
        self._last = 0  # the next writer counts from 1 again
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._dir is not None:
            self._dir_gen = None
            self._dir.close()
            self._dir = None

    def _ensure_attached(self) -> _DataView | None:
        try:
            if self._dir is None:
                self._dir = _attach(self.name)
                magic, version, _, _ = _DIR.unpack_from(self._dir.buf, 0)
                if magic == b"\0\0\0\0":  # created a moment ago, header not written yet
                    self._detach()
                    return None
                if magic != DIR_MAGIC or version != VERSION:
                    raise ValueError(f"{self.name}: not a vacelive frame ring directory")
                self._dir_gen = np.ndarray((1,), "<u4", self._dir.buf, 8)
            gen = int(self._dir_gen[0])
            if gen == 0:
                return None  # writer exists, no frame yet
            if self._view is None or self._view.generation != gen:
                if self._view is not None:
                    self._view.release()
                    self._view = None
                self._view = _DataView(_attach(data_name(self.name, gen)))
            return self._view
        except FileNotFoundError:
            # No writer (yet), or it restarted: start over next time.
            self._detach()
            return None

    def _writer_gone(self) -> bool:
        """POSIX: a writer that died without close() leaves its directory unlinked (by its resource
        tracker) but still mapped here; st_nlink == 0 tells, so a restarted writer is found."""
        if sys.platform == "win32" or self._dir is None:
            return False
        try:
            return os.fstat(self._dir._fd).st_nlink == 0  # type: ignore[attr-defined]
        except (OSError, AttributeError):
            return False

    def read(self) -> np.ndarray | None:
        if self._dir is not None and self._dir.buf[12] & FLAG_CLOSED:
            self._detach()  # the writer closed; a new one may create the name again
        frame = self._read()
        now = time.monotonic()
        if frame is not None:
            self._idle_since = now
        elif now - self._idle_since > 0.5:
            self._idle_since = now
            if self._writer_gone():
                self._detach()
        return frame

    def _read(self) -> np.ndarray | None:
        view = self._ensure_attached()
        if view is None:
            return None
        if view.flags[0] & FLAG_SUPERSEDED:
            # The writer moved on (resize) or closed; the directory may already name the next one.
            view.release()
            self._view = None
            view = self._ensure_attached()
            if view is None or view.flags[0] & FLAG_SUPERSEDED:
                return None
        out = None
        for _ in range(self.max_retries):
            w = int(view.write_index[0])
            if w == 0 or w == self._last:
                return None
            slot = (w - 1) % view.slots
            s1 = int(view.seq[slot])
            if s1 & 1 or int(view.frame_no[slot]) != w:
                self.retries += 1
                continue  # the writer lapped the ring onto this slot: take the newer frame
            if out is None:
                out = np.empty_like(view.pixels[slot])
            np.copyto(out, view.pixels[slot])
            if int(view.seq[slot]) == s1:
                self._last = w
                return out
            self.retries += 1
        return None

    def close(self) -> None:
        self._detach()
