"""OSCQuery-style HTTP JSON namespace (Vidvox OSCQueryProposal keys), stdlib http.server.

GET /                 → the whole tree (FULL_PATH, CONTENTS, TYPE, RANGE, VALUE, ACCESS, ...)
GET /vace/seed        → one node;  GET /vace/seed?VALUE → {"VALUE": [42]}
GET /?HOST_INFO       → NAME, OSC_IP, OSC_PORT, OSC_TRANSPORT, EXTENSIONS
ACCESS: 1 read-only (load-time params, status), 2 write-only (actions, controls), 3 read/write.
Not implemented: the optional WebSocket (LISTEN / PATH_CHANGED) and zeroconf advertisement;
tools poll VALUE instead, and OSC echoes cover live sync.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from vacelive.bridge.osc.coercion import echo_messages, value_args
from vacelive.bridge.schema import CONTROLS, STATUS_FIELDS
from vacelive.bridge.param_types import PREFIX, Param

if TYPE_CHECKING:
    from vacelive.bridge.osc.server import OscServer

log = logging.getLogger("vacelive.bridge.osc")

EXTENSIONS = {
    "ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "TAGS": True,
    "UNIT": True, "CLIPMODE": True, "LISTEN": False, "PATH_CHANGED": False,
}


def _insert(root: dict, path: str, attrs: dict[str, Any]) -> None:
    node = root
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        contents = node.setdefault("CONTENTS", {})
        node = contents.setdefault(part, {"FULL_PATH": "/" + "/".join(parts[: i + 1]),
                                          "ACCESS": 0})
    node.update(attrs)


def _param_attrs(p: Param, value: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "TYPE": p.osc_type,
        "ACCESS": 2 if p.type == "action" else 3 if p.live else 1,
        "DESCRIPTION": p.description,
        "TAGS": [p.group] + [f"cost:{c}" for c in p.cost],
    }
    if p.type != "action":
        attrs["VALUE"] = value_args(p, value)
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
            for address, args in echo_messages(p, value)[1:]:  # /norm, /index
                mode = address.rsplit("/", 1)[1]
                attrs = {"TYPE": "f" if mode == "norm" else "i", "ACCESS": 3, "VALUE": args,
                         "DESCRIPTION": f"{p.name} as 0..1" if mode == "norm"
                         else f"{p.name} by index"}
                attrs["RANGE"] = [{"MIN": 0.0, "MAX": 1.0}] if mode == "norm" else \
                    [{"MIN": 0, "MAX": len(p.choices) - 1}]
                attrs["CLIPMODE"] = "both" if mode == "norm" else "none"
                _insert(root, address, attrs)
    for c in CONTROLS:
        _insert(root, c.address, {"TYPE": c.osc_type, "ACCESS": 2,
                                  "DESCRIPTION": f"{c.description} Args: {c.args or '-'}."})
    status = server.feedback.last_status if server.feedback else {}
    for s in STATUS_FIELDS:
        attrs = {"TYPE": "f" if s.type == "float" else "i", "ACCESS": 1,
                 "DESCRIPTION": s.description}
        if s.unit:
            attrs["UNIT"] = [s.unit]
        if s.name in status:
            attrs["VALUE"] = [status[s.name]]
        _insert(root, s.address, attrs)
    for name, text in (("error", "Rejected messages (sent, not received)."),
                       ("notice", "Run-loop notices (sent, not received).")):
        _insert(root, f"{PREFIX}/{name}", {"TYPE": "s", "ACCESS": 1, "DESCRIPTION": text})
    return root


def find(root: dict[str, Any], path: str) -> dict[str, Any] | None:
    node = root
    for part in (p for p in path.split("/") if p):
        node = node.get("CONTENTS", {}).get(part)
        if node is None:
            return None
    return node


_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up early is normal (a browser tab closed, a tool's timeout): one
        debug line. socketserver's default prints a traceback to stderr for it."""
        exc = sys.exc_info()[1]
        if isinstance(exc, _GONE):
            log.debug("OSCQuery client %s left before the reply: %s", client_address, exc)
        else:
            log.warning("OSCQuery request from %s failed", client_address, exc_info=True)


class OscQueryServer:
    def __init__(self, osc: "OscServer", host: str, port: int):
        self.osc = osc
        handler = type("Handler", (_Handler,), {"osc": osc})
        self.httpd = _HTTPServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def start(self) -> "OscQueryServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="oscquery",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    osc: "OscServer"
    server_version = "vacelive-oscquery/1"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("OSCQuery %s", fmt % args)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        try:
            url = urlsplit(self.path)
            query = unquote(url.query)
            if query == "HOST_INFO":
                host, port = self.osc.address
                info = {"NAME": "vacelive", "OSC_PORT": port, "OSC_TRANSPORT": "UDP",
                        "EXTENSIONS": EXTENSIONS}
                if host not in ("0.0.0.0", "::"):
                    info["OSC_IP"] = host
                return self._json(200, info)
            node = find(namespace(self.osc), unquote(url.path))
            if node is None:
                return self._json(404, {"error": f"no OSC address {url.path}"})
            if query:
                if query not in node:
                    self.send_response(204)
                    self.end_headers()
                    return
                return self._json(200, {query: node[query]})
            return self._json(200, node)
        except _GONE as exc:  # nobody is left to send a 500 to
            log.debug("OSCQuery client left before the reply: %s", exc)
            self.close_connection = True
        except Exception as exc:  # a discovery request must never hurt the stream
            log.exception("OSCQuery request failed")
            try:
                self._json(500, {"error": str(exc)})
            except OSError:
                self.close_connection = True

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
