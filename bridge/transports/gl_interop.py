"""GPU zero-copy output: a CUDA tensor into an OpenGL texture with no CPU copy, plus a headless
EGL context so the same code runs (and is tested) on a Linux GPU box without a display.

Path per frame (GLTexture.upload with a CUDA tensor):
    cudaGraphicsGLRegisterImage(texture)            once per texture (WRITE_DISCARD)
    cudaGraphicsMapResources(stream)                GL work issued before is finished first
    cudaGraphicsSubResourceGetMappedArray
    cudaMemcpy2DToArrayAsync(device -> array, stream)
    cudaGraphicsUnmapResources(stream)              GL work issued after sees the copy
The stream is the texture's private copy stream (staging.CopyStreams): generator frames are
complete when step() returns, and a copy on torch's default stream would queue behind the next
chunk's kernels. Nothing waits on the host. Spout then shares the texture (SpoutSink.sendTexture).

Requirements: PyOpenGL and cuda-bindings (`pip install "vacelive[interop]"`), a GL context current
on the calling thread (Spout's createOpenGL on Windows, EGLContext on Linux), and GL and CUDA on
the same GPU. numpy / CPU-tensor frames upload with glTexSubImage2D (the CPU path).
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

import numpy as np

from .base import TransportUnavailable, check_rgba
from .staging import CopyStreams

INTEROP_HINT = 'pip install "vacelive[interop]"  (PyOpenGL + cuda-bindings)'
EGL_HINT = ("an EGL library (Debian/Ubuntu: apt-get install libegl1 libopengl0; NVIDIA driver's "
            "libEGL_nvidia for the GPU) — see docs/transports.md")
EGL_CUDA_DEVICE_NV = 0x323A


def _gl():
    """PyOpenGL's GL module; on Linux without a display, bound to EGL (must be set before import)."""
    if sys.platform.startswith("linux") and "OpenGL.GL" not in sys.modules:
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        from OpenGL import GL
    except ImportError as exc:
        raise TransportUnavailable(f"PyOpenGL is not importable ({exc}): {INTEROP_HINT}") from exc
    except Exception as exc:  # PyOpenGL present but no GL/EGL library to bind to
        raise TransportUnavailable(f"PyOpenGL could not load an OpenGL library ({type(exc).__name__}: "
                                   f"{exc}); install {EGL_HINT}") from exc
    return GL


def _cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6 layout
        except ImportError as exc:
            raise TransportUnavailable(f"cuda-bindings is not importable ({exc}): {INTEROP_HINT}") from exc
    return runtime


def interop_unavailable_reason() -> str | None:
    """None if the CUDA→GL path can be tried here, else a precise reason."""
    try:
        _gl()
        _cudart()
    except TransportUnavailable as exc:
        return str(exc)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is not importable"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch (interop needs the GPU that runs the generator)"
    return None


def _check(result: Any, what: str) -> Any:
    """cuda-bindings calls return (err, *values)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    rt = _cudart()
    if int(err) != 0:
        name = rt.cudaGetErrorName(err)[1]
        text = rt.cudaGetErrorString(err)[1]
        raise RuntimeError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}: "
                           f"{text.decode() if isinstance(text, bytes) else text}")
    return values[0] if len(values) == 1 else values


class EGLContext:
    """A headless OpenGL context through EGL (device platform, pbuffer surface), current on the
    thread that created it. Picks the EGL device that is CUDA device `cuda_device` when the driver
    says (EGL_NV_device_cuda), else the first device that initialises."""

    def __init__(self, cuda_device: int | None = 0) -> None:
        if not sys.platform.startswith("linux"):
            raise TransportUnavailable("EGLContext is for Linux; on Windows Spout's createOpenGL() makes the context")
        _gl()
        try:
            from OpenGL import EGL
            from OpenGL.EGL.EXT.device_enumeration import eglQueryDevicesEXT
            from OpenGL.EGL.EXT.device_query import eglQueryDeviceAttribEXT
            from OpenGL.EGL.EXT.platform_device import EGL_PLATFORM_DEVICE_EXT
        except Exception as exc:  # ImportError, or PyOpenGL failing to load libEGL
            raise TransportUnavailable(f"EGL is not loadable ({type(exc).__name__}: {exc}); install {EGL_HINT}") from exc
        self._egl = EGL
        n = EGL.EGLint()
        try:
            eglQueryDevicesEXT(0, None, ctypes.pointer(n))
        except Exception as exc:
            raise TransportUnavailable(f"EGL device enumeration failed ({exc}); install {EGL_HINT}") from exc
        if n.value == 0:
            raise TransportUnavailable(f"EGL lists no devices; install {EGL_HINT}")
        devices = (EGL.EGLDeviceEXT * n.value)()
        eglQueryDevicesEXT(n.value, devices, ctypes.pointer(n))
        order = list(range(n.value))
        if cuda_device is not None:
            def is_cuda(i: int) -> bool:
                value = EGL.EGLAttrib()
                try:
                    return bool(eglQueryDeviceAttribEXT(devices[i], EGL_CUDA_DEVICE_NV, ctypes.pointer(value))) \
                        and value.value == cuda_device
                except Exception:
                    return False
            order.sort(key=lambda i: not is_cuda(i))
        errors = []
        for i in order:
            try:
                self._open(devices[i], EGL_PLATFORM_DEVICE_EXT)
                self.device_index = i
                return
            except Exception as exc:
                errors.append(f"device {i}: {type(exc).__name__}: {exc}")
        raise TransportUnavailable("no EGL device gave an OpenGL context: " + "; ".join(errors))

    def _open(self, device: Any, platform: int) -> None:
        EGL = self._egl
        dpy = EGL.eglGetPlatformDisplayEXT(platform, device, None)
        major, minor = EGL.EGLint(), EGL.EGLint()
        if not EGL.eglInitialize(dpy, ctypes.pointer(major), ctypes.pointer(minor)):
            raise RuntimeError("eglInitialize failed")
        if not EGL.eglBindAPI(EGL.EGL_OPENGL_API):
            raise RuntimeError("eglBindAPI(EGL_OPENGL_API) failed")
        attrs = (EGL.EGLint * 13)(
            EGL.EGL_SURFACE_TYPE, EGL.EGL_PBUFFER_BIT, EGL.EGL_RENDERABLE_TYPE, EGL.EGL_OPENGL_BIT,
            EGL.EGL_RED_SIZE, 8, EGL.EGL_GREEN_SIZE, 8, EGL.EGL_BLUE_SIZE, 8, EGL.EGL_ALPHA_SIZE, 8,
            EGL.EGL_NONE)
        config, count = EGL.EGLConfig(), EGL.EGLint()
        if not EGL.eglChooseConfig(dpy, attrs, ctypes.pointer(config), 1, ctypes.pointer(count)) or count.value < 1:
            raise RuntimeError("no RGBA8 pbuffer config")
        pb = (EGL.EGLint * 5)(EGL.EGL_WIDTH, 16, EGL.EGL_HEIGHT, 16, EGL.EGL_NONE)
        surface = EGL.eglCreatePbufferSurface(dpy, config, pb)
        context = EGL.eglCreateContext(dpy, config, EGL.EGL_NO_CONTEXT, None)
        if not context:
            raise RuntimeError("eglCreateContext failed")
        if not EGL.eglMakeCurrent(dpy, surface, surface, context):
            raise RuntimeError("eglMakeCurrent failed")
        self.display, self.surface, self.context = dpy, surface, context
        GL = _gl()
        self.renderer = GL.glGetString(GL.GL_RENDERER).decode(errors="replace")
        self.version = GL.glGetString(GL.GL_VERSION).decode(errors="replace")

    def make_current(self) -> None:
        self._egl.eglMakeCurrent(self.display, self.surface, self.surface, self.context)

    def close(self) -> None:
        EGL = self._egl
        EGL.eglMakeCurrent(self.display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
        EGL.eglDestroyContext(self.display, self.context)
        EGL.eglDestroySurface(self.display, self.surface)
        EGL.eglTerminate(self.display)


class GLTexture:
    """An RGBA8 GL_TEXTURE_2D that frames are uploaded into (call on the context's thread).
    Row 0 of a frame is texture row 0; Spout's sendTexture(..., bInvert=False) keeps that order,
    so the receiver sees the frame upright (top-left origin)."""

    def __init__(self, width: int, height: int) -> None:
        GL = self._GL = _gl()
        self.width, self.height = int(width), int(height)
        self.texture_id = int(GL.glGenTextures(1))
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture_id)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR)
        GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, self.width, self.height, 0,
                        GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, None)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        self._resource = None  # CUDA registration, made on the first CUDA upload
        self._copy_streams = CopyStreams()

    def _register(self) -> Any:
        rt = _cudart()
        flags = rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard
        self._resource = _check(rt.cudaGraphicsGLRegisterImage(self.texture_id, self._GL.GL_TEXTURE_2D, flags),
                                "cudaGraphicsGLRegisterImage")
        return self._resource

    def upload(self, frame: Any) -> None:
        check_rgba(frame)
        if tuple(frame.shape[:2]) != (self.height, self.width):
            raise ValueError(f"frame {tuple(frame.shape[:2])} does not fit texture {(self.height, self.width)}")
        if not isinstance(frame, np.ndarray) and frame.device.type == "cuda":
            self._upload_cuda(frame)
            return
        pixels = frame if isinstance(frame, np.ndarray) else frame.detach().numpy()
        pixels = np.ascontiguousarray(pixels)
        GL = self._GL
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture_id)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, self.width, self.height,
                           GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, pixels)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)

    def _upload_cuda(self, frame: Any) -> None:
        rt = _cudart()
        frame = frame.contiguous()
        resource = self._resource or self._register()
        stream = rt.cudaStream_t(self._copy_streams.for_frame(frame).cuda_stream)
        _check(rt.cudaGraphicsMapResources(1, resource, stream), "cudaGraphicsMapResources")
        try:
            array = _check(rt.cudaGraphicsSubResourceGetMappedArray(resource, 0, 0),
                           "cudaGraphicsSubResourceGetMappedArray")
            row = self.width * 4
            _check(rt.cudaMemcpy2DToArrayAsync(array, 0, 0, frame.data_ptr(), row, row, self.height,
                                               rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpy2DToArrayAsync")
        finally:
            _check(rt.cudaGraphicsUnmapResources(1, resource, stream), "cudaGraphicsUnmapResources")

    def read(self) -> np.ndarray:
        """Read the texture back (glGetTexImage): for tests and checks, not the hot path."""
        GL = self._GL
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture_id)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        data = GL.glGetTexImage(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        buf = data if isinstance(data, (bytes, bytearray)) else np.asarray(data).tobytes()
        return np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 4).copy()

    def close(self) -> None:
        if self._resource is not None:
            rt = _cudart()
            _check(rt.cudaGraphicsUnregisterResource(self._resource), "cudaGraphicsUnregisterResource")
            self._resource = None
        if self.texture_id:
            self._GL.glDeleteTextures([self.texture_id])
            self.texture_id = 0
