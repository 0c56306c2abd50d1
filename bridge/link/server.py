"""EngineServer: serves a Generator over ZMQ on the GPU box (the other end is RemoteGenerator).

Threads and sockets:

* the I/O thread owns the ROUTER socket. It answers pings at once (so heartbeats flow while a
  chunk is generating), tracks each relay's last ping, and hands step requests to the worker;
* the worker thread runs generator.reset()/step() and encoding, and returns replies to the I/O
  thread through an inproc PAIR socket (ZMQ sockets are single-threaded);
* latest wins: a step request that arrives while another is still waiting *replaces* it (the
  replaced one is dropped, never answered: its relay has moved on), so there is never a backlog.
  Send queues are bounded by small high-water marks.

Security: the endpoint must be loopback (tcp://127.x, localhost, [::1]), ipc:// or inproc://
unless CURVE keys are given; then the ThreadAuthenticator admits only the public keys in the
authorized folder, and every refused handshake is logged with its reason.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import zmq
from zmq.utils.monitor import recv_monitor_message

from vacelive.engine.request import ChunkRequest, Generator

from . import wire
from .keys import EngineKeys

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def is_local_endpoint(endpoint: str) -> bool:
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = urlsplit(endpoint).hostname or endpoint.split("://", 1)[1].rsplit(":", 1)[0]
    host = host.strip("[]")
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class _ZapLog:
    """Logger handed to zmq's authenticator: its DENIED lines become warnings with the address."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._address = "?"

    def debug(self, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        if msg.startswith("version:") and len(args) >= 4:
            self._address = args[3]
        if text.startswith("DENIED"):
            self._log.warning("refused relay at %s: %s (its public key is not in the authorized "
                              "folder; run `vacelive keys` and copy the relay folder)", self._address, text)
        else:
            self._log.debug("zap: %s", text)

    def info(self, msg: str, *args: Any) -> None:
        self._log.info("zap: " + msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._log.warning("zap: " + msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self._log.error("zap: " + msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        self._log.exception("zap: " + msg, *args)


_HANDSHAKE_REASONS = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        "the peer does not use CURVE (a relay started without keys?)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        "CURVE handshake failed (the relay has a different engine public key?)",
}


class EngineServer:
    def __init__(
        self,
        generator: Generator,
        endpoint: str = "tcp://127.0.0.1:5555",
        keys: EngineKeys | str | os.PathLike | None = None,
        *,
        client_timeout: float = 3.0,
        decode_device: str | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        """keys: EngineKeys or the engine folder written by `vacelive keys` (DIR/engine).
        decode_device: where request arrays are decoded ("cuda": JPEG decodes on the GPU and
        tensors arrive there); None lets each relay ask (default "cpu").
        Raises ValueError for a network-reachable endpoint without keys."""
        self.generator = generator
        self.keys = EngineKeys.from_dir(keys) if isinstance(keys, (str, os.PathLike)) else keys
        if self.keys is None and not is_local_endpoint(endpoint):
            raise ValueError(
                f"{endpoint} is reachable from the network, so the engine needs CURVE keys: run "
                "`vacelive keys --dir KEYS` and pass the KEYS/engine folder (or bind tcp://127.0.0.1)")
        self.requested_endpoint = endpoint
        self.endpoint = endpoint  # resolved after bind (port 0 / wildcard)
        self.client_timeout = client_timeout
        self.decode_device = decode_device
        self._describe_cache: tuple[float, dict] | None = None
        self.engine_id = uuid.uuid4().hex[:12]
        self._ctx = context or zmq.Context.instance()
        self._auth = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._pending: tuple[bytes, dict, list[Any]] | None = None
        self._resets: list[tuple[bytes, int]] = []
        self._busy = False
        self._clients: dict[bytes, float] = {}
        self._io_thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.stats = {"steps": 0, "dropped_requests": 0, "errors": 0, "refused_handshakes": 0}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "EngineServer":
        """Bind and serve on background threads; returns once bound (raises if binding failed)."""
        self._io_thread = threading.Thread(target=self._io_main, name="engine-io", daemon=True)
        self._worker = threading.Thread(target=self._worker_main, name="engine-worker", daemon=True)
        self._io_thread.start()
        self._ready.wait(10.0)
        if self._start_error is not None:
            raise self._start_error
        self._worker.start()
        return self

    def serve_forever(self) -> None:
        """Start (if needed) and block until stop() (from a signal handler or another thread)."""
        if self._io_thread is None:
            self.start()
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in (self._worker, self._io_thread):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=5.0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def __enter__(self) -> "EngineServer":
        return self.start() if self._io_thread is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- I/O thread ---------------------------------------------------------------------------------
    def _bind(self) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.sndhwm = 8
        sock.rcvhwm = 8
        sock.router_handover = 1  # a reconnecting relay with the same identity takes over
        if self.keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self._ctx, log=_ZapLog(log))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(self.keys.authorized_dir))
            sock.curve_secretkey = self.keys.secret
            sock.curve_publickey = self.keys.public
            sock.curve_server = True
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.bind(self.requested_endpoint)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        pipe = self._ctx.socket(zmq.PAIR)
        pipe.linger = 0
        pipe.bind(f"inproc://engine-replies-{self.engine_id}")
        return sock, monitor, pipe

    def _io_main(self) -> None:
        try:
            sock, monitor, pipe = self._bind()
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        log.info("engine %s serving %s on %s (%s)", self.engine_id, _describe_name(self.generator),
                 self.endpoint, "CURVE auth" if self.keys else "loopback, no auth")
        poller = zmq.Poller()
        for s in (sock, monitor, pipe):
            poller.register(s, zmq.POLLIN)
        next_sweep = time.monotonic() + 0.5
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if sock in events:
                    self._on_message(sock)
                if pipe in events:
                    parts = pipe.recv_multipart(copy=False)
                    try:
                        sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        log.debug("reply dropped: relay queue full")
                if monitor in events:
                    self._on_monitor(monitor)
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + 0.5
                    self._sweep_clients(now)
        finally:
            sock.disable_monitor()
            for s in (monitor, pipe, sock):
                s.close(linger=0)

    def _on_monitor(self, monitor: zmq.Socket) -> None:
        evt = recv_monitor_message(monitor)
        event, value = evt["event"], evt["value"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            log.debug("handshake ok on %s", evt["endpoint"])
            return
        self.stats["refused_handshakes"] += 1
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            log.warning("refused a relay: authentication denied (ZAP status %s)", value)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            reason = _HANDSHAKE_REASONS.get(value, f"protocol error {value:#x}")
            log.warning("refused a relay: %s", reason)
        else:
            log.warning("refused a relay: handshake failed (no detail)")

    def _reply(self, sock: zmq.Socket, identity: bytes, kind: str, **fields: Any) -> None:
        try:
            sock.send_multipart([identity] + wire.encode(kind, {"engine_id": self.engine_id, **fields}),
                                flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _on_message(self, sock: zmq.Socket) -> None:
        parts = sock.recv_multipart(copy=False)
        identity = parts[0].bytes
        try:
            header, blobs = wire.decode(parts[1:])
        except wire.WireError as exc:
            self.stats["errors"] += 1
            log.warning("bad message from a relay: %s", exc)
            self._reply(sock, identity, "error", id=None, message=f"bad message: {exc}")
            return
        now = time.monotonic()
        if identity not in self._clients:
            log.info("relay connected (%s)", identity.hex()[:8])
        self._clients[identity] = now
        kind = header["kind"]
        if kind == "ping":
            self._reply(sock, identity, "pong", id=header.get("id"), t=header.get("t"),
                        busy=self._busy, next_chunk_frames=_next_frames(self.generator),
                        describe=self._describe(now))
        elif kind == "step":
            if (header.get("refs_held") and header.get("engine_id") != self.engine_id):
                # The relay holds sticky references this engine never received (it restarted).
                self._reply(sock, identity, "resync", id=header.get("id"))
                return
            with self._cond:
                if self._pending is not None:
                    self.stats["dropped_requests"] += 1
                self._pending = (identity, header, blobs)
                self._cond.notify()
        elif kind == "reset":
            with self._cond:
                self._resets.append((identity, header.get("id")))
                self._cond.notify()
        else:
            self._reply(sock, identity, "error", id=header.get("id"), message=f"unknown kind {kind!r}")

    def _describe(self, now: float) -> dict:
        """generator.describe(), refreshed at most once a second (pongs go out 4x a second)."""
        if self._describe_cache is None or now - self._describe_cache[0] > 1.0:
            self._describe_cache = (now, _safe_describe(self.generator))
        return self._describe_cache[1]

    def _sweep_clients(self, now: float) -> None:
        for identity, seen in list(self._clients.items()):
            if now - seen > self.client_timeout:
                del self._clients[identity]
                log.warning("relay %s silent for %.1f s: gone", identity.hex()[:8], now - seen)
                with self._cond:
                    if self._pending is not None and self._pending[0] == identity:
                        self._pending = None
                        self.stats["dropped_requests"] += 1

    # -- worker thread ------------------------------------------------------------------------------
    def _worker_main(self) -> None:
        pipe = self._ctx.socket(zmq.PAIR)
        pipe.linger = 0
        pipe.connect(f"inproc://engine-replies-{self.engine_id}")
        try:
            while not self._stop.is_set():
                with self._cond:
                    while not self._stop.is_set() and self._pending is None and not self._resets:
                        self._cond.wait(0.5)
                    if self._stop.is_set():
                        return
                    resets, self._resets = self._resets, []
                    job = None if resets else self._pending
                    if job is not None:
                        self._pending = None
                    self._busy = True
                try:
                    if resets:
                        self._do_reset(pipe, resets)
                    if job is not None:
                        self._do_step(pipe, *job)
                finally:
                    self._busy = False
        finally:
            pipe.close(linger=0)

    def _send(self, pipe: zmq.Socket, identity: bytes, kind: str, fields: dict, blobs: list | None = None) -> None:
        parts = [identity] + wire.encode(kind, {"engine_id": self.engine_id, **fields}, blobs)
        pipe.send_multipart(parts, copy=False)

    def _do_reset(self, pipe: zmq.Socket, resets: list[tuple[bytes, int]]) -> None:
        try:
            self.generator.reset()
            for identity, rid in resets:
                self._send(pipe, identity, "reset_ok", {"id": rid, "next_chunk_frames": _next_frames(self.generator)})
        except Exception as exc:
            log.exception("generator.reset() failed")
            for identity, rid in resets:
                self._send(pipe, identity, "error", {"id": rid, "message": f"reset failed: {type(exc).__name__}: {exc}"})

    def _do_step(self, pipe: zmq.Socket, identity: bytes, header: dict, blobs: list[Any]) -> None:
        rid = header.get("id")
        t0 = time.perf_counter()
        try:
            device = str(self.decode_device or header.get("decode_device") or "cpu")
            request = wire.unpack_value(header.get("request"), blobs, device)
            if not isinstance(request, ChunkRequest):
                raise wire.WireError("step without a ChunkRequest")
        except wire.WireError as exc:
            self.stats["errors"] += 1
            log.warning("bad step request: %s", exc)
            self._send(pipe, identity, "error", {"id": rid, "message": f"bad request: {exc}"})
            return
        t1 = time.perf_counter()
        try:
            result = self.generator.step(request)
        except Exception as exc:  # reported to the relay, which holds its last frame
            self.stats["errors"] += 1
            log.exception("generator.step() failed")
            self._send(pipe, identity, "error", {"id": rid, "message": f"step failed: {type(exc).__name__}: {exc}"})
            return
        t2 = time.perf_counter()
        codec = header.get("result_codec", "raw")
        codec = codec if codec in wire.CODECS else "raw"
        fields, out_blobs = wire.encode_result(result, codec, int(header.get("quality", 90)))
        t3 = time.perf_counter()
        fields["timings_ms"].update({"link_decode": (t1 - t0) * 1e3, "link_encode": (t3 - t2) * 1e3})
        fields.update(id=rid, next_chunk_frames=_next_frames(self.generator), engine_ms=(t3 - t0) * 1e3)
        self.stats["steps"] += 1
        self._send(pipe, identity, "result", fields, out_blobs)


def _next_frames(generator: Generator) -> int:
    try:
        return int(generator.next_chunk_frames)
    except Exception:
        return 12


def _safe_describe(generator: Generator) -> dict:
    try:
        d = generator.describe()
        d = dict(d)
    except Exception as exc:
        d = {"describe_error": str(exc)}
    d.setdefault("width", getattr(generator, "width", 0))
    d.setdefault("height", getattr(generator, "height", 0))
    # JSON-safe: stringify anything exotic
    return {str(k): v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in d.items()}


def _describe_name(generator: Generator) -> str:
    return str(_safe_describe(generator).get("pipeline", type(generator).__name__))
