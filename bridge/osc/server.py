"""The OSC server: UDP in, parameter store writes, replies and echoes out.

A plain UDP socket and python-osc's packet parsers, not python-osc's server/dispatcher, because
the dispatcher sleeps on future bundle time tags inside the receive thread and hides bundle
boundaries. Here every datagram (message or bundle, nested bundles flattened, time tags ignored)
is routed through one table (bridge/osc/routing.py: OSC 1.0 address patterns, so
`/vace/lora/* 0.5` sets every LoRA scale) and becomes one `ParamStore.apply()`, so a bundle lands in one snapshot; then the packet's queries
(get, describe, preset save/list, hello) are answered, seeing the bundle's values.

Nothing a sender does stops the server: unknown addresses, wrong types, malformed packets and
internal errors become a `/vace/error` reply plus a rate-limited log line, and the loop goes on.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import socket
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

from pythonosc.osc_message import OscMessage

from vacelive.bridge import layout
from vacelive.bridge.argtypes import ranged
from vacelive.bridge.osc.coercion import args_to_value, echo_messages, flatten, is_trigger, value_args
from vacelive.bridge.osc.feedback import Addr, Feedback, StatusProvider
from vacelive.bridge.osc.routing import RoutingTable, is_pattern
from vacelive.bridge.presets import PresetError, PresetLibrary
from vacelive.bridge.schema import CONTROLS
from vacelive.bridge.param_types import PREFIX, Param, ParamError, to_json_value
from vacelive.bridge.store import Action, ParamStore

log = logging.getLogger("vacelive.bridge.osc")

DEFAULT_PORT = 7700
DEFAULT_OSCQUERY_PORT = 7701
MAX_DATAGRAM = 65535
MAX_REPLY_BYTES = 60000  # keep single replies inside one UDP datagram


def parse_hostport(text: str) -> Addr:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


@dataclass
class OscConfig:
    host: str = "127.0.0.1"  # loopback unless the user opts into the LAN
    port: int = DEFAULT_PORT  # 0: any free port (tests)
    feedback: tuple[Addr, ...] = ()  # extra echo/status/error targets (TouchDesigner OSC In)
    oscquery_port: int | None = DEFAULT_OSCQUERY_PORT  # None: no HTTP; 0: any free port
    status_hz: float = 4.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "OscConfig":
        return cls(
            host=args.osc_host, port=args.osc_port, feedback=tuple(args.osc_feedback or ()),
            oscquery_port=args.oscquery_port or None, status_hz=args.status_hz,
        )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The OSC flags of `vacelive serve` / `relay` (call from a command's add_arguments)."""
    g = parser.add_argument_group("OSC control")
    g.add_argument("--osc-host", default="127.0.0.1",
                   help="bind address; 0.0.0.0 accepts control from the LAN (default: loopback)")
    g.add_argument("--osc-port", type=ranged(int, 0, 65535), default=DEFAULT_PORT,
                   help="OSC UDP port")
    g.add_argument("--osc-feedback", type=parse_hostport, action="append", metavar="HOST:PORT",
                   help="also send echoes/status/errors here, e.g. TouchDesigner's OSC In "
                   "(repeatable)")
    g.add_argument("--oscquery-port", type=ranged(int, 0, 65535), default=DEFAULT_OSCQUERY_PORT,
                   help="OSCQuery HTTP port (0 = off)")
    g.add_argument("--status-hz", type=ranged(float, 0.1, 100), default=4.0,
                   help="status messages per second")
    g.add_argument("--presets-dir", default=None,
                   help="user preset folder (default: $VACELIVE_PRESETS_DIR or "
                   "~/.config/vacelive/presets)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


BUNDLE_TAG = b"#bundle\x00"


def parse_packet(data: bytes) -> list[OscMessage]:
    """Every message of a datagram in order (nested bundles flattened, time tags ignored).

    Bundles are walked iteratively here rather than by python-osc's OscBundle: its recursive
    parser lets a 64 kB datagram of nested bundles exhaust the interpreter stack, which can
    abort the whole process ("Cannot recover from stack overflow") instead of raising.
    A malformed element rejects the whole packet, so a bundle applies entirely or not at all.
    """
    out: list[OscMessage] = []
    stack = [(0, len(data))]  # (start, end) ranges of the datagram: no copies per level
    while stack:
        start, end = stack.pop()
        if data.startswith(BUNDLE_TAG, start, end):
            if end - start < 16:
                raise ParamError("malformed OSC bundle: shorter than its header")
            elements = []
            i = start + 16  # "#bundle\0" + 8-byte time tag (ignored: applied on arrival)
            while i < end:
                if i + 4 > end:
                    raise ParamError("malformed OSC bundle: truncated element size")
                size = int.from_bytes(data[i:i + 4], "big", signed=True)
                i += 4
                if size <= 0 or i + size > end:
                    raise ParamError(f"malformed OSC bundle: element size {size} does not fit")
                elements.append((i, i + size))
                i += size
            stack.extend(reversed(elements))
        elif data.startswith(b"/", start, end):
            out.append(OscMessage(data[start:end]))
        elif start == 0:
            raise ParamError(
                "not an OSC packet (an OSC message starts with '/', a bundle with '#bundle')"
            )
        else:
            raise ParamError("malformed OSC bundle: an element is neither message nor bundle")
    return out


@dataclass
class Packet:
    """What the messages of one datagram add up to: applied with one store.apply(), then the
    queries in `after` are answered."""

    sender: Addr | None
    changes: dict[str, Any] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)


class _PythonOscNoise(logging.Filter):
    """python-osc logs every unknown type tag on the root logger; a fuzzing or broken sender
    would flood the console. Our own (rate-limited) error reports say what matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pythonosc" not in record.pathname


class OscServer:
    def __init__(
        self,
        store: ParamStore,
        presets: PresetLibrary | None = None,
        config: OscConfig | None = None,
        status_provider: StatusProvider | None = None,
    ):
        self.store = store
        self.schema = store.schema
        self.presets = presets
        self.config = config or OscConfig()
        self._status_provider = status_provider
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.feedback: Feedback | None = None
        self.oscquery = None
        self.received = 0  # datagrams
        self.rejected = 0  # messages refused
        self.stage = None  # bridge.stage.Stage: tempo, quantised changes, recording
        self.routes = self._build_routes()

    def _build_routes(self) -> RoutingTable:
        """Every address this server answers: the controls (literal only), then each parameter
        with its /norm and /index forms. A handler is called as handler(args, packet)."""
        table = RoutingTable()
        controls = {
            f"{PREFIX}/get": self._get,
            f"{PREFIX}/describe": self._describe,
            f"{PREFIX}/hello": self._hello,
            f"{PREFIX}/preset/load": self._preset_load,
            f"{PREFIX}/preset/save": self._preset_save,
            f"{PREFIX}/preset/list": self._preset_list,
            f"{PREFIX}/layout/box": self._layout_box,
            f"{PREFIX}/layout/remove": self._layout_remove,
            f"{PREFIX}/layout/clear": self._layout_clear,
        }
        from vacelive.bridge.stage import STAGE_CONTROLS

        for name in STAGE_CONTROLS:  # tempo, cues, recording: bridge/stage.py
            controls[f"{PREFIX}/{name}"] = partial(self._stage_control, f"{PREFIX}/{name}")
        assert set(controls) == {c.address for c in CONTROLS}
        for address, fn in controls.items():
            table.add(address, fn, patterns=False)
        for p in self.schema:
            if not p.live:
                table.add(p.address, partial(self._load_time, p), patterns=False)
            elif p.type == "action":
                table.add(p.address, partial(self._trigger, p))
            else:
                table.add(p.address, partial(self._write, p, "value"))
                if p.numeric:
                    table.add(p.norm_address, partial(self._write, p, "norm"))
                if p.type == "enum":
                    table.add(p.index_address, partial(self._write, p, "index"))
        for p in self.schema.live:  # the older <address>/norm and /index forms (still accepted)
            if p.type != "action" and p.numeric:
                table.add(f"{p.address}/norm", partial(self._write, p, "norm"))
            if p.type == "enum":
                table.add(f"{p.address}/index", partial(self._write, p, "index"))
        return table

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def address(self) -> Addr:
        assert self._sock is not None, "server not started"
        return self._sock.getsockname()[:2]

    def start(self) -> "OscServer":
        cfg = self.config
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.bind((cfg.host, cfg.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen for OSC on {cfg.host}:{cfg.port}: {exc}") from exc
        sock.settimeout(0.2)  # lets stop() end the loop promptly
        self._sock = sock
        root = logging.getLogger()
        if not any(isinstance(f, _PythonOscNoise) for f in root.filters):
            root.addFilter(_PythonOscNoise())
        self.feedback = Feedback(sock, cfg.feedback, self._status_provider, cfg.status_hz)
        self.feedback.start()
        self.store.add_listener(self._on_change)
        if cfg.oscquery_port is not None:
            from vacelive.bridge.osc.oscquery import OscQueryServer

            self.oscquery = OscQueryServer(self, cfg.host, cfg.oscquery_port).start()
        if not _is_loopback(cfg.host):
            from vacelive.bridge.osc.oscquery import lan_warning

            log.warning("%s", lan_warning(cfg.host, self.address[1],
                                          self.oscquery.address[1] if self.oscquery else None))
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="osc-server", daemon=True)
        self._thread.start()
        host, port = self.address
        log.info("OSC listening on %s:%d (%s/...)%s", host, port, PREFIX,
                 f", OSCQuery http://{host}:{self.oscquery.address[1]}/" if self.oscquery else "")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.store.remove_listener(self._on_change)
        if self.oscquery is not None:
            self.oscquery.stop()
        if self.feedback is not None:
            self.feedback.stop()
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> "OscServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- for the run loop ---------------------------------------------------------------------
    @property
    def status_provider(self) -> StatusProvider | None:
        return self._status_provider

    @status_provider.setter
    def status_provider(self, fn: StatusProvider | None) -> None:
        self._status_provider = fn
        if self.feedback is not None:
            self.feedback.status_provider = fn

    def notice(self, message: str) -> None:
        """Tell every surface something (input fixed up, snapshot written...)."""
        if self.feedback is not None:
            self.feedback.broadcast(f"{PREFIX}/notice", [message])

    def error(self, message: str) -> None:
        """Report a run-loop error (bad texture size, missing file...) to every surface."""
        log.warning("%s", message)
        if self.feedback is not None:
            self.feedback.broadcast(f"{PREFIX}/error", [message])

    # -- receive loop -------------------------------------------------------------------------
    def _serve(self) -> None:
        sock = self._sock
        while not self._stop.is_set():
            try:
                data, sender = sock.recvfrom(MAX_DATAGRAM)
            except socket.timeout:
                continue
            except OSError:  # e.g. Windows' ConnectionResetError after an ICMP port-unreachable
                if self._stop.is_set():
                    break
                continue
            try:
                self.handle_datagram(data, sender[:2])
            except Exception as exc:  # last line of defence: the show goes on
                log.exception("OSC packet handling failed")
                self.feedback.error(sender[:2], f"internal error handling packet: {exc}")

    def handle_datagram(self, data: bytes, sender: Addr | None) -> None:
        self.received += 1
        try:
            messages = parse_packet(data)
        except ParamError as exc:
            self.rejected += 1
            self.feedback.error(sender, str(exc))
            return
        except Exception as exc:  # python-osc raises assorted errors on garbage
            self.rejected += 1
            self.feedback.error(sender, f"malformed OSC packet ({len(data)} bytes): {exc}")
            return
        if sender is not None:  # before applying: the echo thread must already know it
            self.feedback.note_sender(sender)
        packet = Packet(sender)
        for msg in messages:
            try:
                self._route(msg.address, msg.params, packet)
            except (ParamError, PresetError) as exc:
                self.rejected += 1
                self.feedback.error(sender, str(exc))
        if self.stage is not None:
            try:
                self.stage.intercept(packet)  # quantised changes wait for their beat
            except (ParamError, ValueError) as exc:
                self.feedback.error(sender, str(exc))
        if packet.changes or packet.actions:
            try:
                self.store.apply(packet.changes, packet.actions, origin=sender)
            except ParamError as exc:  # cannot happen for coerced values; stay safe anyway
                self.feedback.error(sender, str(exc))
        for fn in packet.after:  # queries see the packet's own values
            try:
                fn()
            except (ParamError, PresetError) as exc:
                self.rejected += 1
                self.feedback.error(sender, str(exc))

    def _route(self, address: Any, args: Sequence[Any], packet: Packet) -> None:
        if not isinstance(address, str):
            raise ParamError("malformed address")
        if len(address) > 1:
            address = address.rstrip("/")
        if not address.startswith(PREFIX + "/"):
            raise ParamError(f"unknown address '{address[:80]}': vacelive listens under {PREFIX}/")
        routes = self.routes.match(address)
        if not routes:
            if is_pattern(address):
                raise ParamError(f"address pattern '{address[:80]}' matches no parameter")
            self.schema.resolve(address)  # raises the "unknown address (did you mean ...)" error
            raise ParamError(f"unknown address '{address[:80]}'")
        if len(routes) == 1:
            routes[0].handler(list(args), packet)
            return
        for route in routes:  # a pattern: every match is tried, each failure reported
            try:
                route.handler(list(args), packet)
            except (ParamError, PresetError) as exc:
                self.rejected += 1
                self.feedback.error(packet.sender, f"{address[:80]} -> {exc}")

    def _load_time(self, p: Param, args: list[Any], packet: Packet) -> None:
        how = "set it when the engine starts"
        if p.name == "pipeline":
            how = ("changing the pipeline reloads the weights: restart the engine with --pipeline "
                   "NAME (TouchDesigner: pick it in the Engine page's Pipeline menu)")
        raise ParamError(f"{p.address} is a load-time parameter (currently "
                         f"{self.store.get(p.name)!r}); {how}")

    def _trigger(self, p: Param, args: list[Any], packet: Packet) -> None:
        if is_trigger(args):
            packet.actions.append(Action(p.name, (), packet.sender))

    def _write(self, p: Param, mode: str, args: list[Any], packet: Packet) -> None:
        if p.pipelines:
            pipeline = self.store.get("pipeline") if "pipeline" in self.schema else None
            if not p.available_on(pipeline):
                raise ParamError(p.unavailable_message(pipeline))
        value = args_to_value(p, args, mode)
        packet.changes.pop(p.name, None)  # latest wins, also inside one bundle
        packet.changes[p.name] = value

    # -- echo ---------------------------------------------------------------------------------
    def _on_change(self, changes: dict[str, Any], origin: Any) -> None:
        msgs = []
        for name, value in changes.items():
            msgs.extend(echo_messages(self.schema[name], value))
        self.feedback.echo(msgs)

    # -- control addresses --------------------------------------------------------------------
    def _reply(self, sender: Addr | None, address: str, args: list[Any]) -> None:
        self.feedback.reply(sender, address, args)

    def _get(self, args: list[Any], packet: Packet) -> None:
        sender, after = packet.sender, packet.after
        keys = [str(a) for a in flatten(args, f"{PREFIX}/get")]

        def answer() -> None:
            if not keys:
                for p in self.schema.live:
                    if p.type != "action":
                        self._reply(sender, p.address, value_args(p, self.store.get(p.name)))
                return
            for key in keys:
                self._answer_get(key, sender)

        after.append(answer)

    def _answer_get(self, key: str, sender: Addr | None) -> None:
        if key.startswith("/") and is_pattern(key):
            routes = self.routes.match(key.rstrip("/"))
            if not routes:
                raise ParamError(f"{PREFIX}/get: address pattern '{key[:80]}' matches no parameter")
            for route in routes:
                if self.schema.resolve(route.address)[0].type != "action":
                    self._answer_get(route.address, sender)
            return
        status_prefix = f"{PREFIX}/status/"
        if key.startswith(status_prefix):
            last = self.feedback.last_status
            name = key[len(status_prefix):]
            if name not in last:
                raise ParamError(f"{PREFIX}/get: no status '{name}' yet (no run loop attached?)")
            self._reply(sender, key, [last[name]])
            return
        if key.startswith("/"):
            p, mode = self.schema.resolve(key.rstrip("/"))
        else:
            p, mode = self.schema[key], "value"
        if p.type == "action":
            raise ParamError(f"{PREFIX}/get: {p.address} is an action; it has no value")
        value = self.store.get(p.name)
        if mode == "value":
            self._reply(sender, p.address, value_args(p, value))
            return
        for address, out in echo_messages(p, value):  # the /norm or /index form
            if address in (p.norm_address, p.index_address) and address.split("/")[2] == mode:
                self._reply(sender, address, out)

    def _describe(self, args: list[Any], packet: Packet) -> None:
        sender, after = packet.sender, packet.after
        keys = [str(a) for a in flatten(args, f"{PREFIX}/describe")]

        def answer() -> None:
            if keys:
                key = keys[0]
                p = self.schema.resolve(key)[0] if key.startswith("/") else self.schema[key]
                doc = p.to_json()
                if p.type != "action":
                    doc["value"] = to_json_value(self.store.get(p.name))
            else:
                doc = self.schema.to_json()
                values = self.store.values()
                values.update(self.store.load_time_values())
                for entry in doc["params"]:
                    if entry["name"] in values:
                        entry["value"] = to_json_value(values[entry["name"]])
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
            if len(text.encode()) > MAX_REPLY_BYTES:
                raise ParamError(f"{PREFIX}/describe: the schema is too large for one datagram; "
                                 "use the OSCQuery HTTP namespace")
            self._reply(sender, f"{PREFIX}/describe", [text])

        after.append(answer)

    def _hello(self, args: list[Any], packet: Packet) -> None:
        sender, after = packet.sender, packet.after
        flat = flatten(args, f"{PREFIX}/hello")
        if sender is None:
            return
        peer = sender
        if flat:
            try:
                port = int(float(flat[0]))
            except (TypeError, ValueError, OverflowError):
                raise ParamError(f"{PREFIX}/hello: expects a port number, got {flat[0]!r}") from None
            if not 0 < port < 65536:
                raise ParamError(f"{PREFIX}/hello: port {port} is not in 1..65535")
            peer = (sender[0], port)

        def answer() -> None:
            self.feedback.add_peer(peer)
            for p in self.schema.live:
                if p.type != "action":
                    for address, out in echo_messages(p, self.store.get(p.name)):
                        self._reply(None, address, out)  # registered peers, incl. the new one
            log.info("OSC feedback peer %s:%d registered", *peer)

        after.append(answer)

    def _need_presets(self, address: str) -> PresetLibrary:
        if self.presets is None:
            raise ParamError(f"{address}: presets are not enabled in this session")
        return self.presets

    def _preset_load(self, args: list[Any], packet: Packet) -> None:
        sender, actions, after = packet.sender, packet.actions, packet.after
        address = f"{PREFIX}/preset/load"
        presets = self._need_presets(address)
        flat = flatten(args, address)
        if not flat or len(flat) > 2:
            raise ParamError(f"{address}: expects name [chunks]")
        name = flat[0] if isinstance(flat[0], str) else str(flat[0])
        preset = presets.load(name)
        chunks = preset.morph_chunks or 0
        if len(flat) == 2 and isinstance(flat[1], str) and flat[1].strip().lower().endswith(
                ("beat", "beats", "bar", "bars")):
            from vacelive.bridge.quantize import parse_length

            if self.stage is None:
                raise ParamError(f"{address}: lengths in beats need the tempo clock (a session)")
            try:
                chunks = self.stage.length_to_chunks(parse_length(flat[1]))
            except ValueError as exc:
                raise ParamError(f"{address}: {exc}") from None
        elif len(flat) == 2:
            try:
                chunks = int(float(flat[1]) + 0.5)
            except (TypeError, ValueError, OverflowError):
                raise ParamError(f"{address}: chunks must be a number, got {flat[1]!r}") from None
            if not 0 <= chunks <= 256:
                raise ParamError(f"{address}: chunks {chunks} is not in 0..256")
        actions.append(self.store.preset_action(name, preset.values, chunks, sender))
        for notice in preset.notices:
            self._reply(sender, f"{PREFIX}/notice", [notice])
        after.append(lambda: self._reply(sender, f"{PREFIX}/preset/loaded", [name, chunks]))

    def _stage_control(self, address: str, args: list[Any], packet: Packet) -> None:
        if self.stage is None:
            raise ParamError(f"{address}: tempo, cues and recording are not enabled here "
                             "(they run inside `vacelive serve`, `relay` and `demo`)")
        self.stage.control(self, address, list(args), packet)

    def _preset_save(self, args: list[Any], packet: Packet) -> None:
        sender, after = packet.sender, packet.after
        address = f"{PREFIX}/preset/save"
        presets = self._need_presets(address)
        flat = flatten(args, address)
        if len(flat) != 1:
            raise ParamError(f"{address}: expects one name")
        name = str(flat[0])

        def answer() -> None:
            try:
                path = presets.save(name, self.store.preset_values())
            except OSError as exc:
                raise PresetError(f"{address}: cannot write preset '{name}': {exc}") from None
            log.info("preset '%s' saved to %s", name, path)
            self._reply(sender, f"{PREFIX}/preset/saved", [name, str(path)])

        after.append(answer)

    # -- layout boxes (bridge.layout): edits of the layout_boxes parameter, applied with the packet
    def _layout_boxes(self, packet: Packet) -> tuple[str, ...]:
        return packet.changes.get("layout_boxes", self.store.get("layout_boxes"))

    def _layout_box(self, args: list[Any], packet: Packet) -> None:
        new = layout.with_box(self._layout_boxes(packet), flatten(args, f"{PREFIX}/layout/box"))
        packet.changes.pop("layout_boxes", None)
        packet.changes["layout_boxes"] = new

    def _layout_remove(self, args: list[Any], packet: Packet) -> None:
        new = layout.without_box(self._layout_boxes(packet), flatten(args, f"{PREFIX}/layout/remove"))
        packet.changes.pop("layout_boxes", None)
        packet.changes["layout_boxes"] = new

    def _layout_clear(self, args: list[Any], packet: Packet) -> None:
        packet.changes.pop("layout_boxes", None)
        packet.changes["layout_boxes"] = ()

    def _preset_list(self, args: list[Any], packet: Packet) -> None:
        sender, after = packet.sender, packet.after
        presets = self._need_presets(f"{PREFIX}/preset/list")
        after.append(lambda: self._reply(sender, f"{PREFIX}/preset/list", presets.names()))
