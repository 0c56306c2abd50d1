"""Control-surface layouts generated from the parameter schema (a developer tool: the generated
files ship in the package, this generator does not).

    python scripts/surface_layouts.py --write   # regenerate touchdesigner/surfaces/*
    python scripts/surface_layouts.py --check   # exit 1 if the committed files are stale

Two files, both with the same controls (one per live parameter a surface can show), preset
buttons for the shipped presets, a "hello" button that registers the surface for feedback, and
feedback read-outs (the /vace/status/* fields, /vace/error, /vace/notice):

- `vacelive.tosc`: a TouchOSC (2021+) layout: zlib-compressed XML (`<lexml version='3'>`),
  one PAGER page per schema group plus a "Show" page. The structure follows public generators
  and files made by TouchOSC (node/properties/values/messages/osc elements); it has NOT been
  opened in TouchOSC here (see docs/touchdesigner.md).
- `vacelive-osc.json`: an Open Stage Control session (`"type": "session"`, root -> tabs ->
  widgets). Missing widget properties take Open Stage Control's defaults.

Mapping (both surfaces):
    float / int   fader; TouchOSC sends 0..1 to /vace/norm/<name> and shows that echo;
                  ints wider than td_params.SLIDER_SPAN (seed) send the value itself over the
                  first SLIDER_SPAN values
    bool          toggle (0/1)           enum   TouchOSC: a button per choice (sends the
                                                name) + a label showing the echo; Open Stage
                                                Control: dropdown (names)
    action        momentary button       str    Open Stage Control text input; TouchOSC
                                                shows the prompt as a read-only label
    prompts, refs no control (use TouchDesigner or OSC directly; refs as one path input on
                  Open Stage Control)
"""
import argparse
import json
import sys
import uuid
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

from vacelive.bridge.presets import SHIPPED_DIR
from vacelive.bridge.schema import DEFAULT_SCHEMA, STATUS_FIELDS
from vacelive.bridge.param_types import PREFIX, Param, Schema
from vacelive.touchdesigner.td_params import SLIDER_SPAN

SURFACES = Path(__file__).resolve().parents[1] / "touchdesigner" / "surfaces"
TOSC_PATH = SURFACES / "vacelive.tosc"
OSC_PATH = SURFACES / "vacelive-osc.json"
TOUCHOSC_FEEDBACK_PORT = 9000  # TouchOSC's usual receive port
OSC_FEEDBACK_PORT = 7720  # the port given to `open-stage-control --osc-port`
SHOW = "Show"

W, H, TAB = 1024, 768, 40  # TouchOSC page size and tab bar
ROW, GAP, LABEL_W = 56, 10, 230


def surface_params(schema: Schema = DEFAULT_SCHEMA) -> list[Param]:
    """Live parameters that get a control (both surfaces)."""
    return [p for p in schema.live if p.type in ("float", "int", "bool", "enum", "action")]


def text_params(schema: Schema = DEFAULT_SCHEMA) -> list[Param]:
    """Live text parameters (Open Stage Control inputs; TouchOSC shows `prompt` only)."""
    return [p for p in schema.live if p.type in ("str", "str_list")]


def presets(shipped: Path = SHIPPED_DIR) -> list[tuple[str, int]]:
    """(name, morph_chunks) of the shipped presets, sorted by name."""
    out = []
    for f in sorted(shipped.glob("*.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        out.append((data.get("name", f.stem), int(data.get("morph_chunks") or 0)))
    return out


def _wide(p: Param) -> bool:
    return p.type == "int" and p.max - p.min > SLIDER_SPAN


def _label(p: Param) -> str:
    name = p.name.replace("lora/", "LoRA ").replace("_", " ")
    return name[:1].upper() + name[1:] + (f" ({p.unit})" if p.unit else "")


def _groups(params: list[Param]) -> dict[str, list[Param]]:
    out: dict[str, list[Param]] = {}
    for p in params:
        out.setdefault(p.group, []).append(p)
    return out


# --------------------------------------------------------------------------------------------
# TouchOSC

def _id(path: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "vacelive-touchosc/" + path))


def _prop(props: ET.Element, kind: str, key: str, value: Any) -> None:
    prop = ET.SubElement(props, "property", type=kind)
    ET.SubElement(prop, "key").text = key
    v = ET.SubElement(prop, "value")
    if kind == "r":
        for k, x in zip("xywh", value):
            ET.SubElement(v, k).text = str(int(x))
    elif kind == "c":
        for k, x in zip("rgba", value):
            ET.SubElement(v, k).text = f"{x:g}"
    elif kind == "b":
        v.text = "1" if value else "0"
    else:
        v.text = str(value)


def _value(values: ET.Element, key: str, default: Any) -> None:
    v = ET.SubElement(values, "value")
    ET.SubElement(v, "key").text = key
    ET.SubElement(v, "locked").text = "0"
    ET.SubElement(v, "lockedDefaultCurrent").text = "0"
    ET.SubElement(v, "default").text = str(default)
    ET.SubElement(v, "defaultPull").text = "0"


def _partial(parent: ET.Element, type_: str, conversion: str, value: Any,
             lo: float = 0, hi: float = 1) -> None:
    p = ET.SubElement(parent, "partial")
    ET.SubElement(p, "type").text = type_
    ET.SubElement(p, "conversion").text = conversion
    ET.SubElement(p, "value").text = str(value)
    ET.SubElement(p, "scaleMin").text = f"{lo:g}"
    ET.SubElement(p, "scaleMax").text = f"{hi:g}"


def _osc(messages: ET.Element, address: str, args: list[tuple], send: bool = True,
         receive: bool = True, trigger: str = "ANY") -> None:
    """One <osc> message: args = [(type, conversion, value, lo, hi), ...]."""
    osc = ET.SubElement(messages, "osc")
    for tag, on in (("enabled", True), ("send", send), ("receive", receive),
                    ("feedback", False)):
        ET.SubElement(osc, tag).text = "1" if on else "0"
    ET.SubElement(osc, "connections").text = "00001"
    triggers = ET.SubElement(osc, "triggers")
    t = ET.SubElement(triggers, "trigger")
    ET.SubElement(t, "var").text = "x"
    ET.SubElement(t, "condition").text = trigger
    path = ET.SubElement(osc, "path")
    _partial(path, "CONSTANT", "STRING", address)
    arguments = ET.SubElement(osc, "arguments")
    for a in args:
        _partial(arguments, *a)


def _node(parent: ET.Element, type_: str, name: str, frame: tuple, path: str,
          props: list[tuple] = (), values: list[tuple] = ()) -> ET.Element:
    node = ET.SubElement(parent, "node", ID=_id(path), type=type_)
    pe = ET.SubElement(node, "properties")
    _prop(pe, "s", "name", name)
    _prop(pe, "r", "frame", frame)
    for kind, key, value in props:
        _prop(pe, kind, key, value)
    ve = ET.SubElement(node, "values")
    for key, default in values:
        _value(ve, key, default)
    return node


def _children(node: ET.Element) -> ET.Element:
    c = node.find("children")
    return c if c is not None else ET.SubElement(node, "children")


def _text(parent: ET.Element, name: str, frame: tuple, text: str, path: str,
          receive: str | None = None, size: int = 16) -> None:
    node = _node(parent, "LABEL", name, frame, path,
                 props=[("i", "textSize", size), ("b", "background", False),
                        ("b", "interactive", False)],
                 values=[("text", text), ("touch", "false")])
    if receive:
        _osc(ET.SubElement(node, "messages"), receive,
             [("VALUE", "STRING", "text")], send=False, receive=True)


def _control(parent: ET.Element, p: Param, y: int) -> None:
    x, w = LABEL_W + 2 * GAP, W - LABEL_W - 3 * GAP
    _text(parent, f"{p.name}.label", (GAP, y, LABEL_W, ROW), _label(p), p.name + "/label")
    frame = (x, y, w, ROW)
    name = p.name.replace("/", "_")
    if p.numeric:
        norm = 0.0 if _wide(p) else p.normalized(p.default)
        node = _node(parent, "FADER", name, frame, p.name,
                     props=[("i", "orientation", 1), ("b", "interactive", True)],
                     values=[("x", f"{norm:g}"), ("touch", "false")])
        msgs = ET.SubElement(node, "messages")
        if _wide(p):
            _osc(msgs, p.address, [("VALUE", "INTEGER", "x", p.min, p.min + SLIDER_SPAN)])
        else:
            _osc(msgs, p.norm_address, [("VALUE", "FLOAT", "x", 0, 1)])
    elif p.type == "bool":
        node = _node(parent, "BUTTON", name, (x, y, ROW * 2, ROW), p.name,
                     props=[("i", "buttonType", 2), ("b", "interactive", True)],
                     values=[("x", "1" if p.default else "0"), ("touch", "false")])
        _osc(ET.SubElement(node, "messages"), p.address, [("VALUE", "INTEGER", "x", 0, 1)])
    elif p.type == "action":
        node = _node(parent, "BUTTON", name, (x, y, ROW * 2, ROW), p.name,
                     props=[("i", "buttonType", 0), ("b", "interactive", True)],
                     values=[("x", "0"), ("touch", "false")])
        _osc(ET.SubElement(node, "messages"), p.address, [("CONSTANT", "INTEGER", 1)],
             receive=False, trigger="RISE")
    elif p.type == "enum":
        # one button per choice (a constant name: no guess about a radio's value range)
        # and a label showing the engine's current choice
        n = len(p.choices)
        cur = 140
        _text(parent, f"{p.name}.current", (x, y, cur, ROW), p.default, p.name + "/current",
              receive=p.address)
        seg = (w - cur - GAP) / n
        for i, c in enumerate(p.choices):
            bx = x + cur + GAP + i * seg
            node = _node(parent, "BUTTON", f"{name}_{c}", (bx, y, seg - 4, ROW),
                         f"{p.name}/choice/{c}",
                         props=[("i", "buttonType", 0), ("b", "interactive", True)],
                         values=[("x", "0"), ("touch", "false")])
            _osc(ET.SubElement(node, "messages"), p.address, [("CONSTANT", "STRING", c)],
                 receive=False, trigger="RISE")
            _text(parent, f"{p.name}.{c}", (bx, y, seg - 4, ROW), c,
                  f"{p.name}/choice/{c}/label", size=12)


def _show_page(parent: ET.Element, preset_list: list[tuple[str, int]],
               feedback_port: int) -> None:
    y = GAP
    _text(parent, "prompt", (GAP, y, W - 2 * GAP, ROW), "(prompt)", "show/prompt",
          receive=f"{PREFIX}/prompt", size=18)
    y += ROW + GAP
    cols = 4
    bw = (W - (cols + 1) * GAP) / cols
    for i, (name, chunks) in enumerate(preset_list):
        bx = GAP + (i % cols) * (bw + GAP)
        by = y + (i // cols) * (ROW + GAP)
        node = _node(parent, "BUTTON", f"preset_{name}", (bx, by, bw, ROW), "preset/" + name,
                     props=[("i", "buttonType", 0), ("b", "interactive", True)],
                     values=[("x", "0"), ("touch", "false")])
        _osc(ET.SubElement(node, "messages"), f"{PREFIX}/preset/load",
             [("CONSTANT", "STRING", name), ("CONSTANT", "INTEGER", chunks)],
             receive=False, trigger="RISE")
        _text(parent, f"preset_{name}.label", (bx, by, bw, ROW), name, f"preset/{name}/label")
    y += ((len(preset_list) + cols - 1) // cols) * (ROW + GAP)
    node = _node(parent, "BUTTON", "hello", (GAP, y, bw, ROW), "show/hello",
                 props=[("i", "buttonType", 0), ("b", "interactive", True)],
                 values=[("x", "0"), ("touch", "false")])
    _osc(ET.SubElement(node, "messages"), f"{PREFIX}/hello",
         [("CONSTANT", "INTEGER", feedback_port)], receive=False, trigger="RISE")
    _text(parent, "hello.label", (GAP, y, bw, ROW), f"hello (feedback :{feedback_port})",
          "show/hello/label", size=12)
    y += ROW + GAP
    for f in STATUS_FIELDS:
        _text(parent, f"status_{f.name}.label", (GAP, y, LABEL_W, ROW),
              f.name + (f" ({f.unit})" if f.unit else ""), f"status/{f.name}/label")
        _text(parent, f"status_{f.name}", (LABEL_W + 2 * GAP, y, 300, ROW), "-",
              f"status/{f.name}", receive=f.address)
        y += ROW
    for what in ("error", "notice"):
        _text(parent, what, (GAP, y, W - 2 * GAP, ROW), "", "show/" + what,
              receive=f"{PREFIX}/{what}", size=12)
        y += ROW


def touchosc_xml(schema: Schema = DEFAULT_SCHEMA, preset_list: list | None = None,
                 feedback_port: int = TOUCHOSC_FEEDBACK_PORT) -> bytes:
    """The layout's XML (uncompressed; deterministic: IDs are derived from names)."""
    preset_list = presets() if preset_list is None else preset_list
    root = ET.Element("lexml", version="3")
    top = _node(root, "GROUP", "vacelive", (0, 0, W, H), "root",
                props=[("c", "color", (0, 0, 0, 1)), ("b", "background", True)],
                values=[("touch", "false")])
    pager = _node(_children(top), "PAGER", "pages", (0, 0, W, H), "pager",
                  props=[("b", "tabbar", True), ("i", "tabbarSize", TAB),
                         ("b", "tabLabels", True), ("b", "interactive", True)],
                  values=[("page", "0"), ("touch", "false")])
    pages = _children(pager)
    page_defs = [(SHOW, None)] + list(_groups(surface_params(schema)).items())
    for title, params in page_defs:
        page = _node(pages, "GROUP", title, (0, TAB, W, H - TAB), "page/" + title,
                     props=[("s", "tabLabel", title), ("c", "color", (0, 0, 0, 0))],
                     values=[("touch", "false")])
        kids = _children(page)
        if params is None:
            _show_page(kids, preset_list, feedback_port)
        else:
            for i, p in enumerate(params):
                _control(kids, p, GAP + i * (ROW + GAP))
    ET.indent(root)
    return b"<?xml version='1.0' encoding='UTF-8'?>\n" + ET.tostring(root, encoding="utf-8")


def touchosc_bytes(**kw: Any) -> bytes:
    return zlib.compress(touchosc_xml(**kw), 9)


# --------------------------------------------------------------------------------------------
# Open Stage Control

def _widget(type_: str, id_: str, label: str, address: str | None = None, **kw: Any) -> dict:
    w: dict[str, Any] = {"type": type_, "id": id_, "label": label, "height": 60,
                         "expand": False}
    if address is not None:
        w.update(address=address, preArgs="", target="")
    w.update(kw)
    return w


def _osc_widget(p: Param) -> dict:
    wid = "vace_" + p.name.replace("/", "_")
    if p.numeric:
        hi = p.min + SLIDER_SPAN if _wide(p) else p.max
        kw = dict(horizontal=True, range={"min": p.min, "max": hi}, default=p.default,
                  value=p.default, typeTags="i" if p.type == "int" else "f",
                  decimals=0 if p.type == "int" else 3, design="compact")
        if p.type == "int":
            kw["steps"] = int(hi - p.min)
        return _widget("fader", wid, _label(p), p.address, **kw)
    if p.type == "bool":
        return _widget("button", wid, _label(p), p.address, mode="toggle", on=1, off=0,
                       default=int(p.default), value=int(p.default), typeTags="i")
    if p.type == "action":
        return _widget("button", wid, _label(p), p.address, mode="tap", on=1, off=0,
                       typeTags="i")
    if p.type == "enum":
        return _widget("dropdown", wid, _label(p), p.address,
                       values={c: c for c in p.choices}, default=p.default,
                       value=p.default, typeTags="s")
    if p.type in ("str", "str_list"):
        return _widget("input", wid, _label(p), p.address, default="", value="",
                       typeTags="s")
    raise ValueError(p.name)


def osc_session(schema: Schema = DEFAULT_SCHEMA, preset_list: list | None = None,
                feedback_port: int = OSC_FEEDBACK_PORT) -> dict:
    preset_list = presets() if preset_list is None else preset_list
    show = [_osc_widget(schema["prompt"])]
    show += [_widget("button", f"preset_{n}", n, f"{PREFIX}/preset/load", mode="tap",
                     preArgs=[n], on=c, off=c) for n, c in preset_list]
    show.append(_widget("button", "hello", f"hello (feedback :{feedback_port})",
                        f"{PREFIX}/hello", mode="tap", on=feedback_port, off=feedback_port,
                        typeTags="i"))
    show += [_widget("text", f"status_{f.name}", f.name + (f" ({f.unit})" if f.unit else ""),
                     f.address, default="-", value="-") for f in STATUS_FIELDS]
    show += [_widget("text", what, what, f"{PREFIX}/{what}", default="", value="")
             for what in ("error", "notice")]
    tabs = [{"type": "tab", "id": "tab_show", "label": SHOW, "layout": "vertical",
             "widgets": show, "tabs": []}]
    groups = _groups(surface_params(schema) + [p for p in text_params(schema)
                                               if p.name != "prompt"])
    for title, params in groups.items():
        tabs.append({"type": "tab", "id": "tab_" + title.lower(), "label": title,
                     "layout": "vertical", "widgets": [_osc_widget(p) for p in params],
                     "tabs": []})
    return {"createdWith": "Open Stage Control", "version": "1.26.2", "type": "session",
            "content": {"type": "root", "id": "root", "address": "auto", "widgets": [],
                        "tabs": tabs}}


def osc_text(**kw: Any) -> str:
    return json.dumps(osc_session(**kw), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------

def stale(tosc: Path = TOSC_PATH, osc: Path = OSC_PATH,
          schema: Schema = DEFAULT_SCHEMA) -> list[str]:
    """Which committed files differ from what the schema and presets generate now (the
    TouchOSC file is compared decompressed: zlib builds may compress differently)."""
    out = []
    try:
        if zlib.decompress(tosc.read_bytes()) != touchosc_xml(schema=schema):
            out.append(str(tosc))
    except (OSError, zlib.error):
        out.append(str(tosc))
    try:
        if osc.read_text(encoding="utf-8") != osc_text(schema=schema):
            out.append(str(osc))
    except OSError:
        out.append(str(osc))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    ap.add_argument("--dir", type=Path, default=SURFACES)
    args = ap.parse_args(argv)
    tosc, osc = args.dir / TOSC_PATH.name, args.dir / OSC_PATH.name
    if args.write:
        args.dir.mkdir(parents=True, exist_ok=True)
        tosc.write_bytes(touchosc_bytes())
        osc.write_text(osc_text(), encoding="utf-8")
        print(f"wrote {tosc} and {osc}")
        return 0
    bad = stale(tosc, osc)
    for path in bad:
        print(f"stale: {path} (run `python scripts/surface_layouts.py --write`)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
