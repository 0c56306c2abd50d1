"""OSC server over real UDP on 127.0.0.1 with python-osc built packets."""
from __future__ import annotations

import json
import logging
import math
import socket
import sys
import threading
import time

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from vacelive.bridge.osc import OscConfig, OscServer
from vacelive.bridge.osc.coercion import value_args
from vacelive.bridge.presets import PresetLibrary
from vacelive.bridge.schema import build_schema
from vacelive.bridge.param_types import INT32_MAX
from vacelive.bridge.store import ParamStore


def msg(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, tuple):  # (value, explicit type tag)
            b.add_arg(*a)
        else:
            b.add_arg(a)
    return b.build()


def bundle(*messages, timestamp=IMMEDIATELY):
    b = OscBundleBuilder(timestamp)
    for m in messages:
        b.add_content(m)
    return b.build()


class Peer:
    """A control surface: one UDP socket that sends and reads replies."""

    def __init__(self, target, port=0):
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.inbox: list[tuple[str, list]] = []

    def send(self, address, *args):
        self.sock.sendto(msg(address, *args).dgram, self.target)

    def send_packet(self, packet):
        self.sock.sendto(packet.dgram, self.target)

    def send_raw(self, data: bytes):
        self.sock.sendto(data, self.target)

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65535)
        except socket.timeout:
            return False
        for timed in OscPacket(data).messages:
            self.inbox.append((timed.message.address, timed.message.params))
        return True

    def wait_for(self, pred, timeout=3.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, (address, params) in enumerate(self.inbox):
                if pred(address, params):
                    del self.inbox[: i + 1]
                    return address, params
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching reply; got {self.inbox[-10:]}")
            self._read(left)

    def expect(self, address, expected=None, timeout=3.0):
        _, params = self.wait_for(
            lambda a, p: a == address and (expected is None or same(p, expected)), timeout)
        return params

    def error(self, contains="", timeout=3.0):
        return self.wait_for(lambda a, p: a == "/vace/error" and contains in p[0], timeout)[1][0]

    def drain(self, quiet=0.02):
        while self._read(quiet):
            pass
        self.inbox.clear()

    def close(self):
        self.sock.close()


def same(got, expected):
    if len(got) != len(expected):
        return False
    for g, e in zip(got, expected):
        if isinstance(e, float) and isinstance(g, (int, float)):
            if not math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-9):
                return False
        elif g != e:
            return False
    return True


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    schema = build_schema(["ink"])
    store = ParamStore(schema, load_time={"width": 640})
    presets = PresetLibrary(schema, user_dir=tmp_path_factory.mktemp("presets"))
    server = OscServer(store, presets, OscConfig(port=0, oscquery_port=0, status_hz=20)).start()
    yield server
    server.stop()


@pytest.fixture
def peer(rig):
    p = Peer(rig.address)
    yield p
    p.close()


def alive(rig, peer):
    """The server still answers a valid message."""
    peer.drain()
    peer.send("/vace/get", "/vace/width")
    assert peer.expect("/vace/width") == [640]


def sample_value(p):
    """A valid, non-default value for every live parameter type."""
    if p.type == "float":
        return round(p.min + 0.37 * (p.max - p.min), 3)
    if p.type == "int":
        return p.max if p.default != p.max else p.min
    if p.type == "bool":
        return not p.default
    if p.type == "enum":
        return p.choices[-1] if p.default != p.choices[-1] else p.choices[0]
    if p.type == "str":
        return f"text for {p.name}"
    if p.type == "str_list":
        return ("a.png", "b.png")
    if p.type == "prompts":
        return (("a forest", 1.0), ("neon city", 0.5))
    raise AssertionError(p.type)


def test_every_live_parameter_sets_echoes_and_reads_back(rig, peer):
    for p in rig.schema.live:
        if p.type == "action" or p.name == "prompt" or p.pipelines:
            continue  # pipeline-only parameters: tests/test_pipeline_params.py
        value = sample_value(p)
        args = value_args(p, value)
        peer.drain()
        peer.send(p.address, *args)
        assert peer.expect(p.address, args), p.name  # the echo
        assert rig.store.get(p.name) == pytest.approx(value) if p.type == "float" \
            else rig.store.get(p.name) == value, p.name
        peer.drain()
        peer.send("/vace/get", p.address)
        assert peer.expect(p.address, args), p.name  # the get reply
    # prompt is an alias of prompts: both echo
    peer.drain()
    peer.send("/vace/prompt", "a lighthouse")
    peer.expect("/vace/prompt", ["a lighthouse"])
    peer.expect("/vace/prompts", ["a lighthouse", 1.0])
    peer.send("/vace/get", "prompt")  # by name works too
    peer.expect("/vace/prompt", ["a lighthouse"])


def test_actions_reach_the_next_snapshot(rig, peer):
    rig.store.snapshot()
    peer.send("/vace/reset")
    peer.send("/vace/snapshot", 1)
    peer.send("/vace/reset", 0)  # a button release: ignored, no error
    alive(rig, peer)
    snap = rig.store.snapshot()
    assert [a.kind for a in snap.actions] == ["reset", "snapshot"]
    assert snap.action("reset").origin == ("127.0.0.1", peer.port)
    assert not any(a == "/vace/error" for a, _ in peer.inbox)


# (address, args, expected stored value) — each also checks the echo
ACCEPTED = [
    ("/vace/steps", [4.0], 4), ("/vace/steps", [2.6], 3), ("/vace/steps", ["2"], 2),
    ("/vace/steps", [99], 4), ("/vace/steps", [-5], 1),
    ("/vace/pause", [1], True), ("/vace/pause", [0.0], False), ("/vace/pause", ["on"], True),
    ("/vace/pause", [False], False), ("/vace/pause", [True], True),
    ("/vace/annotator", [4], "depth"), ("/vace/annotator", ["Pose"], "pose"),
    ("/vace/annotator", [2.0], "edges"), ("/vace/annotator", ["3"], "scribble"),
    ("/vace/annotator/index", [1], "gray"),
    ("/vace/context_scale", [-1.0], 0.0), ("/vace/context_scale", [3], 2.0),
    ("/vace/context_scale", ["0.5"], 0.5), ("/vace/context_scale", [0.1], 0.1),
    ("/vace/context_scale/norm", [0.25], 0.5), ("/vace/context_scale/norm", [5.0], 2.0),
    ("/vace/seed/norm", [0.5], math.floor(0.5 * INT32_MAX + 0.5)),
    ("/vace/blend/index", ["1"], "slerp"),
    ("/vace/norm/context_scale", [0.25], 0.5), ("/vace/index/blend", [1], "slerp"),
    ("/vace/norm/lora/pipeline", [0.5], 1.0),
    ("/vace/refs", ["a.png"], ("a.png",)), ("/vace/refs", [], ()),
    ("/vace/refs", ["x.png", "y.png"], ("x.png", "y.png")), ("/vace/refs", [""], ()),
    ("/vace/refs", ['["p.png", "q.png"]'], ("p.png", "q.png")),
    ("/vace/prompts", ["a", 1.0, "b", 0.5], (("a", 1.0), ("b", 0.5))),
    ("/vace/prompts", ['[{"text": "j", "weight": 2}]'], (("j", 2.0),)),
    ("/vace/prompts", ["[not json] a cat"], (("[not json] a cat", 1.0),)),
    ("/vace/prompt", ["two", "words"], "two words"), ("/vace/prompt", [7], "7"),
    ("/vace/lora/ink/", [0.5], 0.5),  # trailing slash tolerated
    ("/vace/steps", [(3, "d")], 3),  # a 64-bit double
    ("/vace/seed", [(2**40, "h")], INT32_MAX),  # int64 clamps
]


@pytest.mark.parametrize("address, args, expected", ACCEPTED)
def test_coercion_table(rig, peer, address, args, expected):
    name = rig.schema.resolve(address.rstrip("/"))[0].name
    peer.drain()
    peer.send(address, *args)
    p = rig.schema[name]
    peer.expect(p.address, value_args(p, expected))
    got = rig.store.get(name)
    assert got == pytest.approx(expected) if isinstance(expected, float) else got == expected


REJECTED = [
    ("/vace/context_scale", ["abc"], "expected a number"),
    ("/vace/context_scale", [(float("nan"), "d")], "finite"),
    ("/vace/steps", [], "expects one value, got 0"),
    ("/vace/steps", [1, 2], "expects one value, got 2"),
    ("/vace/annotator", ["bogus"], "not one of"),
    ("/vace/annotator", [11], "index 11"),
    ("/vace/annotator/index", ["depth"], "index number"),
    ("/vace/pause", ["maybe"], "expected a bool"),
    ("/vace/prompts", [0.5, "a"], "expected text at position 1"),
    ("/vace/prompts", ["a", 0.0], "weight above 0"),
    ("/vace/refs", ["a", "b", "c", "d"], "at most 3"),
    ("/vace/prompt", [], "expects text"),
    ("/vace/steps", [(b"\x01\x02", "b")], "blob"),
    ("/vace/width", [512], "load-time"),
    ("/vace/steps/norm", ["x"], "expected a number"),
    ("/vace/nope", [1], "unknown address '/vace/nope'"),
    ("/vace/step", [1], "did you mean /vace/steps"),
    ("/other/thing", [1], "listens under /vace/"),
    ("/vace/preset/load", ["no-such-preset"], "no preset named 'no-such-preset'"),
    ("/vace/preset/load", ["../../etc/passwd"], "preset name"),
    ("/vace/preset/save", [], "expects one name"),
    ("/vace/get", ["/vace/reset"], "action"),
    ("/vace/get", ["/vace/status/fps_missing"], "no status"),
    ("/vace/hello", [70000], "not in 1..65535"),
    ("/vace/hello", [float("inf")], "expects a port number"),
    ("/vace/hello", [float("nan")], "expects a port number"),
    ("/vace/hello", ["1e999"], "expects a port number"),
]


@pytest.mark.parametrize("address, args, reason", REJECTED)
def test_rejections_reply_with_error_and_keep_serving(rig, peer, address, args, reason):
    before = rig.store.values()
    peer.drain()
    peer.send(address, *args)
    err = peer.error(reason)
    assert reason in err
    assert rig.store.values() == before  # nothing changed
    alive(rig, peer)


def test_malformed_packets_are_reported(rig, peer):
    peer.drain()
    peer.send_raw(b"hello")
    assert "not an OSC packet" in peer.error()
    peer.send_raw(b"/vace/seed\x00\x00,i\x00\x00\x00\x01")  # truncated int
    assert "malformed OSC packet" in peer.error()
    peer.send_raw(b"#bundle\x00\x00\x00")
    peer.error("malformed")
    alive(rig, peer)


def test_bundle_lands_in_one_snapshot_and_time_tags_are_not_waited_for(rig, peer):
    rig.store.snapshot()
    future = time.time() + 30.0  # python-osc's dispatcher would sleep 30 s here
    peer.send_packet(bundle(msg("/vace/seed", 7), msg("/vace/annotator", "pose"),
                            msg("/vace/reset"), msg("/vace/steps", 2), timestamp=future))
    peer.expect("/vace/steps", [2], timeout=2.0)
    snap = rig.store.snapshot()
    assert {"seed", "annotator", "steps"} <= snap.changed
    assert snap["seed"] == 7 and snap["annotator"] == "pose" and snap.action("reset")


def test_bundles_are_atomic_against_a_racing_run_loop(rig, peer):
    rig.store.set("seed", 0)
    stop = threading.Event()
    torn = []
    seen = set()

    def run_loop():
        while not stop.is_set():
            v = rig.store.snapshot().values
            i = v["seed"]
            seen.add(i)
            if i and (v["transition_chunks"] != i % 33 or v["extension_chunks"] != i % 64 + 1):
                torn.append(dict(v))

    t = threading.Thread(target=run_loop)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # force thread switches inside packet handling
    t.start()
    try:
        n = 300
        for i in range(1, n + 1):
            peer.send_packet(bundle(msg("/vace/transition_chunks", i % 33),
                                    msg("/vace/extension_chunks", i % 64 + 1),
                                    msg("/vace/seed", i)))
            if i % 5 == 0:
                time.sleep(0.001)
        deadline = time.monotonic() + 3
        while rig.store.get("seed") != n and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(switch)
    assert rig.store.get("seed") == n
    assert not torn, torn[:2]
    assert len(seen) > 10  # the run loop really interleaved with the bundles


def test_a_bundle_with_one_bad_message_applies_the_rest(rig, peer):
    peer.drain()
    peer.send_packet(bundle(msg("/vace/steps", "x"), msg("/vace/seed", 1234),
                            msg("/vace/get", "/vace/seed")))
    peer.error("/vace/steps")
    peer.expect("/vace/seed", [1234])
    assert rig.store.get("seed") == 1234


def test_describe_returns_the_schema_with_values(rig, peer):
    peer.drain()
    peer.send("/vace/describe")
    doc = json.loads(peer.expect("/vace/describe")[0])
    names = [p["name"] for p in doc["params"]]
    assert names == [p.name for p in rig.schema] and "lora/ink" in names
    width = next(p for p in doc["params"] if p["name"] == "width")
    assert width["value"] == 640 and width["live"] is False
    peer.send("/vace/describe", "steps")
    one = json.loads(peer.expect("/vace/describe")[0])
    assert one["name"] == "steps" and one["value"] == rig.store.get("steps")


def test_hello_registers_a_feedback_port(rig, peer):
    listener = Peer(rig.address)  # stands in for TouchDesigner's OSC In on its own port
    try:
        peer.send("/vace/hello", listener.port)
        listener.expect("/vace/index/annotator")  # the full dump arrives there
        peer.send("/vace/context_scale", 0.3)
        listener.expect("/vace/context_scale", [0.3])
        listener.expect("/vace/norm/context_scale", [0.15])  # a leaf of its own
        peer.send("/vace/steps", "zz")
        assert "/vace/steps" in listener.error()  # errors reach registered peers too
    finally:
        listener.close()


def test_configured_feedback_target_and_status(tmp_path):
    target = Peer(("127.0.0.1", 9))  # only listens
    calls = []

    def status():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("run loop hiccup")  # must not stop status
        return {"fps": 15.5, "latency_ms": 80.0, "chunk": len(calls), "dropped": 0,
                "gpu_mem_mb": 1024.0, "paused": False}

    cfg = OscConfig(port=0, oscquery_port=None, feedback=(("127.0.0.1", target.port),),
                    status_hz=50)
    with OscServer(ParamStore(), None, cfg, status_provider=status) as server:
        target.expect("/vace/status/fps", [15.5])
        target.wait_for(lambda a, p: a == "/vace/status/chunk" and p[0] >= 3)
        target.expect("/vace/status/paused", [0])
        sender = Peer(server.address)
        sender.send("/vace/seed", 5)
        target.expect("/vace/seed", [5])  # echo to the configured target
        sender.send("/vace/preset/list")
        assert "presets are not enabled" in target.error()
        sender.send("/vace/get", "/vace/status/fps")
        sender.expect("/vace/status/fps", [15.5])
        sender.close()
    target.close()


def test_presets_over_osc(rig, peer):
    peer.drain()
    peer.send_packet(bundle(msg("/vace/context_scale", 2.0), msg("/vace/annotator", "depth"),
                            msg("/vace/prompts", "saved prompt", 1.0),
                            msg("/vace/preset/save", "my look")))
    _, params = peer.wait_for(lambda a, p: a == "/vace/preset/saved")
    assert params[0] == "my look" and params[1].endswith("my look.json")
    peer.send("/vace/preset/list")
    names = peer.expect("/vace/preset/list")
    assert "my look" in names and "neon-city" in names
    rig.store.apply({"context_scale": 1.0, "annotator": "none", "prompt": "other"})
    rig.store.snapshot()
    peer.send("/vace/preset/load", "my look", 4.0)
    peer.expect("/vace/preset/loaded", ["my look", 4])
    snaps = []
    for _ in range(4):
        snaps.append(rig.store.snapshot())
        peer.expect("/vace/context_scale", [snaps[-1]["context_scale"]])  # morph steps echo
    assert [s["context_scale"] for s in snaps] == [1.25, 1.5, 1.75, 2.0]
    assert snaps[0]["prompts"] == (("other", 0.75), ("saved prompt", 0.25))
    assert [s["annotator"] for s in snaps] == ["none", "depth", "depth", "depth"]


def test_corrupt_preset_over_osc_loads_nothing(rig, peer):
    path = rig.presets.user_dir / "broken.json"
    path.write_text('{"format": 1, "params": {"steps": 2,', encoding="utf-8")
    rig.store.snapshot()
    before = rig.store.values()
    peer.drain()
    peer.send("/vace/preset/load", "broken", 2)
    err = peer.error("broken.json")
    assert "invalid JSON at line 1" in err
    snap = rig.store.snapshot()
    assert dict(snap.values) == before and snap.actions == () and snap.morph is None
    alive(rig, peer)


def test_lan_binding_is_opt_in_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="vacelive.bridge.osc"):
        with OscServer(ParamStore(), config=OscConfig(host="0.0.0.0", port=0,
                                                      oscquery_port=None)):
            pass
    assert any("anyone on the network" in r.message for r in caplog.records)
    assert OscConfig().host == "127.0.0.1"


def test_port_in_use_gives_a_clear_error(rig):
    with pytest.raises(OSError, match="cannot listen for OSC on 127.0.0.1"):
        OscServer(ParamStore(), config=OscConfig(port=rig.address[1], oscquery_port=None)).start()


def test_deeply_nested_bundle_is_walked_without_recursion(rig, peer):
    # python-osc's recursive parser can abort the interpreter on this; ours walks it iteratively
    inner = msg("/vace/seed", 4321).dgram
    data = inner
    for _ in range(3000):
        data = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + len(data).to_bytes(4, "big") + data
    peer.drain()
    peer.send_raw(data)
    peer.expect("/vace/seed", [4321])
    assert rig.store.get("seed") == 4321


def test_oscquery_http_namespace(rig, peer):
    import urllib.error
    import urllib.request

    base = f"http://127.0.0.1:{rig.oscquery.address[1]}"

    def get(path):
        with urllib.request.urlopen(base + path, timeout=3) as r:
            return r.status, json.loads(r.read() or b"null")

    peer.send("/vace/steps", 2)
    peer.expect("/vace/steps", [2])
    _, root = get("/")
    vace = root["CONTENTS"]["vace"]["CONTENTS"]
    for p in rig.schema:  # every parameter is discoverable
        leaf = root
        for part in p.address.strip("/").split("/"):
            leaf = leaf["CONTENTS"][part]
        assert leaf["FULL_PATH"] == p.address and "TYPE" in leaf and "DESCRIPTION" in leaf
        assert leaf["ACCESS"] == (0 if p.type == "action" else 3 if p.live else 1)
        assert "CONTENTS" not in leaf  # every method is a leaf
    steps = vace["steps"]
    assert steps["VALUE"] == [2] and steps["RANGE"] == [{"MIN": 1, "MAX": 4}]
    assert vace["norm"]["CONTENTS"]["steps"]["FULL_PATH"] == "/vace/norm/steps"
    assert vace["norm"]["CONTENTS"]["steps"]["VALUE"] == [pytest.approx(1 / 3)]
    assert vace["annotator"]["RANGE"] == [{"VALS": list(rig.schema["annotator"].choices)}]
    assert vace["width"]["VALUE"] == [640] and vace["width"]["ACCESS"] == 1
    assert vace["preset"]["CONTENTS"]["load"]["ACCESS"] == 2
    assert "fps" in vace["status"]["CONTENTS"]
    assert get("/vace/steps?VALUE") == (200, {"VALUE": [2]})
    assert get("/vace/lora/ink")[1]["FULL_PATH"] == "/vace/lora/ink"
    status, info = get("/?HOST_INFO")
    assert info["OSC_PORT"] == rig.address[1] and info["OSC_TRANSPORT"] == "UDP"
    assert info["EXTENSIONS"]["VALUE"] is True
    with pytest.raises(urllib.error.HTTPError) as exc:
        get("/vace/nope")
    assert exc.value.code == 404


def test_a_new_senders_first_message_is_echoed(rig):
    for i in range(20):
        fresh = Peer(rig.address)
        try:
            fresh.send("/vace/seed", 500 + i)
            fresh.expect("/vace/seed", [500 + i], timeout=2.0)
        finally:
            fresh.close()


def test_cli_arguments_build_the_config():
    import argparse

    from vacelive.bridge.osc import add_cli_arguments

    ap = argparse.ArgumentParser()
    add_cli_arguments(ap)
    cfg = OscConfig.from_args(ap.parse_args([]))
    assert (cfg.host, cfg.port, cfg.oscquery_port, cfg.feedback) == ("127.0.0.1", 7700, 7701, ())
    cfg = OscConfig.from_args(ap.parse_args([
        "--osc-host", "0.0.0.0", "--osc-port", "9000", "--oscquery-port", "0",
        "--osc-feedback", "127.0.0.1:7710", "--osc-feedback", "10.0.0.5:9001"]))
    assert cfg.host == "0.0.0.0" and cfg.port == 9000 and cfg.oscquery_port is None
    assert cfg.feedback == (("127.0.0.1", 7710), ("10.0.0.5", 9001))
    with pytest.raises(SystemExit):
        ap.parse_args(["--osc-feedback", "nohost"])


@pytest.mark.parametrize("path", ["/", "/vace/steps", "/?HOST_INFO"])
def test_oscquery_client_that_hangs_up_early_logs_no_traceback(rig, peer, path, capfd):
    """Clients that send a request and close before the reply (or send half a request): no
    traceback, and the server keeps answering."""
    import urllib.request

    port = rig.oscquery.address[1]
    for data in (f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), b"GET / HT"):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(data)
        s.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/vace/steps?VALUE", timeout=3) as r:
        assert r.status == 200
    assert "Traceback" not in capfd.readouterr().err
    alive(rig, peer)
