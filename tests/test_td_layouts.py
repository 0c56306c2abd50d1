"""The generated TouchOSC and Open Stage Control layouts parse, cover the schema's controls and
feedback, drive the real OSC server correctly, and are checked for staleness."""
import json
import socket
import xml.etree.ElementTree as ET
import zlib

from vacelive.bridge.osc.server import OscConfig, OscServer
from vacelive.bridge.presets import PresetLibrary
from vacelive.bridge.schema import CONTROLS, DEFAULT_SCHEMA, STATUS_FIELDS, build_schema
from vacelive.bridge.param_types import ParamError
from vacelive.bridge.store import ParamStore
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket
import surface_layouts as layouts


def tosc_root():
    return ET.fromstring(zlib.decompress(layouts.TOSC_PATH.read_bytes()))


def prop(node, key):
    for p in node.find("properties"):
        if p.find("key").text == key:
            return p.find("value")
    return None


def controls(root):
    """{name: (node type, [osc message elements])} of every node."""
    out = {}
    for node in root.iter("node"):
        msgs = node.find("messages")
        out[prop(node, "name").text] = (node.get("type"),
                                        [] if msgs is None else msgs.findall("osc"))
    return out


def osc_path(osc):
    return "".join(p.find("value").text for p in osc.find("path").findall("partial"))


def test_committed_layouts_are_current():
    assert layouts.stale() == [], "run `python scripts/surface_layouts.py --write`"


def test_stale_layouts_are_detected(tmp_path):
    assert layouts.main(["--write", "--dir", str(tmp_path)]) == 0
    assert layouts.main(["--check", "--dir", str(tmp_path)]) == 0
    # a schema with one more LoRA makes both files stale
    other = build_schema(["neon"])
    assert len(layouts.stale(tmp_path / "vacelive.tosc", tmp_path / "vacelive-osc.json",
                             schema=other)) == 2
    # a hand edit too
    osc = tmp_path / "vacelive-osc.json"
    osc.write_text(osc.read_text().replace("/vace/seed", "/vace/sead"))
    assert layouts.main(["--check", "--dir", str(tmp_path)]) == 1


def test_touchosc_layout_structure_and_coverage():
    root = tosc_root()
    assert root.tag == "lexml" and root.get("version") == "3"
    top = root.find("node")
    assert top.get("type") == "GROUP"
    pager = top.find("children/node")
    assert pager.get("type") == "PAGER"
    pages = [prop(p, "tabLabel").text for p in pager.find("children").findall("node")]
    assert pages[0] == layouts.SHOW
    assert set(pages[1:]) == {p.group for p in layouts.surface_params()}
    ids = [n.get("ID") for n in root.iter("node")]
    assert len(ids) == len(set(ids))
    found = controls(root)
    sent = {osc_path(o) for _, msgs in found.values() for o in msgs
            if o.find("send").text == "1"}
    received = {osc_path(o) for _, msgs in found.values() for o in msgs
                if o.find("receive").text == "1"}
    for p in layouts.surface_params():
        if p.numeric and not layouts._wide(p):
            assert p.norm_address in sent and p.norm_address in received, p.name
        else:
            assert p.address in sent, p.name
        if p.type in ("bool", "enum") or layouts._wide(p):
            assert p.address in received, p.name
    for f in STATUS_FIELDS:
        assert f.address in received
    assert {"/vace/error", "/vace/notice", "/vace/prompt"} <= received
    assert "/vace/hello" in sent and "/vace/preset/load" in sent
    assert {f"preset_{n}" for n, _ in layouts.presets()} <= set(found)
    # every address a control sends exists on the engine
    control_addresses = {c.address for c in CONTROLS}
    for address in sent:
        if address not in control_addresses:
            DEFAULT_SCHEMA.resolve(address)


def test_open_stage_control_session_structure_and_coverage():
    doc = json.loads(layouts.OSC_PATH.read_text())
    assert doc["type"] == "session" and doc["createdWith"] == "Open Stage Control"
    assert doc["content"]["type"] == "root"
    widgets = [w for tab in doc["content"]["tabs"] for w in tab["widgets"]]
    ids = [w["id"] for w in widgets]
    assert len(ids) == len(set(ids))
    by_address = {}
    for w in widgets:
        by_address.setdefault(w["address"], []).append(w)
    for p in layouts.surface_params() + layouts.text_params():
        (w,) = [w for w in by_address[p.address] if w["id"].startswith("vace_")]
        if p.numeric:
            assert w["type"] == "fader" and w["range"]["min"] == p.min
            assert w["range"]["max"] == (p.min + layouts.SLIDER_SPAN if layouts._wide(p)
                                         else p.max)
            assert w["default"] == p.default and w["typeTags"] == ("i" if p.type == "int"
                                                                   else "f")
        elif p.type == "enum":
            assert w["type"] == "dropdown" and list(w["values"].values()) == list(p.choices)
        elif p.type == "bool":
            assert w["type"] == "button" and w["mode"] == "toggle"
        elif p.type == "action":
            assert w["type"] == "button" and w["mode"] == "tap"
        else:
            assert w["type"] == "input"
    for f in STATUS_FIELDS:
        assert by_address[f.address][0]["type"] == "text"
    assert by_address["/vace/error"] and by_address["/vace/hello"][0]["on"] == \
        layouts.OSC_FEEDBACK_PORT
    presets = {w["preArgs"][0]: w["on"] for w in by_address["/vace/preset/load"]}
    assert presets == dict(layouts.presets())


# --------------------------------------------------------------------------------------------
# play the TouchOSC layout against the real server: what each control would send

def _arg(partial, x):
    kind, conv = partial.find("type").text, partial.find("conversion").text
    value = partial.find("value").text
    if kind == "VALUE":
        lo, hi = float(partial.find("scaleMin").text), float(partial.find("scaleMax").text)
        v = lo + x * (hi - lo)
    else:
        v = value
    return {"INTEGER": lambda a: int(round(float(a))), "FLOAT": float,
            "STRING": str, "BOOLEAN": lambda a: bool(float(a))}[conv](v)


def test_touchosc_controls_drive_the_real_server(tmp_path):
    store = ParamStore()
    server = OscServer(store, PresetLibrary(user_dir=tmp_path),
                       OscConfig(port=0, oscquery_port=None)).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        expect = {}  # param name -> the value its last control message sets
        sent = 0
        for name, (kind, msgs) in controls(tosc_root()).items():
            for osc in msgs:
                if osc.find("send").text != "1":
                    continue
                x = 0.75 if kind == "FADER" else 1.0  # a fader at 3/4, a button pressed
                address = osc_path(osc)
                norm = address.startswith("/vace/norm/")
                base = "/vace/" + address[len("/vace/norm/"):] if norm else address
                if any(p.address == base and p.pipelines for p in DEFAULT_SCHEMA):
                    continue  # another pipeline's parameter: refused here (test_pipeline_params.py)
                b = OscMessageBuilder(address)
                args = [_arg(partial, x) for partial in osc.find("arguments").findall("partial")]
                for a in args:
                    b.add_arg(a)
                sock.sendto(b.build().dgram, server.address)
                sent += 1
                try:
                    p = DEFAULT_SCHEMA.resolve(base)[0]
                except ParamError:
                    continue  # a control address (hello, preset load)
                if p.type == "action":
                    continue
                expect[p.name] = (p.from_normalized(0.75) if norm
                                  else True if p.type == "bool" else args[0])
        assert set(expect) >= {p.name for p in layouts.surface_params()
                               if p.type != "action" and not p.pipelines}
        replies = []
        sock.settimeout(0.5)
        try:
            while True:
                data, _ = sock.recvfrom(65535)
                replies += [m.message for m in OscPacket(data).messages]
                sock.settimeout(0.2)
        except socket.timeout:
            pass
        assert [m.params for m in replies if m.address == "/vace/error"] == []
        assert server.received == sent
        for name, value in expect.items():
            assert store.get(name) == value, name
    finally:
        sock.close()
        server.stop()
