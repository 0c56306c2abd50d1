"""RemoteGenerator: the Generator protocol, served by an EngineServer across the network.

It runs beside TouchDesigner and looks exactly like a local generator to the run loop:

* `step(request)` sends the request (frames raw or JPEG) and blocks until that request's result.
  If the engine goes silent, step() raises EngineUnavailable within `dead_after` seconds (the run
  loop holds its last frame); while the engine is away, step() raises after a short wait, and the
  link reconnects by itself when the engine is back.
* heartbeats: a ping every `heartbeat` s, answered by the engine's I/O thread even while a chunk
  is generating; no message for `dead_after` s = engine dead (the socket is then rebuilt, so no
  stale message queued for the dead engine is ever delivered to the new one).
* state: parameters travel in every request. Reference images are sticky on the engine, so the
  last refs sent are remembered and re-sent to an engine that has not acknowledged them (a new
  or restarted engine); the engine also asks for them (a "resync" reply) if it was restarted
  between two heartbeats.
* latest wins: only the request step() is waiting for is accepted; a late result of an abandoned
  request (step_timeout) is dropped. ZMQ queues are bounded (small high-water marks).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from vacelive.engine.request import ChunkRequest, ChunkResult

from . import wire
from .keys import ClientKeys, load_public_key

log = logging.getLogger(__name__)


class EngineUnavailable(RuntimeError):
    """The engine is unreachable or went silent; the link keeps trying to reconnect."""


class RemoteStepError(RuntimeError):
    """The engine received the request but failed it (bad input, generator exception)."""


def _copy_refs(refs: list[Any]) -> list[Any]:
    return [r.copy() if isinstance(r, np.ndarray) else r.detach().clone() for r in refs]


class RemoteGenerator:
    def __init__(
        self,
        endpoint: str,
        server_public_key: bytes | str | Path | None = None,
        client_key: ClientKeys | str | Path | tuple[bytes, bytes] | None = None,
        *,
        codec: str = "raw",
        jpeg_quality: int = 90,
        device: str = "cpu",
        engine_decode_device: str = "cpu",
        heartbeat: float = 0.25,
        dead_after: float = 2.0,
        step_timeout: float | None = None,
        connect_timeout: float | None = 5.0,
        width: int = 0,
        height: int = 0,
        context: zmq.Context | None = None,
    ) -> None:
        """
        endpoint: tcp://HOST:PORT of the EngineServer.
        server_public_key / client_key: CURVE keys (both or neither). client_key may be the relay
            folder written by `vacelive keys` (it also holds engine.key, so server_public_key can
            be omitted), a NAME.key_secret file, or a (public, secret) pair.
        codec: "raw" or "jpeg" for frames both ways (masks always raw).
        device: where result frames land ("cuda" decodes JPEG on the GPU when torchvision is there).
        engine_decode_device: where the engine puts decoded request arrays ("cuda" on a GPU box).
        width/height: size hints until the engine has described itself.
        """
        if codec not in wire.CODECS:
            raise ValueError(f"codec must be one of {wire.CODECS}, got {codec!r}")
        self.endpoint = endpoint
        self.codec, self.jpeg_quality = codec, int(jpeg_quality)
        self.device, self.engine_decode_device = device, engine_decode_device
        self.heartbeat, self.dead_after, self.step_timeout = heartbeat, dead_after, step_timeout
        self._hint = (int(width), int(height))
        self._keys: ClientKeys | None = None
        self._server_key: bytes | None = None
        if client_key is not None or server_public_key is not None:
            if client_key is None:
                raise ValueError("CURVE needs the relay's own keypair too (client_key=KEYS/relay)")
            self._keys = ClientKeys.load(client_key)
            self._server_key = load_public_key(server_public_key) if server_public_key is not None \
                else self._keys.server_public
            if self._server_key is None:
                raise ValueError("no engine public key: pass server_public_key or a relay folder with engine.key")

        self._ctx = context or zmq.Context.instance()
        self._pipe_addr = f"inproc://remote-generator-{uuid.uuid4().hex}"
        self._pipe = self._ctx.socket(zmq.PAIR)  # caller side, used under _step_lock
        self._pipe.linger = 0
        self._pipe.bind(self._pipe_addr)
        self._step_lock = threading.Lock()
        self._await_lock = threading.Lock()
        self._awaiting: tuple[int, Future] | None = None
        self._ids = itertools.count(1)
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._engine_id: str | None = None
        self._describe: dict[str, Any] = {}
        self._next_frames = 12
        self._last_refs: list[Any] | None = None
        self._refs_delivered_to: str | None = None
        self._down_since: float | None = time.monotonic()
        self.stats = {"steps": 0, "stale_dropped": 0, "reconnects": 0, "rtt_ms": None}
        self._thread = threading.Thread(target=self._io_main, name="remote-generator-io", daemon=True)
        self._thread.start()
        if connect_timeout and not self.wait_ready(connect_timeout):
            log.warning("engine at %s not reachable yet; will keep trying", endpoint)

    # -- Generator protocol -----------------------------------------------------------------------
    @property
    def width(self) -> int:
        return int(self._describe.get("width") or self._hint[0])

    @property
    def height(self) -> int:
        return int(self._describe.get("height") or self._hint[1])

    @property
    def next_chunk_frames(self) -> int:
        return self._next_frames

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the engine answers (True) or timeout (False)."""
        return self._connected.wait(timeout)

    def describe(self) -> dict[str, Any]:
        d = dict(self._describe)
        d["link"] = {
            "endpoint": self.endpoint, "codec": self.codec, "connected": self.connected,
            "engine_id": self._engine_id, "auth": "curve" if self._keys else "none",
            "rtt_ms": self.stats["rtt_ms"],
        }
        return d

    def step(self, request: ChunkRequest) -> ChunkResult:
        with self._step_lock:
            self._ensure_connected()
            if request.refs is not None:
                self._last_refs = _copy_refs(request.refs)
                self._refs_delivered_to = None
            carrying = request.refs is not None
            send = request
            if not carrying and self._last_refs and self._refs_delivered_to != self._engine_id:
                send, carrying = dataclasses.replace(request, refs=self._last_refs), True
            for _ in range(2):
                header, blobs, elapsed = self._roundtrip("step", self._step_fields(send, carrying), self.step_timeout)
                if header["kind"] != "resync":
                    break
                log.info("engine %s asks for the full state: re-sending references", header.get("engine_id"))
                send, carrying = dataclasses.replace(request, refs=self._last_refs), True
            if header["kind"] == "error":
                raise RemoteStepError(f"engine: {header.get('message')}")
            if header["kind"] != "result":
                raise RemoteStepError(f"unexpected reply {header['kind']!r}")
            if carrying:
                self._refs_delivered_to = header.get("engine_id")
            t0 = time.perf_counter()
            result = wire.decode_result(header, blobs, self.device)
            result.timings_ms["link_roundtrip"] = elapsed * 1e3
            result.timings_ms["link_client_decode"] = (time.perf_counter() - t0) * 1e3
            if "engine_ms" in header:
                result.timings_ms["link_transfer"] = max(0.0, elapsed * 1e3 - float(header["engine_ms"]))
            self._next_frames = int(header.get("next_chunk_frames", self._next_frames))
            self.stats["steps"] += 1
            return result

    def reset(self) -> None:
        with self._step_lock:
            self._ensure_connected()
            header, _, _ = self._roundtrip("reset", {}, max(self.step_timeout or 0.0, 60.0))
            if header["kind"] == "error":
                raise RemoteStepError(f"engine: {header.get('message')}")
            self._next_frames = int(header.get("next_chunk_frames", self._next_frames))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._pipe.close(linger=0)
        self._fail_awaiting(EngineUnavailable("link closed"))

    def __enter__(self) -> "RemoteGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- caller side helpers ----------------------------------------------------------------------------
    def _ensure_connected(self) -> None:
        if self._connected.wait(min(self.heartbeat * 2, 0.5)):
            return
        down = time.monotonic() - (self._down_since or time.monotonic())
        raise EngineUnavailable(f"engine at {self.endpoint} unreachable for {down:.1f} s; reconnecting")

    def _step_fields(self, request: ChunkRequest, carrying: bool) -> tuple[dict, list[Any]]:
        packed, blobs = wire.encode_request(request, self.codec, self.jpeg_quality)
        fields = {
            "request": packed,
            "result_codec": self.codec,
            "quality": self.jpeg_quality,
            "engine_id": self._engine_id,
            "refs_held": bool(self._last_refs) and not carrying,
            "decode_device": self.engine_decode_device,
        }
        return fields, blobs

    def _roundtrip(self, kind: str, fields_blobs: Any, timeout: float | None) -> tuple[dict, list[Any], float]:
        fields, blobs = fields_blobs if isinstance(fields_blobs, tuple) else (fields_blobs, [])
        rid = next(self._ids)
        fut: Future = Future()
        with self._await_lock:
            self._awaiting = (rid, fut)
        t0 = time.perf_counter()
        self._pipe.send_multipart(wire.encode(kind, {"id": rid, **fields}, blobs), copy=False)
        try:
            header, reply_blobs = fut.result(timeout=timeout)
        except FutureTimeout:
            raise EngineUnavailable(f"no reply from {self.endpoint} within {timeout:.1f} s") from None
        finally:
            with self._await_lock:
                if self._awaiting is not None and self._awaiting[0] == rid:
                    self._awaiting = None
        return header, reply_blobs, time.perf_counter() - t0

    def _fail_awaiting(self, exc: BaseException) -> None:
        with self._await_lock:
            pending, self._awaiting = self._awaiting, None
        if pending is not None and not pending[1].done():
            pending[1].set_exception(exc)

    # -- I/O thread ---------------------------------------------------------------------------------------
    def _new_socket(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 4
        sock.rcvhwm = 8
        sock.immediate = 1  # queue nothing on a connection that is not up
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = 1000
        if self._keys is not None:
            sock.curve_publickey = self._keys.public
            sock.curve_secretkey = self._keys.secret
            sock.curve_serverkey = self._server_key
        sock.connect(self.endpoint)
        return sock

    def _io_main(self) -> None:
        pipe = self._ctx.socket(zmq.PAIR)
        pipe.linger = 0
        pipe.connect(self._pipe_addr)
        sock = self._new_socket()
        poller = zmq.Poller()
        poller.register(pipe, zmq.POLLIN)
        poller.register(sock, zmq.POLLIN)
        last_rx = time.monotonic()
        next_ping = 0.0
        ping_ids = itertools.count(1)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout_ms = max(1, int(1000 * min(self.heartbeat, max(0.0, next_ping - now))))
                events = dict(poller.poll(timeout_ms))
                now = time.monotonic()
                if pipe in events:
                    parts = pipe.recv_multipart(copy=False)
                    try:
                        sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        self._fail_awaiting(EngineUnavailable(f"engine at {self.endpoint} not connected"))
                if sock in events:
                    while True:
                        try:
                            parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        last_rx = now
                        self._on_reply(parts)
                if now >= next_ping:
                    next_ping = now + self.heartbeat
                    try:
                        sock.send_multipart(wire.encode("ping", {"id": next(ping_ids), "t": now}), flags=zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                if self._connected.is_set() and now - last_rx > self.dead_after:
                    self._connected.clear()
                    self._down_since = now
                    log.warning("engine at %s silent for %.1f s: marked down, reconnecting",
                                self.endpoint, now - last_rx)
                    self._fail_awaiting(EngineUnavailable(
                        f"engine at {self.endpoint} went silent (no heartbeat for {self.dead_after:.1f} s)"))
                    # A fresh socket drops whatever was queued for the dead peer.
                    poller.unregister(sock)
                    sock.close(linger=0)
                    sock = self._new_socket()
                    poller.register(sock, zmq.POLLIN)
                    self.stats["reconnects"] += 1
        finally:
            sock.close(linger=0)
            pipe.close(linger=0)

    def _on_reply(self, parts: list[Any]) -> None:
        try:
            header, blobs = wire.decode(parts)
        except wire.WireError as exc:
            log.warning("bad message from engine: %s", exc)
            return
        engine_id = header.get("engine_id")
        if engine_id and engine_id != self._engine_id:
            if self._engine_id is not None:
                log.warning("engine restarted (%s -> %s): its stream state starts over", self._engine_id, engine_id)
            self._engine_id = engine_id
        kind = header["kind"]
        if kind == "pong":
            if isinstance(header.get("describe"), dict):
                self._describe = header["describe"]
            self._next_frames = int(header.get("next_chunk_frames", self._next_frames))
            t = header.get("t")
            if isinstance(t, (int, float)):
                self.stats["rtt_ms"] = (time.monotonic() - t) * 1e3
            if not self._connected.is_set():
                log.info("engine %s reachable at %s", engine_id, self.endpoint)
                self._down_since = None
                self._connected.set()
            return
        with self._await_lock:
            pending = self._awaiting
            if pending is not None and header.get("id") == pending[0]:
                self._awaiting = None
            else:
                pending = None
        if pending is None:
            self.stats["stale_dropped"] += 1  # a result nobody waits for any more: drop it
            return
        if not pending[1].done():
            pending[1].set_result((header, blobs))
