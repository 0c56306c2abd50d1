"""CUDA -> OpenGL texture path. The GPU test writes a known pattern through
cudaGraphicsGLRegisterImage + cudaMemcpy2DToArrayAsync into a texture of a headless EGL context
and reads it back with glGetTexImage. The CPU tests run the same GL code on Mesa's software EGL
when it is installed, and check the install messages."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from vacelive.bridge.transports import gl_interop
from vacelive.bridge.transports.base import TransportUnavailable

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="EGL path is Linux-only")


def pattern(h: int, w: int, k: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x + k) % 256, (y * 3) % 256, (x * y + 7 * k) % 256, np.full_like(x, 255)], -1).astype(np.uint8)


def _egl_or_skip():
    try:
        return gl_interop.EGLContext(cuda_device=None)
    except TransportUnavailable as exc:
        pytest.skip(f"no EGL here: {exc}")


@linux_only
def test_gl_texture_cpu_upload_and_readback_on_egl():
    ctx = _egl_or_skip()
    try:
        tex = gl_interop.GLTexture(37, 21)  # odd width: row alignment must be 1
        tex.upload(pattern(21, 37))
        assert np.array_equal(tex.read(), pattern(21, 37))
        tex.upload(torch.from_numpy(pattern(21, 37, k=5)))
        assert np.array_equal(tex.read(), pattern(21, 37, k=5))
        with pytest.raises(ValueError, match="does not fit"):
            tex.upload(pattern(20, 37))
        tex.close()
    finally:
        ctx.close()


def test_missing_packages_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "OpenGL", None)
    monkeypatch.delitem(sys.modules, "OpenGL.GL", raising=False)
    with pytest.raises(TransportUnavailable, match=r"vacelive\[interop\]"):
        gl_interop._gl()
    assert "vacelive[interop]" in gl_interop.interop_unavailable_reason()


def test_missing_cuda_bindings_are_named(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(TransportUnavailable, match="cuda-bindings"):
        gl_interop._cudart()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU reason")
def test_reason_without_gpu():
    reason = gl_interop.interop_unavailable_reason()
    assert reason and ("CUDA" in reason or "interop" in reason)


@pytest.mark.gpu
@linux_only
@pytest.mark.parametrize("size", [(480, 832), (720, 1280)])
def test_cuda_tensor_to_gl_texture_without_cpu_copy(size):
    reason = gl_interop.interop_unavailable_reason()
    if reason and "not importable" in reason:  # the optional [interop] extra is not installed
        pytest.skip(reason)
    if reason:
        pytest.fail(f"CUDA-GL interop unavailable on this GPU box: {reason}")
    try:
        ctx = gl_interop.EGLContext(cuda_device=torch.cuda.current_device())
    except TransportUnavailable as exc:
        pytest.fail(f"headless EGL context failed on the GPU box: {exc}")
    try:
        assert "llvmpipe" not in ctx.renderer.lower(), f"EGL picked a software renderer: {ctx.renderer}"
        h, w = size
        tex = gl_interop.GLTexture(w, h)
        base = torch.from_numpy(pattern(h, w)).cuda()
        for k in range(3):
            # produced by a kernel right before the upload: the copy must be ordered after it
            frame = base.clone()
            frame[..., 0] = (frame[..., 0].int() + k).remainder(256).to(torch.uint8)
            tex.upload(frame)
            got = tex.read()
            expect = pattern(h, w)
            expect[..., 0] = (expect[..., 0].astype(int) + k) % 256
            assert np.array_equal(got, expect), f"pass {k}: texture differs from the tensor"
        tex.close()
    finally:
        ctx.close()
