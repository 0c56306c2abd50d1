"""Assemble the vacelive component inside TouchDesigner and save it as a .tox.

`vacelive td install C:/vacelive-td` copies this file, the modules below, the parameter schema
and the control-surface layouts into a folder; then run from TouchDesigner's Textport (Dialogs >
Textport and DATs):

    import runpy
    runpy.run_path(r'C:/vacelive-td/build_tox.py')['build'](
        op('/project1'), save_to=r'C:/vacelive-td/vacelive.tox')

It creates /project1/vacelive (a Base COMP) with:
- Text DATs holding this folder's modules (VaceLiveExt = vacelive_ext.py, td_params, osc_sync,
  engine_process, textures): the .tox needs no repository on the show machine;
  `sync_files=True` instead links them to the files on disk (Text DAT file + syncfile) for
  development;
- `schema`: the parameter schema JSON (SCHEMA_FILE, or bridge.schema), from which the custom
  pages are made;
- `oscout` OSC Out DAT, `oscin` OSC In DAT + `oscin_callbacks`, `parexec` Parameter Execute DAT,
  `frame` Execute DAT (frame start, exit), `log` Text DAT (the engine's output);
- In TOPs Control, Mask, Ref, Input -> Syphon Spout Out TOPs send_control/send_mask/send_ref/send_input
  and NDI Out TOPs ndiout_<stream>; Syphon Spout In TOP receive_output and NDI In TOP ndiin_output
  -> Switch TOP output_switch (by the Transport menu) -> Out TOP Output;
- the custom pages (td_params.build_pages, the same generator the extension uses) and the
  extension (ext0object, promoted).

Nothing here imports `td` at module level: `build()` takes the operator types from the `td`
module inside TouchDesigner (or from `td=` in tests, tests/td_standin.py).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ("td_params", "osc_sync", "engine_process", "textures")
SCHEMA_FILE = "vacelive-schema.json"  # written beside this file by `vacelive td install`
EXTENSION = "VaceLiveExt"

# Callback DATs reach the extension through this helper: while the extension is not (yet)
# initialised (during a build, after an error in its code) callbacks do nothing.
_EXT = '''
def _ext(op):
    return getattr(op.parent().ext, "VaceLiveExt", None)
'''

PAREXEC_CALLBACKS = '''\
# vacelive: custom parameter changes and pulses go to the extension (OSC out).''' + _EXT + '''
def onValueChange(par, prev):
    ext = _ext(me)
    if ext is not None:
        ext.OnParValueChange(par, prev)
    return

def onPulse(par):
    ext = _ext(me)
    if ext is not None:
        ext.OnParPulse(par)
    return
'''

OSCIN_CALLBACKS = '''\
# vacelive: engine feedback (echoes, /vace/status/*, /vace/error, ...) to the extension.''' + _EXT + '''
def onReceiveOSC(dat, rowIndex, message, bytes, timeStamp, address, args, peer):
    ext = _ext(dat)
    if ext is not None:
        ext.OnReceiveOSC(address, args)
    return
'''

FRAME_CALLBACKS = '''\
# vacelive: process log, connection upkeep, Syphon sender lookup; stop the engine on exit.''' + _EXT + '''
def onFrameStart(frame):
    ext = _ext(me)
    if ext is not None:
        ext.OnFrame()
    return

def onExit():
    ext = _ext(me)
    if ext is not None:
        ext.OnExit()
    return
'''


def schema_document() -> dict:
    """The parameter schema: the SCHEMA_FILE beside this file (`vacelive td install` writes it, so
    TouchDesigner's own Python needs no vacelive), else the installed vacelive package's."""
    path = os.path.join(HERE, SCHEMA_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    try:
        from vacelive.bridge.schema import DEFAULT_SCHEMA
    except ImportError:
        raise RuntimeError(f"vacelive build: no {SCHEMA_FILE} beside {__file__} and no vacelive "
                           "package in this Python: run `vacelive td install DIR` in vacelive's "
                           "environment and build from DIR/build_tox.py") from None
    return DEFAULT_SCHEMA.to_json()


def _source(name: str) -> str:
    with open(os.path.join(HERE, name + ".py"), encoding="utf-8") as f:
        return f.read()


def _set(op: Any, name: str, value: Any, missing: list[str]) -> None:
    par = getattr(op.par, name, None)
    if par is None:
        missing.append(f"{op.name}.par.{name}")
        return
    par.val = value


def _place(op: Any, x: int, y: int) -> Any:
    op.nodeX, op.nodeY = x, y
    return op


def build(parent: Any, name: str = "vacelive", save_to: str | None = None, td: Any = None,
          schema: dict | None = None, sync_files: bool = False, replace: bool = True) -> Any:
    """Create the component under `parent`; returns it. Parameters that this TouchDesigner
    build does not have are listed on the Textport instead of failing the build."""
    if td is None:
        import td  # noqa: F811  (only inside TouchDesigner)
    old = parent.op(name)
    if old is not None:
        if not replace:
            raise RuntimeError(f"{old.path} exists (pass replace=True to rebuild it)")
        old.destroy()
    missing: list[str] = []
    comp = _place(parent.create(td.baseCOMP, name), 0, 0)
    doc = schema if schema is not None else schema_document()

    # code and data
    for i, mod in enumerate(MODULES):
        dat = _place(comp.create(td.textDAT, mod), -800, 400 - 120 * i)
        dat.text = _source(mod)
        if sync_files:
            _set(dat, "file", os.path.join(HERE, mod + ".py"), missing)
            _set(dat, "syncfile", True, missing)
    ext = _place(comp.create(td.textDAT, EXTENSION), -600, 400)
    ext.text = _source("vacelive_ext")
    if sync_files:
        _set(ext, "file", os.path.join(HERE, "vacelive_ext.py"), missing)
        _set(ext, "syncfile", True, missing)
    _place(comp.create(td.textDAT, "schema"), -600, 280).text = json.dumps(doc, indent=1)
    _place(comp.create(td.textDAT, "log"), -600, 160).text = ""

    # the custom pages first, so building them fires no callbacks
    pages = _import_td_params()
    pages.build_pages(comp, pages.all_specs(doc))

    # OSC
    oscout = _place(comp.create(td.oscoutDAT, "oscout"), -400, 400)
    oscin = _place(comp.create(td.oscinDAT, "oscin"), -400, 280)
    callbacks = _place(comp.create(td.textDAT, "oscin_callbacks"), -200, 280)
    callbacks.text = OSCIN_CALLBACKS
    _set(oscin, "callbacks", callbacks.name, missing)
    for p, v in (("clamp", True), ("maxlines", 50)):  # the DAT's own table must not grow
        if getattr(oscin.par, p, None) is not None:
            _set(oscin, p, v, missing)
    parexec = _place(comp.create(td.parameterexecuteDAT, "parexec"), -400, 160)
    parexec.text = PAREXEC_CALLBACKS
    for p, v in (("op", ".."), ("pars", "*"), ("custom", True), ("builtin", False),
                 ("valuechange", True), ("onpulse", True)):
        _set(parexec, p, v, missing)
    frame = _place(comp.create(td.executeDAT, "frame"), -400, 40)
    frame.text = FRAME_CALLBACKS
    for p in ("framestart", "exit"):
        _set(frame, p, True, missing)

    # textures: inputs out to the engine, the engine's output back in
    # In TOP order = connector order: Control, Mask, Ref, then Input (the V2V camera) last, so
    # networks wired before it existed keep their connections.
    # Each input also feeds an NDI Out TOP and the output can come from an NDI In TOP; the
    # Transport menu switches which pair is active (output_switch picks the received one).
    for i, stream in enumerate(("control", "mask", "ref", "input")):
        inp = _place(comp.create(td.inTOP, stream.capitalize()), 0, 200 - 150 * i)
        send = _place(comp.create(td.syphonspoutoutTOP, "send_" + stream), 200, 200 - 150 * i)
        send.inputConnectors[0].connect(inp)
        ndi_send = _place(comp.create(td.ndioutTOP, "ndiout_" + stream), 200, 125 - 150 * i)
        ndi_send.inputConnectors[0].connect(inp)
    receive = _place(comp.create(td.syphonspoutinTOP, "receive_output"), 400, 200)
    ndi_receive = _place(comp.create(td.ndiinTOP, "ndiin_output"), 400, 100)
    switch = _place(comp.create(td.switchTOP, "output_switch"), 500, 200)
    switch.inputConnectors[0].connect(receive)
    switch.inputConnectors[1].connect(ndi_receive)
    out = _place(comp.create(td.outTOP, "Output"), 600, 200)
    out.inputConnectors[0].connect(switch)

    # the extension last: it finds the pages and wires TOP names and OSC ports
    _set(comp, "ext0object", f"op('./{EXTENSION}').module.{EXTENSION}(me)", missing)
    _set(comp, "ext0name", EXTENSION, missing)
    _set(comp, "ext0promote", True, missing)
    reinit = getattr(comp.par, "reinitextensions", None)
    if reinit is not None:
        reinit.pulse()
    else:
        missing.append(f"{comp.name}.par.reinitextensions")

    for m in missing:
        print(f"vacelive build: this TouchDesigner has no parameter {m}; set it by hand")
    if save_to:
        comp.save(save_to)
        print(f"vacelive build: saved {save_to}")
    return comp


def _import_td_params() -> Any:
    """td_params from this folder (the builder runs from a file path, not as a package)."""
    try:
        from vacelive.touchdesigner import td_params
        return td_params
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location("vacelive_td_params",
                                                      os.path.join(HERE, "td_params.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while building
        spec.loader.exec_module(module)
        return module
