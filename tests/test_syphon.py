"""Syphon adapters against a stand-in syphon module that follows syphon-python 0.2.0's documented
API (github.com/cansik/syphon-python): directory discovery, Metal client/server, numpy texture helpers."""
from __future__ import annotations

import sys
import threading
import types

import numpy as np
import pytest

from vacelive.bridge.transports.base import TransportUnavailable
from vacelive.bridge.transports.syphon import SyphonSink, SyphonSource, load_syphon

RGBA8, BGRA8 = 70, 80


class Texture:
    def __init__(self, w, h, fmt=RGBA8, pixels=None):
        self._w, self._h, self._fmt = w, h, fmt
        self.pixels = np.zeros((h, w, 4), np.uint8) if pixels is None else pixels

    def width(self):
        return self._w

    def height(self):
        return self._h

    def pixelFormat(self):
        return self._fmt


class Desc:
    def __init__(self, name, app_name):
        self.uuid, self.name, self.app_name, self.raw = f"uuid-{name}", name, app_name, None


def fake_syphon():
    mod = types.SimpleNamespace(__name__="syphon")
    mod.published = {}  # server name -> list of (pixels as stored, texture format, flipped)
    mod.live = {}  # server name -> Desc
    mod.threads = set()
    mod.run_loop_pumps = 0

    def note():
        mod.threads.add(threading.get_ident())

    class SyphonServerDirectory:
        def __init__(self):
            note()
            self.run_loop_interval = 1.0

        @property
        def servers(self):
            self.update_run_loop()
            return list(mod.live.values())

        def update_run_loop(self):
            note()
            assert self.run_loop_interval <= 0.01, "a 1 s run-loop pump would stall every read"
            mod.run_loop_pumps += 1

    class SyphonMetalClient:
        def __init__(self, desc):
            note()
            self.desc, self.seen = desc, 0

        @property
        def is_valid(self):
            return self.desc.name in mod.live

        @property
        def has_new_frame(self):
            return len(mod.published.get(self.desc.name, [])) > self.seen

        @property
        def new_frame_image(self):
            note()
            frames = mod.published[self.desc.name]
            self.seen = len(frames)
            pixels, fmt, _ = frames[-1]
            return Texture(pixels.shape[1], pixels.shape[0], fmt, pixels)

        def stop(self):
            note()

    class SyphonMetalServer:
        def __init__(self, name, device=None, command_queue=None, is_private=False):
            note()
            self.name, self.device, self.has_clients = name, "mtl-device", False
            mod.live[name] = Desc(name, "vacelive")
            mod.published.setdefault(name, [])

        def publish_frame_texture(self, texture, region=None, size=None, is_flipped=False,
                                  command_buffer=None, auto_commit=True):
            note()
            mod.published[self.name].append((texture.pixels.copy(), texture.pixelFormat(), is_flipped))

        def stop(self):
            note()
            mod.live.pop(self.name, None)

    def copy_mtl_texture_to_image(texture, out=None):
        return texture.pixels.copy()

    def copy_image_to_mtl_texture(image, texture):
        assert image.shape == texture.pixels.shape
        texture.pixels[...] = image

    def create_mtl_texture(device, width, height, pixel_format=RGBA8):
        assert device == "mtl-device"
        return Texture(width, height, pixel_format)

    mod.SyphonServerDirectory = SyphonServerDirectory
    mod.SyphonMetalClient = SyphonMetalClient
    mod.SyphonMetalServer = SyphonMetalServer
    mod.utils = types.SimpleNamespace(
        numpy=types.SimpleNamespace(copy_mtl_texture_to_image=copy_mtl_texture_to_image,
                                    copy_image_to_mtl_texture=copy_image_to_mtl_texture),
        raw=types.SimpleNamespace(create_mtl_texture=create_mtl_texture),
    )
    return mod


def publish_external(mod, name, rgba, fmt=BGRA8, app="Resolume"):
    """Another app's server: stores BGRA when fmt is BGRA8 (Syphon's usual IOSurface format)."""
    mod.live[name] = Desc(name, app)
    pixels = rgba[..., [2, 1, 0, 3]] if fmt == BGRA8 else rgba
    mod.published.setdefault(name, []).append((pixels.copy(), fmt, False))


def rgba(h=4, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)


@pytest.mark.parametrize("fmt", [BGRA8, RGBA8])
def test_client_discovers_swizzles_and_reads_only_new_frames(fmt):
    mod = fake_syphon()
    publish_external(mod, "Composition", rgba(), fmt=fmt)
    src = SyphonSource(app_name="Resolume", module=mod, rediscover_every=0)
    try:
        frame = src.read()
        assert np.array_equal(frame, rgba()) and src.size == (6, 4) and src.frame_counter == 1
        assert src.read() is None  # has_new_frame is False: nothing copied
        publish_external(mod, "Composition", rgba(seed=1), fmt=fmt)
        assert np.array_equal(src.read(), rgba(seed=1))
        assert src.list_servers() == [{"uuid": "uuid-Composition", "name": "Composition", "app_name": "Resolume"}]
    finally:
        src.close()
    assert len(mod.threads) == 1 and threading.get_ident() not in mod.threads


def test_client_waits_for_server_and_reconnects_after_it_quits():
    mod = fake_syphon()
    src = SyphonSource("TDSyphonOut", module=mod, rediscover_every=0)
    try:
        assert src.read() is None
        publish_external(mod, "Other", rgba(seed=4))  # not ours
        assert src.read() is None
        publish_external(mod, "TDSyphonOut", rgba(seed=2))
        assert np.array_equal(src.read(), rgba(seed=2))
        del mod.live["TDSyphonOut"]
        mod.published["TDSyphonOut"] = []
        assert src.read() is None
        publish_external(mod, "TDSyphonOut", rgba(8, 8, seed=3))
        assert np.array_equal(src.read(), rgba(8, 8, seed=3)) and src.connects == 2
    finally:
        src.close()


def test_flip_option():
    mod = fake_syphon()
    publish_external(mod, "S", rgba())
    src = SyphonSource("S", module=mod, flip_vertical=True)
    try:
        assert np.array_equal(src.read(), rgba()[::-1])
    finally:
        src.close()


def test_server_publishes_rgba_texture_flipped_and_recreates_on_resize():
    mod = fake_syphon()
    sink = SyphonSink("vacelive", module=mod)
    try:
        sink.send(rgba(4, 6))
        sink.send(rgba(4, 6, seed=1))
        sink.send(rgba(2, 3, seed=2))
        pubs = mod.published["vacelive"]
        assert [p[2] for p in pubs] == [True, True, True]  # is_flipped for top-first numpy rows
        assert [p[1] for p in pubs] == [RGBA8] * 3
        assert np.array_equal(pubs[1][0], rgba(4, 6, seed=1)) and pubs[2][0].shape == (2, 3, 4)
        src = SyphonSource("vacelive", module=mod)
        assert np.array_equal(src.read(), rgba(2, 3, seed=2))
        src.close()
    finally:
        sink.close()
    assert "vacelive" not in mod.live  # stop() retired the server


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS message")
def test_missing_library_names_the_package():
    with pytest.raises(TransportUnavailable, match="pip install syphon-python"):
        load_syphon()


@pytest.mark.syphon
def test_real_syphon_roundtrip():
    import time

    picture = rgba(64, 96, seed=9)
    picture[..., 3] = 255
    sink = SyphonSink("vacelive-test")
    src = SyphonSource("vacelive-test")
    try:
        frame, deadline = None, time.monotonic() + 10
        while frame is None and time.monotonic() < deadline:
            sink.send(picture)
            time.sleep(0.05)
            frame = src.read()
        assert frame is not None
        got = frame if np.array_equal(frame, picture) else frame[::-1]
        assert np.array_equal(got, picture), "colours differ (BGRA handling) on the real library"
    finally:
        src.close()
        sink.close()
