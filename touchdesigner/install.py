"""`vacelive td install DIR`: the TouchDesigner side of an installed vacelive, put into a folder a
TouchDesigner project can use.

What lands in DIR (all of it ships inside the vacelive wheel as package data):
    build_tox.py, vacelive_ext.py, td_params.py, osc_sync.py, engine_process.py, textures.py
        the component builder and the modules it copies into the component's Text DATs
    vacelive-schema.json
        the parameter schema of this vacelive (the component's custom pages are made from it;
        TouchDesigner's own Python then needs no vacelive installed)
    surfaces/vacelive.tosc, surfaces/vacelive-osc.json
        TouchOSC and Open Stage Control layouts
    README.txt
        the steps printed by the command

This module runs in vacelive's Python (not inside TouchDesigner).
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from vacelive.touchdesigner import build_tox

HERE = Path(__file__).resolve().parent
SURFACES = ("vacelive.tosc", "vacelive-osc.json")


@dataclass(frozen=True)
class Placed:
    path: Path  # where the file is now
    what: str  # one line for the summary
    state: str  # "created", "updated" (content changed) or "unchanged"


def component_files() -> list[str]:
    """The builder and every module it puts into the component."""
    return ["build_tox.py", "vacelive_ext.py"] + [m + ".py" for m in build_tox.MODULES]


def vacelive_executable() -> Path:
    """The `vacelive` command of this environment (what the component's Engine page needs)."""
    bindir = Path(sys.executable).parent
    for name in ("vacelive.exe", "vacelive"):
        if (bindir / name).is_file():
            return bindir / name
    found = shutil.which("vacelive")
    return Path(found) if found else Path(sys.executable)  # python -m vacelive works too


def _write(dest: Path, data: bytes, what: str) -> Placed:
    state = "created"
    if dest.is_file():
        state = "unchanged" if dest.read_bytes() == data else "updated"
    if state != "unchanged":
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(dest)
    return Placed(dest, what, state)


def usage(dest: Path, exe: Path) -> str:
    d = str(dest.resolve())
    return f"""How to use it in TouchDesigner (2023 or newer):

1. Build the component: open Dialogs > Textport and DATs and run

     import runpy
     runpy.run_path(r'{Path(d, "build_tox.py")}')['build'](
         op('/project1'), save_to=r'{Path(d, "vacelive.tox")}')

   This creates /project1/vacelive and saves vacelive.tox (drag it into other projects;
   it is self-contained). Run `vacelive td install` again after updating vacelive, then rebuild.
2. On the component's Engine page set "vacelive executable" to
     {exe}
   pick Process (Local serve, or Relay to remote GPU), then pulse Start engine.
3. Wire your control video into input 1 (Control); the generated video comes out of Output.
4. Control surfaces: load {Path(d, "surfaces", "vacelive.tosc")} in TouchOSC (send port 7700,
   receive 9000), or start Open Stage Control with
     open-stage-control --send 127.0.0.1:7700 --osc-port 7720 --load "{Path(d, "surfaces", "vacelive-osc.json")}"
   and press hello on either once.

Guide: docs/touchdesigner.md in the vacelive repository.
"""


def install(dest: str | Path) -> list[Placed]:
    """Copy the component files, the schema and the layouts into `dest` (created if needed).
    Files of ours already there are replaced; anything else in the folder (a saved .tox) is kept."""
    from vacelive.bridge.schema import DEFAULT_SCHEMA

    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} exists and is not a folder")
    placed: list[Placed] = []
    for name in component_files():
        what = "component builder (run it from the Textport)" if name == "build_tox.py" else "component module"
        placed.append(_write(dest / name, (HERE / name).read_bytes(), what))
    schema = json.dumps(DEFAULT_SCHEMA.to_json(), indent=1).encode() + b"\n"
    placed.append(_write(dest / build_tox.SCHEMA_FILE, schema, "parameter schema of this vacelive"))
    for name in SURFACES:
        what = "TouchOSC layout" if name.endswith(".tosc") else "Open Stage Control session"
        placed.append(_write(dest / "surfaces" / name, (HERE / "surfaces" / name).read_bytes(), what))
    placed.append(_write(dest / "README.txt", usage(dest, vacelive_executable()).encode(), "these steps"))
    return placed
