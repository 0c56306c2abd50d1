"""`vacelive td install DIR`: the component files, the schema and the surface layouts land in DIR
byte for byte, the summary says what went where, a rerun reports what changed, and the builder
copied there assembles the component from DIR alone (no vacelive package importable)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vacelive.bridge import cli
from vacelive.bridge.schema import DEFAULT_SCHEMA
from vacelive.touchdesigner import build_tox
from vacelive.touchdesigner.install import HERE, component_files

TESTS = Path(__file__).resolve().parent
EXPECTED = component_files() + ["vacelive-schema.json", "surfaces/vacelive.tosc",
                                "surfaces/vacelive-osc.json", "README.txt"]


def test_install_places_every_file_and_prints_where(tmp_path, capsys):
    dest = tmp_path / "td"
    assert cli.main(["td", "install", str(dest)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(EXPECTED)
    assert set(component_files()) >= {"build_tox.py", "vacelive_ext.py"} | {m + ".py" for m in build_tox.MODULES}
    for name in component_files():
        assert (dest / name).read_bytes() == (HERE / name).read_bytes()
    for name in ("vacelive.tosc", "vacelive-osc.json"):
        assert (dest / "surfaces" / name).read_bytes() == (HERE / "surfaces" / name).read_bytes()
    assert json.loads((dest / "vacelive-schema.json").read_text()) == DEFAULT_SCHEMA.to_json()
    for rel in EXPECTED:
        assert f"created   {rel}" in out
    # the Textport line names this folder's builder, and the Engine page gets a real executable
    assert f"runpy.run_path(r'{dest.resolve() / 'build_tox.py'}')['build']" in out
    exe = out.split('set "vacelive executable" to')[1].split()[0]
    assert Path(exe).is_file()
    assert (dest / "README.txt").read_text() in out


def test_rerun_reports_unchanged_and_updated_and_keeps_other_files(tmp_path, capsys):
    dest = tmp_path / "td"
    assert cli.main(["td", "install", str(dest)]) == 0
    (dest / "td_params.py").write_text("# edited\n")
    (dest / "vacelive.tox").write_bytes(b"a saved component")
    capsys.readouterr()
    assert cli.main(["td", "install", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "updated   td_params.py" in out
    assert "unchanged build_tox.py" in out
    assert (dest / "td_params.py").read_bytes() == (HERE / "td_params.py").read_bytes()
    assert (dest / "vacelive.tox").read_bytes() == b"a saved component"


def test_install_onto_a_file_fails_with_a_message(tmp_path, capsys):
    target = tmp_path / "not-a-folder"
    target.write_text("x")
    assert cli.main(["td", "install", str(target)]) == 1
    assert "not a folder" in capsys.readouterr().err


# TouchDesigner's Python has no vacelive: block the package, then run the installed builder by path
# against the stand-in. DIR on sys.path stands for the sibling Text DATs the component's modules
# import inside TouchDesigner (they are copies of the same files).
_BUILD_FROM_DIR = """
import json, runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "vacelive":
            raise ImportError("no vacelive inside TouchDesigner")
sys.meta_path.insert(0, Block())
dest, tests = sys.argv[1], sys.argv[2]
sys.path[:0] = [tests, dest]
import td_standin as T
prj = T.Project()
try:
    comp = runpy.run_path(dest + "/build_tox.py")["build"](prj.op("/project1"), td=T.td,
                                                           save_to=dest + "/vacelive.tox")
    print(json.dumps({"schema": json.loads(comp.op("schema").text), "ext": type(comp.ext.VaceLiveExt).__name__,
                      "pages": [p.name for p in comp.customPages],
                      "vacelive": sorted(m for m in sys.modules if m.split(".")[0] == "vacelive")}))
finally:
    prj.close()
"""


def test_the_installed_builder_builds_the_component_without_the_vacelive_package(tmp_path):
    dest = tmp_path / "td"
    assert cli.main(["td", "install", str(dest)]) == 0
    p = subprocess.run([sys.executable, "-c", _BUILD_FROM_DIR, str(dest), str(TESTS)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["schema"] == DEFAULT_SCHEMA.to_json()
    assert got["ext"] == "VaceLiveExt"
    assert got["vacelive"] == []
    assert {"Prompt", "Generation", "Engine", "Status"} <= set(got["pages"])
    assert (dest / "vacelive.tox").is_file()
