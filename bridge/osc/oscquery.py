"""OSCQuery (Vidvox OSCQueryProposal): the HTTP JSON namespace, the WebSocket LISTEN extension
and zeroconf advertisement, so OSCQuery clients (TouchDesigner, Chataigne, Vezér, ossia score)
find vacelive and mirror every parameter.

One TCP port serves both, as the proposal expects: the `websockets` library's threaded server
answers a WebSocket upgrade with a WebSocket and any other GET with JSON (its `process_request`
hook), so there is no hand-written HTTP or WebSocket framing here.

GET /                 → the whole tree (FULL_PATH, CONTENTS, TYPE, RANGE, VALUE, ACCESS, ...)
GET /vace/seed        → one node;  GET /vace/seed?VALUE → {"VALUE": [42]}
GET /?HOST_INFO       → NAME, OSC_IP, OSC_PORT, OSC_TRANSPORT, EXTENSIONS
WebSocket, text frames from the client: {"COMMAND": "LISTEN", "DATA": "/vace/seed"} and
  {"COMMAND": "IGNORE", "DATA": ...}; every change of a listened parameter (or of its
  /vace/norm/ or /vace/index/ form) then arrives as a binary frame holding the OSC message (the
  same message as the UDP echo); a listened /vace/status/<field> arrives at the status rate
  (--status-hz) when its value changed. Binary frames from the client are OSC packets, handled
  like UDP ones.
Zeroconf: `_oscjson._tcp` (this port) and `_osc._udp` (the OSC port), on loopback only unless
  OSC listens on the LAN (--osc-host 0.0.0.0 or a LAN address).

Every method is a leaf (the OSC address space and python-oscquery's client demand it): the 0..1
and by-index forms live at /vace/norm/<param> and /vace/index/<param>. ACCESS: 0 no value
(actions: a bare trigger), 1 read-only (load-time params, status), 2 write-only (controls),
3 read/write. Nodes with a value carry VALUE; write-only controls carry a neutral VALUE of
their TYPE, status fields a 0 before the first status, so strict clients can read every node.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from vacelive.bridge.osc.coercion import echo_messages, value_args
from vacelive.bridge.osc.feedback import build
from vacelive.bridge.param_types import PREFIX, Param
from vacelive.bridge.schema import CONTROLS, STATUS_FIELDS

if TYPE_CHECKING:
    from vacelive.bridge.osc.server import OscServer

log = logging.getLogger("vacelive.bridge.osc")

EXTENSIONS = {
    "ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "TAGS": True,
    "UNIT": True, "CLIPMODE": True, "LISTEN": True, "PATH_CHANGED": False,
}
_NEUTRAL = {"s": "", "i": 0, "f": 0.0}
MDNS_PORT = 5353


def _insert(root: dict, path: str, attrs: dict[str, Any]) -> None:
    node = root
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        contents = node.setdefault("CONTENTS", {})
        node = contents.setdefault(part, {"FULL_PATH": "/" + "/".join(parts[: i + 1]),
                                          "ACCESS": 0})
    if "CONTENTS" in node:
        raise ValueError(f"{path} would be both a method and a container")
    node.update(attrs)


def _value(p: Param, value: Any) -> list[Any]:
    args = value_args(p, value)
    return args if args else [""]  # an empty list is written "" (which clears it over OSC)


def _param_attrs(p: Param, value: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "TYPE": p.osc_type,
        "ACCESS": 0 if p.type == "action" else 3 if p.live else 1,
        "DESCRIPTION": p.description,
        "TAGS": [p.group] + [f"cost:{c}" for c in p.cost],
    }
    if p.type != "action":
        attrs["VALUE"] = _value(p, value)
        if p.type == "str_list":
            attrs["TYPE"] = "s" * len(attrs["VALUE"])
    if p.numeric and p.min is not None:
        attrs["RANGE"] = [{"MIN": p.min, "MAX": p.max}]
        attrs["CLIPMODE"] = "both"
    elif p.type == "bool":
        attrs["RANGE"] = [{"MIN": 0, "MAX": 1}]
    elif p.type == "enum":
        attrs["RANGE"] = [{"VALS": list(p.choices)}]
    if p.unit:
        attrs["UNIT"] = [p.unit]
    return attrs


def namespace(server: "OscServer") -> dict[str, Any]:
    store = server.store
    root: dict[str, Any] = {"FULL_PATH": "/", "ACCESS": 0, "DESCRIPTION": "vacelive"}
    values = store.values()
    values.update(store.load_time_values())
    for p in server.schema:
        value = values.get(p.name)
        _insert(root, p.address, _param_attrs(p, value))
        if p.live and p.type != "action":
            for address, args in echo_messages(p, value)[1:]:  # /vace/norm/..., /vace/index/...
                norm = address == p.norm_address
                _insert(root, address, {
                    "TYPE": "f" if norm else "i", "ACCESS": 3, "VALUE": args,
                    "DESCRIPTION": f"{p.name} as 0..1 of its range" if norm else f"{p.name} by index",
                    "RANGE": [{"MIN": 0.0, "MAX": 1.0}] if norm else
                    [{"MIN": 0, "MAX": len(p.choices) - 1}],
                    "CLIPMODE": "both" if norm else "none"})
    for c in CONTROLS:
        attrs = {"TYPE": c.osc_type, "ACCESS": 2 if c.osc_type else 0,
                 "DESCRIPTION": f"{c.description} Args: {c.args or '-'}."}
        if c.osc_type:
            attrs["VALUE"] = [_NEUTRAL.get(t, 0) for t in c.osc_type]
        _insert(root, c.address, attrs)
    status = server.feedback.last_status if server.feedback else {}
    for s in STATUS_FIELDS:
        t = "f" if s.type == "float" else "i"
        attrs = {"TYPE": t, "ACCESS": 1, "DESCRIPTION": s.description,
                 "VALUE": [status.get(s.name, _NEUTRAL[t])]}
        if s.unit:
            attrs["UNIT"] = [s.unit]
        _insert(root, s.address, attrs)
    for name, text in (("error", "Rejected messages (sent, not received)."),
                       ("notice", "Run-loop notices (sent, not received).")):
        _insert(root, f"{PREFIX}/{name}", {"TYPE": "s", "ACCESS": 1, "DESCRIPTION": text,
                                           "VALUE": [""]})
    return root


def find(root: dict[str, Any], path: str) -> dict[str, Any] | None:
    node = root
    for part in (p for p in path.split("/") if p):
        node = node.get("CONTENTS", {}).get(part)
        if node is None:
            return None
    return node


def _lan_addresses() -> list[str]:
    """IPv4 addresses of this machine's non-loopback interfaces (ifaddr comes with zeroconf)."""
    try:
        import ifaddr
    except ImportError:
        return []
    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                out.append(ip.ip)
    return out


class Advertiser:
    """Zeroconf (mDNS/DNS-SD) records for `_oscjson._tcp` and `_osc._udp`, registered on a
    background thread (mDNS probing takes one to two seconds a service) and withdrawn on close();
    a close() during probing returns at once and the thread withdraws them when it is done."""

    def __init__(self, name: str, http_port: int, osc_port: int, lan: bool, host: str) -> None:
        self.name, self.http_port, self.osc_port, self.lan, self.host = \
            name, http_port, osc_port, lan, host
        self._zc: Any = None
        self._infos: list[Any] = []
        self.error: str | None = None
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._register, name="oscquery-mdns", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        try:
            from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

            if self.lan:
                ips = [self.host] if self.host not in ("0.0.0.0", "") else _lan_addresses()
                zc = Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
            else:
                ips = ["127.0.0.1"]
                zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
            with self._lock:
                self._zc = zc
            addresses = [socket.inet_aton(ip) for ip in ips or ["127.0.0.1"]]
            server = f"{socket.gethostname().split('.')[0] or 'vacelive'}.local."
            for kind, port in (("_oscjson._tcp.local.", self.http_port),
                               ("_osc._udp.local.", self.osc_port)):
                if self._closing:
                    break
                info = ServiceInfo(kind, f"{self.name}.{kind}", addresses=addresses, port=port,
                                   server=server, properties={"txtvers": "1"})
                zc.register_service(info, allow_name_change=True)
                self._infos.append(info)
            log.info("OSCQuery advertised by zeroconf as '%s' (%s)", self.name,
                     "LAN" if self.lan else "loopback only")
        except Exception as exc:  # discovery is a convenience: OSC and HTTP work without it
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("zeroconf advertisement failed (%s); OSCQuery still answers on port %d",
                        self.error, self.http_port)
        finally:
            self.ready.set()
            with self._lock:
                closing = self._closing
            if closing:
                self._withdraw()

    def _withdraw(self) -> None:
        with self._lock:
            zc, self._zc = self._zc, None
            infos, self._infos = self._infos, []
        if zc is None:
            return
        try:
            for info in infos:
                zc.unregister_service(info)  # goodbye packets: browsers drop us at once
        except Exception as exc:
            log.debug("zeroconf withdraw: %s", exc)
        finally:
            zc.close()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            registering = not self.ready.is_set()
        if not registering:
            self._withdraw()


class OscQueryServer:
    def __init__(self, osc: "OscServer", host: str, port: int, *, advertise: bool = True,
                 name: str = "vacelive") -> None:
        from websockets.sync.server import serve

        self.osc = osc
        self.host = host
        self._clients: dict[Any, set[str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._outbox: dict[tuple[Any, str], list[Any]] = {}  # latest value per (client, address)
        self._last_status: dict[str, Any] = {}
        self._closing = False
        self.server = serve(self._ws, host, port, process_request=self._http,
                            compression=None, server_header="vacelive-oscquery/2",
                            logger=logging.getLogger("vacelive.bridge.osc.websocket"))
        self.advertise = advertise
        self.advertiser: Advertiser | None = None
        self.name = name
        self._thread: threading.Thread | None = None
        self._sender: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.server.socket.getsockname()[:2]

    def start(self) -> "OscQueryServer":
        self._thread = threading.Thread(target=self.server.serve_forever, name="oscquery",
                                        daemon=True)
        self._thread.start()
        self._sender = threading.Thread(target=self._send_loop, name="oscquery-listen",
                                        daemon=True)
        self._sender.start()
        self.osc.store.add_listener(self._on_change)
        if self.osc.feedback is not None:
            self.osc.feedback.status_listeners.append(self._on_status)
        if self.advertise:
            from vacelive.bridge.osc.server import _is_loopback

            self.advertiser = Advertiser(f"{self.name} {self.osc.address[1]}", self.address[1],
                                         self.osc.address[1], not _is_loopback(self.host),
                                         self.host)
        return self

    def stop(self) -> None:
        self.osc.store.remove_listener(self._on_change)
        if self.osc.feedback is not None and self._on_status in self.osc.feedback.status_listeners:
            self.osc.feedback.status_listeners.remove(self._on_status)
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        if self.advertiser is not None:
            self.advertiser.close()
        self.server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sender is not None:
            self._sender.join(timeout=5)

    # -- HTTP -----------------------------------------------------------------------------------------
    def _http(self, connection: Any, request: Any) -> Any:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None  # the WebSocket handshake goes on
        try:
            url = urlsplit(request.path)
            query = unquote(url.query)
            if query == "HOST_INFO":
                host, port = self.osc.address
                info = {"NAME": self.name, "OSC_PORT": port, "OSC_TRANSPORT": "UDP",
                        "EXTENSIONS": EXTENSIONS}
                if host not in ("0.0.0.0", "::"):
                    info["OSC_IP"] = host
                return self._json(HTTPStatus.OK, info)
            node = find(namespace(self.osc), unquote(url.path))
            if node is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no OSC address {url.path}"})
            if query:
                if query not in node:
                    return self._json(HTTPStatus.NO_CONTENT, None)
                return self._json(HTTPStatus.OK, {query: node[query]})
            return self._json(HTTPStatus.OK, node)
        except Exception as exc:  # a discovery request must never hurt the stream
            log.exception("OSCQuery request failed")
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})

    @staticmethod
    def _json(status: HTTPStatus, body: Any) -> Any:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = Headers([("Content-Length", str(len(data))), ("Connection", "close")])
        if body is not None:
            headers["Content-Type"] = "application/json"
        return Response(int(status), status.phrase, headers, data)

    # -- WebSocket (LISTEN / IGNORE) -------------------------------------------------------------------
    def _ws(self, connection: Any) -> None:
        listening: set[str] = set()
        with self._lock:
            self._clients[connection] = listening
        try:
            for message in connection:
                if isinstance(message, bytes):  # an OSC packet over the socket
                    self.osc.handle_datagram(message, None)
                    continue
                try:
                    cmd = json.loads(message)
                    command, path = str(cmd["COMMAND"]).upper(), str(cmd.get("DATA", ""))
                except (ValueError, KeyError, TypeError):
                    log.debug("OSCQuery: ignored WebSocket text %r", message[:80])
                    continue
                with self._lock:
                    if command == "LISTEN":
                        listening.add(path)
                    elif command == "IGNORE":
                        listening.discard(path)
        except Exception as exc:  # a client that vanishes mid-frame
            log.debug("OSCQuery WebSocket closed: %s", exc)
        finally:
            with self._lock:
                self._clients.pop(connection, None)
                for key in [k for k in self._outbox if k[0] is connection]:
                    del self._outbox[key]

    def _on_change(self, changes: Any, origin: Any) -> None:
        with self._lock:
            if not self._clients:
                return
            for name, value in changes.items():
                for address, args in echo_messages(self.osc.schema[name], value):
                    for client, paths in self._clients.items():
                        if address in paths:
                            self._outbox[(client, address)] = args
            if self._outbox:
                self._wake.notify()

    def _on_status(self, status: dict[str, Any]) -> None:
        with self._lock:
            if not self._clients:
                return
            changed = {k: v for k, v in status.items() if self._last_status.get(k) != v}
            self._last_status = dict(status)
            for key, value in changed.items():
                address = f"{PREFIX}/status/{key}"
                value = int(value) if isinstance(value, bool) else value
                for client, paths in self._clients.items():
                    if address in paths:
                        self._outbox[(client, address)] = [value]
            if self._outbox:
                self._wake.notify()

    def _send_loop(self) -> None:
        """Sends on its own thread: a slow WebSocket client never stalls OSC input."""
        while True:
            with self._lock:
                while not self._outbox and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                batch, self._outbox = self._outbox, {}
            for (client, address), args in batch.items():
                try:
                    client.send(build(address, args))
                except Exception as exc:
                    log.debug("OSCQuery LISTEN send to a client failed: %s", exc)


def lan_warning(osc_host: str, osc_port: int, oscquery_port: int | None) -> str:
    """What a LAN opt-in opens, port by port."""
    parts = [f"UDP {osc_port} (OSC control)"]
    if oscquery_port:
        parts.append(f"TCP {oscquery_port} (OSCQuery HTTP namespace and WebSocket LISTEN)")
        parts.append(f"UDP {MDNS_PORT} (zeroconf/mDNS advertisement of _oscjson._tcp and _osc._udp)")
    return (f"OSC listens on {osc_host}: anyone on the network can steer the stream. Ports open "
            f"to the LAN: {'; '.join(parts)}. Use the default 127.0.0.1 to stay local.")
