"""OSCQuery as a third party sees it: a zeroconf browser finds the service on loopback,
python-oscquery's OSCQueryClient reads the whole namespace (every node, its type, range and
value), and a WebSocket LISTEN client receives a value change sent over OSC."""
from __future__ import annotations

import socket
import threading
import time

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from vacelive.bridge.osc import OscConfig, OscServer
from vacelive.bridge.osc.coercion import value_args
from vacelive.bridge.osc.oscquery import lan_warning
from vacelive.bridge.presets import PresetLibrary
from vacelive.bridge.schema import CONTROLS, STATUS_FIELDS, build_schema
from vacelive.bridge.store import ParamStore

zeroconf = pytest.importorskip("zeroconf")
pythonoscquery = pytest.importorskip("pythonoscquery")


@pytest.fixture
def server(tmp_path):
    store = ParamStore(build_schema(loras=["ink"]))
    osc = OscServer(store, PresetLibrary(store.schema, user_dir=tmp_path),
                    OscConfig(port=0, oscquery_port=0, status_hz=0)).start()
    yield osc
    osc.stop()


def browse(kind: str, name_part: str, timeout: float = 20.0):
    """A zeroconf browser on loopback; the ServiceInfo of the first service whose name holds
    name_part."""
    from zeroconf import IPVersion, ServiceBrowser, Zeroconf

    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    found = threading.Event()
    names: list[str] = []

    class Listener:
        def add_service(self, zc_, type_, name):
            if name_part in name:
                names.append(name)
                found.set()

        update_service = remove_service = lambda *a: None

    browser = ServiceBrowser(zc, kind, Listener())
    try:
        assert found.wait(timeout), f"no {kind} service named *{name_part}* found"
        info = zc.get_service_info(kind, names[0], timeout=5000)
        assert info is not None
        return info
    finally:
        browser.cancel()
        zc.close()


def walk(node):
    yield node
    for child in node.contents or []:
        yield from walk(child)


def test_zeroconf_and_a_third_party_client_read_the_whole_namespace(server):
    from pythonoscquery.osc_query_client import OSCQueryClient

    osc_port, http_port = server.address[1], server.oscquery.address[1]
    tag = f"vacelive {osc_port}"
    info = browse("_oscjson._tcp.local.", tag)
    assert info.port == http_port and socket.inet_ntoa(info.addresses[0]) == "127.0.0.1"
    assert browse("_osc._udp.local.", tag).port == osc_port

    client = OSCQueryClient(info)
    host = client.get_host_info()
    assert host.osc_port == osc_port and host.osc_transport == "UDP"
    assert host.extensions["LISTEN"] is True
    root = client.query_node("/")  # the client's own parser: it refuses a method with children
    raw = client.last_json
    nodes = {n.full_path: n for n in walk(root)}

    def raw_node(path):
        node = raw
        for part in path.strip("/").split("/"):
            node = node["CONTENTS"][part]
        return node

    store = server.store
    for p in server.schema:
        node = nodes[p.address]
        assert not node.contents, f"{p.address} is a container"
        if p.type == "action":
            assert node.value is None and node.access == 0
            continue
        value = store.get(p.name) if p.live else store.load_time_values()[p.name]
        expected = value_args(p, value) or [""]
        assert node.value == pytest.approx(expected) if p.numeric else node.value == expected
        assert raw_node(p.address)["TYPE"] in (p.osc_type, "s" * len(expected))
        if p.numeric and p.min is not None:
            assert raw_node(p.address)["RANGE"] == [{"MIN": p.min, "MAX": p.max}]
        if p.live and p.numeric and p.min is not None:
            norm = nodes[p.norm_address]
            assert norm.value == [pytest.approx(p.normalized(value))] and not norm.contents
        if p.type == "enum":
            assert raw_node(p.address)["RANGE"] == [{"VALS": list(p.choices)}]
            if p.live:
                assert nodes[p.index_address].value == [p.choices.index(value)]
    for c in CONTROLS:
        assert c.address in nodes and not nodes[c.address].contents
    for s in STATUS_FIELDS:
        assert nodes[s.address].access == 1 and len(nodes[s.address].value) == 1
    leaves = [n for n in walk(root) if not n.contents]
    assert all(n.full_path.startswith("/vace/") for n in leaves)


def test_websocket_listen_streams_a_change_sent_over_osc(server):
    import json

    from websockets.sync.client import connect

    port = server.oscquery.address[1]
    sender = SimpleUDPClient("127.0.0.1", server.address[1])
    with connect(f"ws://127.0.0.1:{port}/") as ws:
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/vace/context_scale"}))
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/vace/norm/steps"}))
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/vace/seed"}))

        def wait_listening(n):  # the commands are handled on the server's connection thread
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if any(len(paths) == n for paths in server.oscquery._clients.values()):
                    return
                time.sleep(0.01)
            raise AssertionError("LISTEN not registered")

        wait_listening(3)
        sender.send_message("/vace/context_scale", 1.5)
        msg = OscMessage(ws.recv(timeout=10))
        assert (msg.address, msg.params) == ("/vace/context_scale", [1.5])
        sender.send_message("/vace/steps", 3)  # listened at its 0..1 form only
        msg = OscMessage(ws.recv(timeout=10))
        assert msg.address == "/vace/norm/steps" and msg.params == [pytest.approx(2 / 3)]
        ws.send(json.dumps({"COMMAND": "IGNORE", "DATA": "/vace/context_scale"}))
        wait_listening(2)
        sender.send_message("/vace/context_scale", 0.5)  # ignored now ...
        sender.send_message("/vace/seed", 9)  # ... so the next frame is the seed
        msg = OscMessage(ws.recv(timeout=10))
        assert (msg.address, msg.params) == ("/vace/seed", [9])
        # OSC over the WebSocket works too (binary frames are OSC packets)
        from pythonosc.osc_message_builder import OscMessageBuilder

        b = OscMessageBuilder("/vace/seed")
        b.add_arg(11)
        ws.send(b.build().dgram)
        msg = OscMessage(ws.recv(timeout=10))
        assert (msg.address, msg.params) == ("/vace/seed", [11])
    assert server.store.get("seed") == 11


def test_lan_warning_names_every_port():
    text = lan_warning("0.0.0.0", 7700, 7701)
    for part in ("UDP 7700", "TCP 7701", "UDP 5353"):
        assert part in text
    assert "TCP" not in lan_warning("0.0.0.0", 7700, None)


def test_websocket_listen_streams_status_fields(tmp_path):
    import itertools
    import json

    from websockets.sync.client import connect

    store = ParamStore()
    ticks = itertools.count(1)
    osc = OscServer(store, None, OscConfig(port=0, oscquery_port=0, status_hz=50),
                    status_provider=lambda: {"fps": float(next(ticks)), "paused": False}).start()
    try:
        with connect(f"ws://127.0.0.1:{osc.oscquery.address[1]}/") as ws:
            ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/vace/status/fps"}))
            values = []
            while len(values) < 3:  # a new value at each status tick; paused never changes
                msg = OscMessage(ws.recv(timeout=10))
                assert msg.address == "/vace/status/fps"
                values.append(msg.params[0])
            assert values == sorted(values) and len(set(values)) == 3
    finally:
        osc.stop()
