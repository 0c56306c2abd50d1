"""Spout (Windows) through SpoutGL: a receiver source and a sender sink.

SpoutGL needs a current OpenGL context for every call (its OpenSpout() fails with "Cannot get GL
device context" otherwise), and GL contexts are thread-affine. So each adapter owns one
OwnerThread: it calls createOpenGL() first (a hidden 32x32 window) and makes every later Spout
call there; other threads submit calls and wait.

Receiver (SpoutSource):
* the receive format follows the sender: getSenderFormat() DXGI 87/91 (B8G8R8A8) -> GL_BGRA and a
  swizzle to RGBA; 28/29 (R8G8B8A8, TouchDesigner's default) and anything else -> GL_RGBA.
  (Asking GL_RGBA of a BGRA sender has left B,G,R,A bytes on some drivers: red/blue swapped.)
* isUpdated() (a sender appeared, changed size or format): reallocate and re-select the format;
* isFrameNew() after receiveImage(): an unchanged texture returns None, with no copy or swizzle;
* getSenderList() lists senders; an empty name follows Spout's active sender.
* never call getSenderName(): the binding maps it to GetSenderWidth and returns an int.

Sender (SpoutSink): numpy / CPU frames -> sendImage(buf, w, h, GL_RGBA, False, 0); CUDA tensors ->
GLTexture (CUDA-GL interop, no CPU copy) -> sendTexture(tex, GL_TEXTURE_2D, w, h, False, 0) with
all six arguments positional (the binding has no defaults), falling back to the pinned-memory CPU
path if interop is unavailable.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from .base import BGRA_TO_RGBA, FrameSink, check_rgba, platform_module
from .owner_thread import OwnedAdapter, OwnedSource
from .staging import HostStager

log = logging.getLogger(__name__)

GL_RGBA = 0x1908
GL_BGRA = 0x80E1  # GL_BGRA_EXT in SpoutGL.enums
GL_TEXTURE_2D = 0x0DE1
DXGI_BGRA_FORMATS = {87, 91}  # B8G8R8A8_UNORM, B8G8R8A8_UNORM_SRGB


def load_spoutgl(module: Any = None) -> Any:
    """The SpoutGL module (or an injected stand-in with the same API)."""
    return platform_module(module, "win32", "SpoutGL", "pip install SpoutGL", "Windows only",
                           "Spout exists only on Windows; on Linux use the shared-memory transport "
                           "(shm) or the remote link. On Windows: pip install SpoutGL")


class SpoutSource(OwnedSource):
    def __init__(self, sender_name: str = "", module: Any = None, call_timeout: float = 5.0) -> None:
        """sender_name: the Spout sender to receive; "" follows the active sender."""
        self._mod = load_spoutgl(module)
        self.name = sender_name
        self.call_timeout = call_timeout
        self._receiver: Any = None
        self._buf: np.ndarray | None = None
        self._gl_format = GL_RGBA
        self.updates = 0  # connect / resize / format changes seen
        self._start_owner(f"spout-recv:{sender_name or 'active'}")

    def _open(self) -> None:
        receiver = self._mod.SpoutReceiver()
        receiver.createOpenGL()  # first: every Spout call needs a current GL context
        if self.name:
            receiver.setReceiverName(self.name)
        self._receiver = receiver

    @property
    def bgra(self) -> bool:
        return self._gl_format == GL_BGRA

    def list_senders(self) -> list[str]:
        return list(self._call(lambda: self._receiver.getSenderList()))

    def read(self) -> np.ndarray | None:
        return self._call(self._read)

    def _read(self) -> np.ndarray | None:
        r = self._receiver
        ok = r.receiveImage(self._buf, self._gl_format, False, 0)
        if r.isUpdated():
            w, h = int(r.getSenderWidth()), int(r.getSenderHeight())
            dxgi = int(r.getSenderFormat())
            self._gl_format = GL_BGRA if dxgi in DXGI_BGRA_FORMATS else GL_RGBA
            self._size = (w, h)
            self._buf = np.zeros((h, w, 4), np.uint8)
            self.updates += 1
            log.info("spout: receiving %r %dx%d (DXGI %d -> %s)", r.getActiveSender() if not self.name
                     else self.name, w, h, dxgi, "BGRA" if self.bgra else "RGBA")
            return None  # the next receive fills the new buffer
        if not ok or self._buf is None or not r.isConnected():
            return None
        if not r.isFrameNew():
            return None  # the sender has not drawn since the last read: no copy
        self._counter = int(r.getSenderFrame()) if r.isFrameCountEnabled() else self._counter + 1
        return self._buf[..., BGRA_TO_RGBA] if self.bgra else self._buf.copy()

    def _release(self) -> None:
        if self._receiver is not None:
            self._receiver.releaseReceiver()
            self._receiver.closeOpenGL()
            self._receiver = None


class SpoutSink(OwnedAdapter, FrameSink):
    def __init__(self, name: str = "vacelive", module: Any = None, gpu: bool | None = None,
                 texture_factory: Callable[[int, int], Any] | None = None, call_timeout: float = 5.0) -> None:
        """gpu: None = interop for CUDA frames when available (else CPU path), True = always through
        a GL texture (errors raise), False = always sendImage. texture_factory(width, height) makes
        the GL texture (default: gl_interop.GLTexture); it runs on the Spout thread."""
        self._mod = load_spoutgl(module)
        self.name = name
        self.gpu = gpu
        self.call_timeout = call_timeout
        self._texture_factory = texture_factory
        self._texture: Any = None
        self._sender: Any = None
        self._stager = HostStager()
        self._interop_failed: str | None = None
        self.frames_sent = 0
        self._start_owner(f"spout-send:{name}")

    def _open(self) -> None:
        sender = self._mod.SpoutSender()
        sender.createOpenGL()
        sender.setSenderName(self.name)
        self._sender = sender

    def takes_cuda_frames(self) -> bool:
        """CUDA frames go to the GL texture without a host copy (staging.takes_cuda_frames): asked
        once by the run loop, which then skips its own staging copy."""
        if self.gpu is False or self._interop_failed:
            return False
        if self.gpu is True or self._texture_factory is not None:
            return True
        from .gl_interop import interop_unavailable_reason

        return interop_unavailable_reason() is None

    def _use_texture(self, frame: Any) -> bool:
        if self.gpu is False or isinstance(frame, np.ndarray):
            return False
        if self.gpu is True:
            return True
        if frame.device.type != "cuda" or self._interop_failed:
            return False
        if self._texture_factory is None:
            from .gl_interop import interop_unavailable_reason

            reason = interop_unavailable_reason()
            if reason:
                self._interop_failed = reason
                log.warning("spout: GPU path off, using pinned CPU copies: %s", reason)
                return False
        return True

    def send(self, frame: Any) -> None:
        check_rgba(frame)
        if self._use_texture(frame):
            try:
                self._call(self._send_texture, frame)
                return
            except Exception as exc:
                if self.gpu is True:
                    raise
                self._interop_failed = f"{type(exc).__name__}: {exc}"
                log.warning("spout: CUDA-GL interop failed (%s); using pinned CPU copies", self._interop_failed)
        pixels = self._stager.to_numpy(frame)
        self._call(self._send_image, pixels)

    def _send_image(self, pixels: np.ndarray) -> None:
        h, w = pixels.shape[:2]
        if not self._sender.sendImage(pixels, w, h, GL_RGBA, False, 0):
            raise RuntimeError(f"spout: sendImage failed for sender {self.name!r}")
        self._sender.setFrameSync(self.name)
        self.frames_sent += 1

    def _send_texture(self, frame: Any) -> None:
        h, w = int(frame.shape[0]), int(frame.shape[1])
        if self._texture is None or (self._texture.width, self._texture.height) != (w, h):
            if self._texture is not None:
                self._texture.close()
            factory = self._texture_factory
            if factory is None:
                from .gl_interop import GLTexture as factory
            self._texture = factory(w, h)
        self._texture.upload(frame)
        if not self._sender.sendTexture(self._texture.texture_id, GL_TEXTURE_2D, w, h, False, 0):
            raise RuntimeError(f"spout: sendTexture failed for sender {self.name!r}")
        self._sender.setFrameSync(self.name)
        self.frames_sent += 1

    def _release(self) -> None:
        if self._texture is not None:
            self._texture.close()
            self._texture = None
        if self._sender is not None:
            self._sender.releaseSender()
            self._sender.closeOpenGL()
            self._sender = None
