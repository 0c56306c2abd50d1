"""Spout adapters against a stand-in SpoutGL module that follows the documented binding API
(github.com/jlai/Python-SpoutGL `src/PySpoutGL.cpp`):
GL context first, thread-affine calls, DXGI formats, isUpdated,
isFrameNew, six positional sendTexture/sendImage arguments, the getSenderName bug."""
from __future__ import annotations

import sys
import threading
import types

import numpy as np
import pytest
import torch

from vacelive.bridge.transports.base import TransportUnavailable
from vacelive.bridge.transports.spout import GL_BGRA, GL_RGBA, GL_TEXTURE_2D, SpoutSink, SpoutSource, load_spoutgl


class World:
    """Spout's shared sender registry, as seen by every receiver."""

    def __init__(self) -> None:
        self.senders: dict[str, dict] = {}
        self.active = ""
        self.calls: list[tuple[str, str, int]] = []  # (object, method, thread id)

    def publish(self, name: str, rgba: np.ndarray, dxgi: int = 87, count: bool = True) -> None:
        s = self.senders.setdefault(name, {"frame": 0})
        s.update(width=rgba.shape[1], height=rgba.shape[0], dxgi=dxgi, count=count, rgba=rgba.copy())
        s["frame"] += 1
        self.active = self.active or name


class _GLObject:
    kind = ""

    def __init__(self, world: World) -> None:
        self.world = world
        self.gl_thread: int | None = None

    def _enter(self, method: str) -> None:
        self.world.calls.append((self.kind, method, threading.get_ident()))
        if method == "createOpenGL":
            self.gl_thread = threading.get_ident()
            return
        if self.gl_thread is None:
            raise RuntimeError("spoutGL::OpenSpout - Cannot get GL device context")
        if threading.get_ident() != self.gl_thread:
            raise RuntimeError("GL context is not current on this thread")

    def createOpenGL(self, /):
        self._enter("createOpenGL")

    def closeOpenGL(self, /):
        self._enter("closeOpenGL")


class FakeReceiver(_GLObject):
    kind = "receiver"

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.name = ""
        self.seen: tuple | None = None
        self.last_frame = 0
        self.updated = self.frame_new = self.connected = False
        self.copies = 0
        self.formats_requested: list[int] = []

    def _sender(self):
        return self.world.senders.get(self.name or self.world.active)

    def setReceiverName(self, name, /):
        self._enter("setReceiverName")
        self.name = name

    def receiveImage(self, buffer, gl_format, invert, host_fbo, /):
        self._enter("receiveImage")
        s = self._sender()
        if s is None:
            self.connected = False
            self.seen = None
            return False
        key = (s["width"], s["height"], s["dxgi"])
        if key != self.seen:  # new sender, size or format: flag an update, copy nothing
            self.seen, self.connected, self.updated, self.last_frame = key, True, True, 0
            return True
        if buffer is None:
            return True
        self.frame_new = s["frame"] != self.last_frame
        if self.frame_new:
            self.formats_requested.append(gl_format)
            pixels = s["rgba"]
            sender_bgra = s["dxgi"] == 87
            if gl_format == GL_BGRA or sender_bgra:
                # GL_BGRA is honoured; GL_RGBA from a BGRA sender leaves B,G,R,A (the driver quirk)
                if not (gl_format == GL_RGBA and not sender_bgra):
                    pixels = pixels[..., [2, 1, 0, 3]]
            np.copyto(np.frombuffer(buffer, np.uint8).reshape(pixels.shape), pixels)
            self.copies += 1
            self.last_frame = s["frame"]
        return True

    def isUpdated(self, /):
        self._enter("isUpdated")
        updated, self.updated = self.updated, False
        return updated

    def isConnected(self, /):
        self._enter("isConnected")
        return self.connected

    def isFrameNew(self, /):
        self._enter("isFrameNew")
        return self.frame_new

    def isFrameCountEnabled(self, /):
        self._enter("isFrameCountEnabled")
        s = self._sender()
        return bool(s and s["count"])

    def getSenderFrame(self, /):
        self._enter("getSenderFrame")
        return self._sender()["frame"]

    def getSenderWidth(self, /):
        self._enter("getSenderWidth")
        return self._sender()["width"]

    def getSenderHeight(self, /):
        self._enter("getSenderHeight")
        return self._sender()["height"]

    def getSenderFormat(self, /):
        self._enter("getSenderFormat")
        return self._sender()["dxgi"]

    def getSenderName(self, /):  # the binding bug: bound to GetSenderWidth
        self._enter("getSenderName")
        return self._sender()["width"]

    def getActiveSender(self, /):
        self._enter("getActiveSender")
        return self.world.active

    def getSenderList(self, /):
        self._enter("getSenderList")
        return list(self.world.senders)

    def releaseReceiver(self, /):
        self._enter("releaseReceiver")


class FakeSender(_GLObject):
    kind = "sender"

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.name = None
        self.images: list[tuple] = []
        self.textures: list[tuple] = []

    def setSenderName(self, name, /):
        self._enter("setSenderName")
        self.name = name

    def sendImage(self, buffer, width, height, gl_format, invert, host_fbo, /):
        self._enter("sendImage")
        data = np.frombuffer(buffer, np.uint8).reshape(height, width, 4).copy()
        self.images.append((data, gl_format, invert, host_fbo))
        self.world.publish(self.name, data, dxgi=28)
        return True

    def sendTexture(self, texture_id, target, width, height, invert, host_fbo, /):
        self._enter("sendTexture")
        self.textures.append((texture_id, target, width, height, invert, host_fbo))
        return True

    def setFrameSync(self, name, /):
        self._enter("setFrameSync")

    def releaseSender(self, /):
        self._enter("releaseSender")


def fake_spoutgl(world: World):
    mod = types.SimpleNamespace(__name__="SpoutGL")
    mod.receivers, mod.senders = [], []

    def receiver():
        r = FakeReceiver(world)
        mod.receivers.append(r)
        return r

    def sender():
        s = FakeSender(world)
        mod.senders.append(s)
        return s

    mod.SpoutReceiver, mod.SpoutSender = receiver, sender
    return mod


def rgba(h=4, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)


def read_until(src, tries=5):
    for _ in range(tries):
        frame = src.read()
        if frame is not None:
            return frame
    return None


def test_context_first_and_every_call_on_one_owner_thread():
    world = World()
    mod = fake_spoutgl(world)
    world.publish("TDSyphonSpoutOut", rgba())
    src = SpoutSource("TDSyphonSpoutOut", module=mod)
    try:
        assert read_until(src) is not None
        assert src.list_senders() == ["TDSyphonSpoutOut"]
    finally:
        src.close()
    calls = [c for c in world.calls if c[0] == "receiver"]
    assert calls[0][1] == "createOpenGL"
    threads = {t for _, _, t in calls}
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert "getSenderName" not in {m for _, m, _ in calls}  # the int-returning binding bug
    assert calls[-1][1] == "closeOpenGL"


@pytest.mark.parametrize("dxgi,expect_format", [(87, GL_BGRA), (28, GL_RGBA)])
def test_receive_format_follows_sender_and_output_is_rgba(dxgi, expect_format):
    world = World()
    mod = fake_spoutgl(world)
    picture = rgba(seed=dxgi)
    world.publish("cam", picture, dxgi=dxgi)
    src = SpoutSource("cam", module=mod)
    try:
        frame = read_until(src)
        assert np.array_equal(frame, picture)  # red/blue never swapped
        assert mod.receivers[0].formats_requested == [expect_format]
        assert src.bgra == (dxgi == 87) and src.size == (6, 4)
    finally:
        src.close()


def test_unchanged_frame_is_not_read_again():
    world = World()
    mod = fake_spoutgl(world)
    world.publish("cam", rgba())
    src = SpoutSource("cam", module=mod)
    try:
        assert read_until(src) is not None and src.frame_counter == 1
        copies = mod.receivers[0].copies
        assert [src.read() for _ in range(3)] == [None] * 3
        assert mod.receivers[0].copies == copies
        world.publish("cam", rgba(seed=5))
        frame = src.read()
        assert np.array_equal(frame, rgba(seed=5)) and src.frame_counter == 2
        # returned frames are the caller's: the next receive does not overwrite them
        world.publish("cam", rgba(seed=6))
        src.read()
        assert np.array_equal(frame, rgba(seed=5))
    finally:
        src.close()


def test_reconnects_on_resize_and_when_sender_returns():
    world = World()
    mod = fake_spoutgl(world)
    src = SpoutSource("cam", module=mod)
    try:
        assert src.read() is None  # no sender yet
        world.publish("cam", rgba(4, 6))
        assert read_until(src).shape == (4, 6, 4)
        world.publish("cam", rgba(10, 3, seed=2))  # resized
        frame = read_until(src)
        assert frame.shape == (10, 3, 4) and np.array_equal(frame, rgba(10, 3, seed=2))
        del world.senders["cam"]
        assert src.read() is None
        world.publish("cam", rgba(5, 5, seed=3))  # sender restarted
        assert np.array_equal(read_until(src), rgba(5, 5, seed=3))
        assert src.updates == 3
    finally:
        src.close()


def test_frame_counter_without_sender_frame_count():
    world = World()
    mod = fake_spoutgl(world)
    world.publish("cam", rgba(), count=False)
    src = SpoutSource("cam", module=mod)
    try:
        read_until(src)
        world.publish("cam", rgba(seed=1), count=False)
        src.read()
        assert src.frame_counter == 2
    finally:
        src.close()


def test_sink_cpu_path_sends_image_with_positional_args():
    world = World()
    mod = fake_spoutgl(world)
    sink = SpoutSink("vacelive", module=mod)
    try:
        picture = rgba(8, 12)
        sink.send(picture)
        sink.send(torch.from_numpy(rgba(8, 12, seed=1)))
        s = mod.senders[0]
        assert s.name == "vacelive"
        (data, fmt, invert, fbo), _ = s.images
        assert np.array_equal(data, picture) and (fmt, invert, fbo) == (GL_RGBA, False, 0)
        with pytest.raises(ValueError, match="RGBA"):
            sink.send(np.zeros((8, 12, 3), np.uint8))
        # the receiver side sees it upright and in RGBA
        src = SpoutSource("vacelive", module=mod)
        assert np.array_equal(read_until(src), rgba(8, 12, seed=1))
        src.close()
    finally:
        sink.close()
    calls = [c for c in world.calls if c[0] == "sender"]
    assert calls[0][1] == "createOpenGL" and len({t for *_, t in calls}) == 1
    assert [m for _, m, _ in calls[-2:]] == ["releaseSender", "closeOpenGL"]


class FakeTexture:
    made: list["FakeTexture"] = []

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.texture_id = 40 + len(FakeTexture.made)
        self.thread = threading.get_ident()
        self.uploads = []
        self.closed = False
        FakeTexture.made.append(self)

    def upload(self, frame):
        self.uploads.append(frame)

    def close(self):
        self.closed = True


def test_sink_texture_path_uses_send_texture_with_six_args():
    world = World()
    mod = fake_spoutgl(world)
    FakeTexture.made = []
    sink = SpoutSink("out", module=mod, gpu=True, texture_factory=FakeTexture)
    try:
        frame = torch.zeros(48, 64, 4, dtype=torch.uint8)
        sink.send(frame)
        sink.send(frame)
        sink.send(torch.zeros(32, 32, 4, dtype=torch.uint8))  # new size: new texture
        s = mod.senders[0]
        assert s.textures[0] == (40, GL_TEXTURE_2D, 64, 48, False, 0)
        assert s.textures[2] == (41, GL_TEXTURE_2D, 32, 32, False, 0)
        assert len(FakeTexture.made) == 2 and FakeTexture.made[0].closed
        assert FakeTexture.made[0].uploads[0] is frame  # handed over as is: no CPU copy
        owner = {t for k, _, t in world.calls if k == "sender"}
        assert {tex.thread for tex in FakeTexture.made} == owner  # GL work on the Spout thread
        assert not s.images
    finally:
        sink.close()


def test_auto_mode_keeps_cpu_frames_on_the_image_path():
    world = World()
    mod = fake_spoutgl(world)
    FakeTexture.made = []
    sink = SpoutSink("out", module=mod, texture_factory=FakeTexture)
    try:
        sink.send(torch.zeros(8, 8, 4, dtype=torch.uint8))  # CPU tensor: no interop needed
        assert len(mod.senders[0].images) == 1 and not FakeTexture.made
    finally:
        sink.close()


def test_sink_says_whether_it_takes_cuda_frames_without_a_host_copy(monkeypatch):
    """The run loop stages chunks to host memory unless the sink takes CUDA frames (interop)."""
    from vacelive.bridge.transports import gl_interop
    from vacelive.bridge.transports.staging import takes_cuda_frames

    mod = fake_spoutgl(World())
    sinks = [SpoutSink("a", module=mod, gpu=True), SpoutSink("b", module=mod, gpu=False),
             SpoutSink("c", module=mod, texture_factory=FakeTexture), SpoutSink("d", module=mod)]
    try:
        monkeypatch.setattr(gl_interop, "interop_unavailable_reason", lambda: "no EGL here")
        assert [takes_cuda_frames(s) for s in sinks] == [True, False, True, False]
        monkeypatch.setattr(gl_interop, "interop_unavailable_reason", lambda: None)
        assert takes_cuda_frames(sinks[3])
        sinks[3]._interop_failed = "cudaGraphicsGLRegisterImage failed"  # a failed interop: host frames
        assert not takes_cuda_frames(sinks[3])
        assert not takes_cuda_frames(lambda frame: None) and not takes_cuda_frames(object())
    finally:
        for s in sinks:
            s.close()


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows message")
def test_missing_library_names_the_package():
    with pytest.raises(TransportUnavailable, match="pip install SpoutGL"):
        load_spoutgl()


@pytest.mark.spout
def test_real_spoutgl_roundtrip():
    import time

    picture = rgba(64, 96, seed=9)
    picture[..., 3] = 255
    sink = SpoutSink("vacelive-test")
    src = SpoutSource("vacelive-test")
    try:
        frame, deadline = None, time.monotonic() + 10
        while frame is None and time.monotonic() < deadline:
            sink.send(picture)
            time.sleep(0.02)
            frame = src.read()
        assert frame is not None and np.array_equal(frame, picture)
        assert "vacelive-test" in src.list_senders()
    finally:
        src.close()
        sink.close()
