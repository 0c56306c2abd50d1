"""A worker thread that owns a thread-affine resource (an OpenGL context, a Spout/Syphon object).

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
