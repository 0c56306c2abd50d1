"""Syphon (macOS) through syphon-python: a Metal client source and a Metal server sink.

* discovery: SyphonServerDirectory().servers (SyphonServerDescription: uuid, name, app_name);
  the directory's NSRunLoop is pumped on the adapter's own thread (update_run_loop with a 1 ms
  interval, not the 1 s default, so a read never stalls);
* client: SyphonMetalClient(description); has_new_frame gates every read (no re-read of an
  unchanged frame); new_frame_image is an MTLTexture; copy_mtl_texture_to_image copies it out.
  BGRA textures (MTLPixelFormatBGRA8Unorm 80/81, Syphon's usual format) are swizzled to RGBA;
  `flip_vertical=True` flips a source that arrives upside down;
* an invalid client (server quit) is dropped and the server is looked up again (at most every
  `rediscover_every` seconds), so a restarted sender is picked up by itself;
* server: SyphonMetalServer(name); each frame is copied into an RGBA8 MTLTexture (re-created on a
  size change) and published with is_flipped=`flipped` (True by default: numpy rows are top-first,
  the convention Daydream Scope ships with; set False if receivers show it upside down).

Metal/ObjC objects live on one OwnerThread, like the GL context of the Spout adapter.
"""
from __future__ import annotations

import importlib
import logging
import time
from typing import Any

import numpy as np

from .base import BGRA_TO_RGBA, FrameSink, platform_module
from .owner_thread import OwnedAdapter, OwnedSource
from .staging import HostStager

log = logging.getLogger(__name__)

MTL_BGRA_FORMATS = {80, 81}  # MTLPixelFormatBGRA8Unorm, BGRA8Unorm_sRGB


def load_syphon(module: Any = None) -> Any:
    """The syphon module (or an injected stand-in with the same API)."""
    return platform_module(module, "darwin", "syphon", "pip install syphon-python", "macOS 12+",
                           "Syphon exists only on macOS; elsewhere use the shared-memory transport "
                           "(shm). On macOS: pip install syphon-python")


def _sub(module: Any, path: str) -> Any:
    """module.utils.numpy etc.: an attribute of an injected stand-in, or an import of the package."""
    obj = module
    try:
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj
    except AttributeError:
        return importlib.import_module(f"{module.__name__}.{path}")


class SyphonSource(OwnedSource):
    def __init__(self, server_name: str = "", app_name: str = "", module: Any = None,
                 flip_vertical: bool = False, rediscover_every: float = 0.5, call_timeout: float = 5.0) -> None:
        """server_name / app_name: match a server (either may be ""); both "" = the first server."""
        self._mod = load_syphon(module)
        self._np_utils = _sub(self._mod, "utils.numpy")
        self.name = server_name or app_name
        self.server_name, self.app_name = server_name, app_name
        self.flip_vertical = flip_vertical
        self.rediscover_every = rediscover_every
        self.call_timeout = call_timeout
        self._directory: Any = None
        self._client: Any = None
        self._server: Any = None
        self._next_lookup = 0.0
        self.connects = 0
        self._start_owner(f"syphon-recv:{self.name or 'first'}")

    def _open(self) -> None:
        self._directory = self._mod.SyphonServerDirectory()
        self._directory.run_loop_interval = 0.001

    def list_servers(self) -> list[dict[str, str]]:
        def servers() -> list[dict[str, str]]:
            return [{"uuid": s.uuid, "name": s.name, "app_name": s.app_name} for s in self._directory.servers]

        return self._call(servers)

    def _matches(self, desc: Any) -> bool:
        return (not self.server_name or desc.name == self.server_name) and \
               (not self.app_name or desc.app_name == self.app_name)

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._next_lookup:
            return False
        self._next_lookup = now + self.rediscover_every
        for desc in self._directory.servers:  # .servers pumps the run loop
            if self._matches(desc):
                self._client = self._mod.SyphonMetalClient(desc)
                self._server = desc
                self.connects += 1
                log.info("syphon: receiving %s / %s", desc.app_name, desc.name)
                return True
        return False

    def read(self) -> np.ndarray | None:
        return self._call(self._read)

    def _read(self) -> np.ndarray | None:
        if self._client is not None and not self._client.is_valid:
            log.info("syphon: server %s went away", getattr(self._server, "name", "?"))
            self._client.stop()
            self._client = None
        if self._client is None and not self._connect():
            return None
        self._directory.update_run_loop()
        if not self._client.has_new_frame:
            return None
        texture = self._client.new_frame_image
        if texture is None:
            return None
        image = np.asarray(self._np_utils.copy_mtl_texture_to_image(texture))
        self._size = (int(texture.width()), int(texture.height()))
        if int(texture.pixelFormat()) in MTL_BGRA_FORMATS:
            image = image[..., BGRA_TO_RGBA]
        if self.flip_vertical:
            image = image[::-1]
        self._counter += 1
        return np.ascontiguousarray(image)

    def _release(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client = None


class SyphonSink(OwnedAdapter, FrameSink):
    def __init__(self, name: str = "vacelive", module: Any = None, flipped: bool = True,
                 call_timeout: float = 5.0) -> None:
        self._mod = load_syphon(module)
        self._np_utils = _sub(self._mod, "utils.numpy")
        self._raw_utils = _sub(self._mod, "utils.raw")
        self.name = name
        self.flipped = flipped
        self.call_timeout = call_timeout
        self._server: Any = None
        self._texture: Any = None
        self._texture_size: tuple[int, int] | None = None
        self._stager = HostStager()
        self.frames_sent = 0
        self._start_owner(f"syphon-send:{name}")

    def _open(self) -> None:
        self._server = self._mod.SyphonMetalServer(self.name)

    @property
    def has_clients(self) -> bool:
        return bool(self._call(lambda: self._server.has_clients))

    def send(self, frame: Any) -> None:
        pixels = self._stager.to_numpy(frame)  # CUDA frames: pinned, non_blocking D2H (no MPS path yet)
        self._call(self._publish, pixels)

    def _publish(self, pixels: np.ndarray) -> None:
        h, w = pixels.shape[:2]
        if self._texture_size != (w, h):
            self._texture = self._raw_utils.create_mtl_texture(self._server.device, w, h)
            self._texture_size = (w, h)
        self._np_utils.copy_image_to_mtl_texture(pixels, self._texture)
        self._server.publish_frame_texture(self._texture, is_flipped=self.flipped)
        self.frames_sent += 1

    def _release(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
