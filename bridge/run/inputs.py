"""What the run loop adds to a chunk request beyond plain parameters: reference images and
extension anchors loaded from files (plus the live reference texture).

Both are *sticky* on the engine, so they are sent only when they change; otherwise the request
carries `refs=None` / `extension=None` and the engine keeps what it has. "Changed" means the
parameter value differs from what was last applied, or the performer sent it again (a file fixed
on disk and the same path re-sent is loaded again); `writes()` counts those sends.

A file that cannot be read is reported and the previous set stays in use: a typo on stage never
blanks the references the show depends on.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping

import numpy as np

from vacelive.bridge.run.media import MediaError, load_anchor, load_image
from vacelive.engine.request import Extension

log = logging.getLogger(__name__)

MAX_REFS = 3
Report = Callable[[str], None]


class WriteCounter:
    """Counts writes to some parameters (store listener), including re-sends of an equal value,
    which the store's `Snapshot.changed` cannot show."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self._lock = threading.Lock()
        self._count = 0

    def __call__(self, changes: Mapping[str, Any], origin: Any) -> None:
        if origin != "morph" and any(n in changes for n in self.names):
            with self._lock:
                self._count += 1

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


class RefsInput:
    """Reference images: files named by the `refs` parameter plus the live `--ref` texture."""

    def __init__(self, texture: Any = None, loader: Callable[[str], np.ndarray] = load_image) -> None:
        self.texture = texture  # FrameHistory of the ref texture, or None
        self.writes = WriteCounter(("refs",))
        self._loader = loader
        self._paths: tuple[str, ...] = ()  # the refs value last applied (or attempted)
        self._seen_writes = 0
        self._files: list[np.ndarray] = []
        self._tex: np.ndarray | None = None
        self._tex_counter = 0
        self.loaded = 0  # how many times a new set was sent (status, tests)

    @property
    def current(self) -> list[np.ndarray]:
        return (self._files + ([self._tex] if self._tex is not None else []))[:MAX_REFS]

    def take_writes(self) -> int:
        """Call before the store snapshot: writes after this point are seen next chunk."""
        return self.writes.count

    def update(self, paths: tuple[str, ...], writes: int, force: bool, error: Report,
               notice: Report) -> list[np.ndarray] | None:
        """The refs for this chunk's request: a list when the set changed (or `force`, e.g. after a
        reset cleared the engine's sticky set), else None (the engine keeps its set)."""
        changed = False
        if tuple(paths) != self._paths or writes != self._seen_writes:
            self._seen_writes = writes
            self._paths = tuple(paths)
            changed = self._load_files(self._paths, error)
        if self.texture is not None:
            latest = self.texture.latest()
            if latest is not None and latest[1] != self._tex_counter:
                frame, self._tex_counter = latest
                # Texture senders re-publish unchanged images every frame: only new pixels count.
                if self._tex is None or not np.array_equal(frame, self._tex):
                    self._tex = frame
                    changed = True
        if not (changed or force):
            return None
        refs = self._files + ([self._tex] if self._tex is not None else [])
        if len(refs) > MAX_REFS:
            notice(f"refs: {len(refs)} reference images (files + texture); using the first {MAX_REFS}")
            refs = refs[:MAX_REFS]
        self.loaded += 1
        return list(refs)

    def _load_files(self, paths: tuple[str, ...], error: Report) -> bool:
        loaded, problems = [], []
        for p in paths:
            try:
                loaded.append(self._loader(p))
            except MediaError as exc:
                problems.append(str(exc))
        if problems:
            keep = len(self._files)
            error(f"refs: {'; '.join(problems)}; still using the previous {keep} reference "
                  f"image{'s' if keep != 1 else ''} (fix the file and send /vace/refs again)")
            return False
        self._files = loaded
        log.info("references: %d image file(s) loaded", len(loaded))
        return True


class ExtensionInput:
    """First/last frame or clip anchors (VACE extension) from files, sent when they change.
    A change of extension_mode to "none" sends the engine's cancel (Extension with chunks=0), so
    a running extension ends at once instead of running out its span."""

    NAMES = ("extension_mode", "extension_first", "extension_last", "extension_chunks")

    def __init__(self, loader: Callable[[str, bool, str], np.ndarray] = load_anchor) -> None:
        self.writes = WriteCounter(self.NAMES)
        self._loader = loader
        self._key: tuple | None = None
        self._seen_writes = 0

    def take_writes(self) -> int:
        return self.writes.count

    def update(self, values: Mapping[str, Any], writes: int, error: Report) -> Extension | None:
        key = tuple(values[n] for n in self.NAMES)
        if key == self._key and writes == self._seen_writes:
            return None
        previous = self._key
        self._key, self._seen_writes = key, writes
        mode, first_path, last_path, chunks = key
        if mode == "none":
            if previous is not None and previous[0] != "none":
                return Extension(mode=previous[0], chunks=0)
            return None
        clip = mode.endswith("clip")
        anchors: dict[str, np.ndarray] = {}
        problems = []
        for side, path in (("first", first_path), ("last", last_path)):
            if side not in mode:
                continue
            if not path:
                problems.append(f"extension_mode {mode} needs /vace/extension_{side} (a file path)")
                continue
            try:
                anchors[side] = self._loader(path, clip, side)
            except MediaError as exc:
                problems.append(str(exc))
        if problems:
            error(f"extension: {'; '.join(problems)}; no anchor sent")
            return None
        return Extension(mode=mode, first=anchors.get("first"), last=anchors.get("last"),
                         chunks=int(chunks))
