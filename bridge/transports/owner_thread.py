"""A worker thread that owns a thread-affine resource (an OpenGL context, a Spout/Syphon object),
and the base of the adapters built on one.

OpenGL contexts are current on exactly one thread, and SpoutGL needs its context current for every
call; so each adapter creates its context on one OwnerThread and sends every call there through a
queue. Callers on any thread (the FrameHistory poller, the pacer) block until their call is done,
which also keeps the caller's buffer alive for exactly as long as the call needs it.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

from .base import FrameSource


class OwnerThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, kwargs, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # delivered to the caller
                fut.set_exception(exc)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        if self._closed:
            raise RuntimeError(f"{self.name}: owner thread is closed")
        fut: Future = Future()
        self._queue.put((fn, args, kwargs, fut))
        return fut

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 10.0, **kwargs: Any) -> Any:
        """Run fn on the owner thread and return its result (re-raising its exception)."""
        if threading.get_ident() == self._thread.ident:
            return fn(*args, **kwargs)  # already on the owner thread (nested call)
        return self.submit(fn, *args, **kwargs).result(timeout=timeout)

    def close(self, finalizer: Callable[[], Any] | None = None, timeout: float = 5.0) -> None:
        """Run an optional finalizer on the owner thread, then stop it."""
        if self._closed:
            return
        try:
            if finalizer is not None:
                self.call(finalizer, timeout=timeout)
        finally:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=timeout)


class OwnedAdapter:
    """An adapter whose platform objects live on one OwnerThread (Spout, Syphon): `_start_owner`
    runs `_open` there (and stops the thread again if that fails), `_call` runs a call there
    within `call_timeout`, and close() runs `_release` there, then stops the thread."""

    call_timeout: float = 5.0
    _owner: OwnerThread

    def _start_owner(self, thread_name: str) -> None:
        self._owner = OwnerThread(thread_name)
        try:
            self._call(self._open)
        except BaseException:
            self._owner.close()
            raise

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._owner.call(fn, *args, timeout=self.call_timeout)

    def _open(self) -> None:
        """Create the platform objects (on the owner thread)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the platform objects (on the owner thread)."""

    def close(self) -> None:
        self._owner.close(self._release)


class OwnedSource(OwnedAdapter, FrameSource):
    """A FrameSource on an owner thread; `_read` sets `_size` and `_counter` as frames arrive."""

    _size: tuple[int, int] | None = None
    _counter = 0

    @property
    def size(self) -> tuple[int, int] | None:
        return self._size

    @property
    def frame_counter(self) -> int:
        return self._counter
