"""Presets: shipped files are valid (and ship inside a wheel), save/load round-trips, morphs,
clear errors, atomic writes."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vacelive.bridge import presets as presets_mod
from vacelive.bridge.presets import SHIPPED_DIR, PresetError, PresetLibrary, read
from vacelive.bridge.schema import build_schema
from vacelive.bridge.store import ParamStore


def shipped_files():
    return sorted(SHIPPED_DIR.glob("*.json"))


def test_there_are_shipped_presets():
    assert len(shipped_files()) >= 4


REPO = Path(__file__).resolve().parents[1]

# Run with `python -I -S`: no site-packages (so not the editable install), no checkout on the path;
# only the unpacked wheel.
_INSTALLED_CHECK = """
import json, sys
sys.path.insert(0, sys.argv[1])
from vacelive.bridge.presets import SHIPPED_DIR, PresetLibrary
lib = PresetLibrary(user_dir=sys.argv[2])
print(json.dumps({"dir": str(SHIPPED_DIR), "module": sys.modules["vacelive.bridge.presets"].__file__,
                  "names": lib.names(), "neon": sorted(lib.load("neon-city").values)}))
"""


def test_a_wheel_carries_the_shipped_presets_and_the_installed_loader_finds_them(tmp_path):
    pytest.importorskip("setuptools")
    assert SHIPPED_DIR == REPO / "presets"  # a checkout (or editable install) reads presets/
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("vacelive", "bridge", "engine", "presets", "touchdesigner"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-c", "from setuptools import build_meta; "
                            "print(build_meta.build_wheel('dist'))"],
                           cwd=src, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    site = tmp_path / "site"
    wheel = zipfile.ZipFile(src / "dist" / build.stdout.split()[-1])
    tops = {n.split("/")[0] for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"vacelive"}  # nothing top-level but the one package
    names = set(wheel.namelist())
    for data in ("vacelive/touchdesigner/vacelive_ext.py", "vacelive/touchdesigner/README.md",
                 "vacelive/touchdesigner/surfaces/vacelive.tosc",
                 "vacelive/touchdesigner/surfaces/vacelive-osc.json"):
        assert data in names, data  # the TouchDesigner component and the surface layouts ship
    wheel.extractall(site)
    run = subprocess.run([sys.executable, "-I", "-S", "-c", _INSTALLED_CHECK, str(site),
                          str(tmp_path / "user")], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got["module"] == str(site / "vacelive" / "bridge" / "presets.py")  # the wheel's, not the repo's
    assert got["dir"] == str(site / "vacelive" / "presets")
    assert got["names"] == PresetLibrary(user_dir=tmp_path / "user").names()
    assert len(got["names"]) == len(shipped_files()) and got["neon"]


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: p.name)
def test_every_shipped_preset_is_valid(path):
    preset = read(path)
    assert preset.values and preset.name == path.stem and not preset.notices
    data = json.loads(path.read_text())
    assert data.get("name", path.stem) == path.stem
    ParamStore().morph_to(preset.name, preset.values, 2)  # the store accepts it as well


@pytest.fixture
def lib(tmp_path):
    return PresetLibrary(user_dir=tmp_path / "user")


def test_save_load_round_trip(lib):
    st = ParamStore()
    st.apply({"prompts": ["a forest", 1.0, "fog", 0.25], "context_scale": 1.7, "steps": 2,
              "annotator": "depth", "refs": ["a.png", "b.png"], "hint_reuse": True,
              "pause": True})
    path = lib.save("forest", st.preset_values(), description="test")
    assert path == lib.user_dir / "forest.json" and "forest" in lib.names()
    loaded = lib.load("forest")
    assert "pause" not in loaded.values  # not a preset parameter
    fresh = ParamStore()
    fresh.morph_to("forest", loaded.values, 0)
    snap = fresh.snapshot()
    for name, value in st.preset_values().items():
        assert snap[name] == value, name
    assert snap["prompt"] == "a forest" and snap["pause"] is False


def test_morph_over_four_chunks_passes_through_intermediate_values(lib):
    lib.save("target", {"context_scale": 2.0, "prompts": (("new", 1.0),), "steps": 1,
                        "fit": "stretch"})
    st = ParamStore(initial={"context_scale": 1.0, "prompt": "old", "steps": 4})
    st.morph_to("target", lib.load("target").values, 4)
    snaps = [st.snapshot() for _ in range(4)]
    assert [s["context_scale"] for s in snaps] == [1.25, 1.5, 1.75, 2.0]
    assert [s["steps"] for s in snaps] == [3, 3, 2, 1]  # 3.25, 2.5 (half up), 1.75, 1
    assert [s["fit"] for s in snaps] == ["crop", "stretch", "stretch", "stretch"]
    assert [dict(s["prompts"]) for s in snaps] == [
        {"old": 0.75, "new": 0.25}, {"old": 0.5, "new": 0.5}, {"old": 0.25, "new": 0.75},
        {"new": 1.0}]


@pytest.mark.parametrize("text, where", [
    ('{"format": 1, "params": {"steps": 2,', "invalid JSON at line 1"),
    ("", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"params": {"steps": 9}}', "params.steps: steps: 9 is outside 1..4"),
    ('{"params": {"step": 2}}', "params.step: unknown parameter 'step' (did you mean steps?)"),
    ('{"params": {"width": 512}}', "params.width: load-time parameter"),
    ('{"params": {"reset": 1}}', "params.reset: not stored in presets"),
    ('{"params": {"pause": true}}', "params.pause: not stored in presets"),
    ('{"params": {"annotator": "bogus"}}', "params.annotator: annotator: 'bogus' is not one of"),
    ('{"params": {"prompt": "a", "prompts": ["b"]}}', "either 'prompt' or 'prompts'"),
    ('{"parms": {}}', "unknown key 'parms'"),
    ('{"format": 2, "params": {}}', "format 2 is not supported"),
    ('{"params": []}', "'params' must be an object"),
    ('{"morph_chunks": -1, "params": {}}', "'morph_chunks' must be an integer"),
])
def test_invalid_preset_files_give_clear_errors_and_load_nothing(lib, text, where):
    lib.user_dir.mkdir(parents=True)
    path = lib.user_dir / "bad.json"
    path.write_text(text, encoding="utf-8")
    st = ParamStore()
    before = st.values()
    with pytest.raises(PresetError) as exc:
        st.morph_to("bad", lib.load("bad").values, 2)
    assert str(path) in str(exc.value) and where in str(exc.value)
    snap = st.snapshot()
    assert dict(snap.values) == before and snap.actions == () and snap.morph is None


def test_unknown_lora_is_skipped_with_a_notice(tmp_path):
    rich = PresetLibrary(build_schema(["ink"]), user_dir=tmp_path)
    rich.save("with-ink", {"lora/ink": 0.4, "steps": 3})
    plain = PresetLibrary(user_dir=tmp_path).load("with-ink")
    assert plain.values == {"steps": 3}
    assert "LoRA 'ink' is not loaded" in plain.notices[0]
    assert PresetLibrary(build_schema(["ink"]), user_dir=tmp_path).load("with-ink").values == {
        "lora/ink": 0.4, "steps": 3}


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 80, 5])
def test_bad_names_are_refused(lib, name):
    with pytest.raises(PresetError, match="preset name"):
        lib.save(name, {"steps": 2})


def test_user_presets_shadow_shipped_ones_and_missing_names_list_known(lib):
    assert lib.load("neon-city").path.parent == SHIPPED_DIR
    lib.save("neon-city", {"steps": 1})
    assert lib.load("neon-city").values == {"steps": 1}
    with pytest.raises(PresetError, match="no preset named 'nope' \\(known: .*neon-city"):
        lib.load("nope")


def test_save_validates_before_writing(lib):
    with pytest.raises(PresetError, match="params.steps"):
        lib.save("bad", {"steps": 99})
    assert not (lib.user_dir / "bad.json").exists()


def test_writes_are_atomic(lib, monkeypatch):
    path = lib.save("keep", {"steps": 2})
    original = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(presets_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        lib.save("keep", {"steps": 3})
    assert path.read_bytes() == original  # never half a file
    assert sorted(p.name for p in lib.user_dir.iterdir()) == ["keep.json"]  # no temp left
    monkeypatch.undo()
    lib.save("keep", {"steps": 3})
    assert lib.load("keep").values == {"steps": 3}


def test_default_user_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VACELIVE_PRESETS_DIR", str(tmp_path / "p"))
    assert presets_mod.default_user_dir() == tmp_path / "p"
    monkeypatch.delenv("VACELIVE_PRESETS_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert presets_mod.default_user_dir() == tmp_path / "cfg" / "vacelive" / "presets"
    assert PresetLibrary().user_dir == tmp_path / "cfg" / "vacelive" / "presets"
