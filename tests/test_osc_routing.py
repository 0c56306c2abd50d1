"""The OSC routing table: OSC 1.0 address patterns, over real UDP and against a plain matcher."""
from __future__ import annotations

import pytest

from test_osc_server import Peer
from vacelive.bridge.osc import OscConfig, OscServer
from vacelive.bridge.osc.routing import RoutingTable, compile_pattern
from vacelive.bridge.param_types import ParamError
from vacelive.bridge.schema import build_schema
from vacelive.bridge.store import ParamStore


def spec_match(pattern: str, address: str) -> bool:
    """OSC 1.0 matching written out character by character (no regular expressions)."""
    pp, ap = pattern.split("/"), address.split("/")
    return len(pp) == len(ap) and all(_part(p, a) for p, a in zip(pp, ap))


def _part(p: str, a: str) -> bool:
    if not p:
        return not a
    c = p[0]
    if c == "*":
        return any(_part(p[1:], a[i:]) for i in range(len(a) + 1))
    if c == "?":
        return bool(a) and _part(p[1:], a[1:])
    if c == "[":
        end = p.index("]")
        body, negate = p[1:end], p[1] == "!"
        if negate:
            body = body[1:]
        chars, i = set(), 0
        while i < len(body):
            if i + 2 < len(body) and body[i + 1] == "-":
                chars |= {chr(k) for k in range(ord(body[i]), ord(body[i + 2]) + 1)}
                i += 3
            else:
                chars.add(body[i])
                i += 1
        return bool(a) and ((a[0] in chars) != negate) and _part(p[end + 1:], a[1:])
    if c == "{":
        end = p.index("}")
        return any(a.startswith(w) and _part(p[end + 1:], a[len(w):])
                   for w in p[1:end].split(","))
    return bool(a) and a[0] == c and _part(p[1:], a[1:])


ADDRESSES = ["/vace/seed", "/vace/steps", "/vace/lora/ink", "/vace/lora/glow2", "/vace/lora/a-b",
             "/vace/steps/norm", "/vace/lora/pipeline", "/vace/blend/index", "/vace/x", "/vace/-"]
PATTERNS = ["/vace/*", "/vace/s?eps", "/vace/s*", "/vace/lora/*", "/vace/lora/glow[0-9]",
            "/vace/lora/[!g]*", "/vace/{seed,steps}", "/vace/{seed,steps}/norm", "/vace/*/*",
            "/vace/lora/[a-]*", "/vace/[-x]", "/vace/lora/*[0-9]", "/vace/*s", "/*/lora/ink",
            "/vace/lora/{ink,pipeline,}", "/vace/??", "/vace/?", "/vace/[!a-z]", "/vace/st*s"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_compiled_patterns_agree_with_the_spec_rules(pattern):
    rx = compile_pattern(pattern)
    got = [a for a in ADDRESSES if rx.fullmatch(a)]
    assert got == [a for a in ADDRESSES if spec_match(pattern, a)]


def test_each_pattern_form_on_its_own():
    def hits(pattern):
        return [a for a in ADDRESSES if compile_pattern(pattern).fullmatch(a)]

    assert hits("/vace/lora/*") == ["/vace/lora/ink", "/vace/lora/glow2", "/vace/lora/a-b",
                                    "/vace/lora/pipeline"]  # '*' stops at '/'
    assert hits("/vace/st?ps") == ["/vace/steps"]
    assert hits("/vace/lora/glow[0-9]") == ["/vace/lora/glow2"]
    assert hits("/vace/lora/glow[!0-9]") == []
    assert hits("/vace/lora/[!gp]*") == ["/vace/lora/ink", "/vace/lora/a-b"]
    assert hits("/vace/{seed,steps}") == ["/vace/seed", "/vace/steps"]
    assert hits("/vace/[x-]") == ["/vace/x", "/vace/-"]  # trailing '-' is literal
    assert hits("/vace/[a!]") == []  # '!' not first is a literal


@pytest.mark.parametrize("bad", ["/vace/[ab", "/vace/{a,b", "/vace/a]", "/vace/[]",
                                 "/vace/[z-a]", "/vace/{a/b}", "/vace/[a/b]", "/vace/{a*,b}"])
def test_malformed_patterns_are_param_errors(bad):
    with pytest.raises(ParamError, match="address pattern"):
        compile_pattern(bad)


def test_literal_only_routes_are_not_reached_by_patterns():
    table = RoutingTable()
    calls = []
    table.add("/vace/get", lambda: calls.append("get"), patterns=False)
    table.add("/vace/seed", lambda: calls.append("seed"))
    assert [r.address for r in table.match("/vace/*")] == ["/vace/seed"]
    assert [r.address for r in table.match("/vace/get")] == ["/vace/get"]
    with pytest.raises(ValueError):
        table.add("/vace/seed", lambda: None)
    with pytest.raises(ValueError):
        table.add("/vace/s*", lambda: None)


@pytest.fixture(scope="module")
def rig():
    store = ParamStore(build_schema(["ink", "glow2"]), load_time={"width": 640})
    server = OscServer(store, config=OscConfig(port=0, oscquery_port=None)).start()
    yield server
    server.stop()


@pytest.fixture
def peer(rig):
    p = Peer(rig.address)
    yield p
    p.close()


def test_lora_star_sets_every_lora_scale_in_one_snapshot(rig, peer):
    rig.store.snapshot()
    peer.send("/vace/lora/*", 0.5)
    for name in ("pipeline", "ink", "glow2"):
        peer.expect(f"/vace/lora/{name}", [0.5])
    snap = rig.store.snapshot()
    assert {n for n in snap.changed if n.startswith("lora/")} == {
        "lora/pipeline", "lora/ink", "lora/glow2"}
    assert all(snap[f"lora/{n}"] == 0.5 for n in ("pipeline", "ink", "glow2"))


def test_each_pattern_form_over_udp(rig, peer):
    peer.send("/vace/lora/glow[0-9]", 0.25)
    peer.expect("/vace/lora/glow2", [0.25])
    peer.send("/vace/lora/[!g]*", 0.75)  # pipeline and ink, not glow2
    peer.expect("/vace/lora/ink", [0.75])
    peer.send("/vace/{seed,transition_chunks}", 7)
    peer.expect("/vace/transition_chunks", [7])
    assert rig.store.get("seed") == 7
    peer.send("/vace/st?ps", 2)
    peer.expect("/vace/steps", [2])
    peer.send("/vace/{steps,context_scale}/norm", 1.0)
    peer.expect("/vace/context_scale", [2.0])
    assert rig.store.get("steps") == 4
    assert rig.store.get("lora/glow2") == 0.25 and rig.store.get("lora/pipeline") == 0.75


def test_a_pattern_reaches_neither_controls_nor_load_time_params(rig, peer):
    before = rig.store.get("seed")
    peer.drain()
    peer.send("/vace/{width,seed}", before + 1)  # width is load-time: only seed moves
    peer.expect("/vace/seed", [before + 1])
    peer.send("/vace/{get,preset}", 1)
    assert "matches no parameter" in peer.error("/vace/{get,preset}")


def test_partial_failures_of_a_pattern_are_reported_and_the_rest_applies(rig, peer):
    peer.drain()
    peer.send("/vace/{steps,prompt}", "zz")  # a fine prompt, a bad step count
    assert "/vace/steps" in peer.error("steps")
    # the error can be sent before the server thread has applied the prompt: wait for that
    if rig.store.get("prompt") != "zz":
        peer.expect("/vace/prompt", ["zz"])  # its echo follows the store write
    assert rig.store.get("prompt") == "zz"


@pytest.mark.parametrize("address, reason", [
    ("/vace/nope", "unknown address '/vace/nope'"),
    ("/vace/lora/q*", "matches no parameter"),
    ("/vace/lora/[ab", "'[' without ']'"),
    ("/vace/step", "did you mean /vace/steps"),
])
def test_unknown_addresses_and_patterns_still_get_an_error(rig, peer, address, reason):
    before = rig.store.values()
    peer.drain()
    peer.send(address, 1)
    assert reason in peer.error(reason)
    assert rig.store.values() == before


def test_get_with_a_pattern_reads_every_match(rig, peer):
    rig.store.apply({"lora/ink": 0.1, "lora/glow2": 0.2})
    peer.drain()
    peer.send("/vace/get", "/vace/lora/{ink,glow2}")
    peer.expect("/vace/lora/ink", [0.1])
    peer.expect("/vace/lora/glow2", [0.2])
