"""The installed shapes of vacelive: the command line and the relay side import no torch; a fresh
venv without torch installs the package from this checkout (one top-level `vacelive`, no `engine` or
`bridge`) and its `vacelive relay` streams frames from an engine process of the main venv."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import torch

from vacelive.bridge.cli import COMMANDS
from vacelive.bridge.link import wire
from vacelive.engine.request import ChunkResult
from runloop_support import REPO, OutputReader, ProcessLog, unique, vacelive, wait_until

ENGINE_ONLY = ("torch", "transformers", "peft", "safetensors")

# `vacelive [VERB] --help` in a fresh interpreter; prints the engine-side modules it imported
_HELP = """
import sys
from vacelive.bridge.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("IMPORTED", sorted(m for m in {mods!r} if m in sys.modules))
"""


def _help_imports(*argv: str) -> tuple[str, list[str]]:
    p = subprocess.run([sys.executable, "-c", _HELP.format(mods=ENGINE_ONLY), *argv, "--help"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    tail = p.stdout.strip().splitlines()[-1]
    assert tail.startswith("IMPORTED"), p.stdout + p.stderr
    return p.stdout, eval(tail[len("IMPORTED"):])


@pytest.mark.parametrize("verb", [""] + list(COMMANDS) + ["weights list", "weights download", "td install"])
def test_help_of_every_verb_imports_no_torch(verb):
    out, imported = _help_imports(*verb.split())
    assert "usage: vacelive" in out
    assert "unavailable" not in out
    assert imported == [], f"`vacelive {verb} --help` imported {imported}"


# Imports every module the relay runs with torch (and the other engine-extra packages) made
# unimportable, then builds the relay's link and session objects.
_RELAY_WITHOUT_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {mods!r}:
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
import vacelive.engine, vacelive.engine.request, vacelive.engine.models_dir
import vacelive.bridge.commands.relay, vacelive.bridge.run.session, vacelive.bridge.run.generators
import vacelive.bridge.link, vacelive.bridge.transports, vacelive.bridge.osc.server
import vacelive.bridge.osc.oscquery, vacelive.bridge.presets, vacelive.bridge.commands.doctor
print("OK", sorted(m for m in {mods!r} if m in sys.modules))
"""


def test_relay_modules_import_without_torch():
    p = subprocess.run([sys.executable, "-c", _RELAY_WITHOUT_TORCH.format(mods=ENGINE_ONLY)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "OK []"


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_a_relay_without_torch_decodes_engine_frames_as_numpy(monkeypatch, codec):
    frames = torch.zeros(2, 16, 24, 4, dtype=torch.uint8)
    frames[..., 0] = torch.arange(24, dtype=torch.uint8) * 10
    frames[..., 3] = 255
    fields, blobs = wire.encode_result(ChunkResult(frames=frames, chunk_index=3), codec)
    header, got_blobs = wire.decode(wire.encode("result", fields, blobs))
    monkeypatch.setattr(wire, "_torch_module", lambda: None)  # what a relay-only install sees
    got = wire.decode_result(header, got_blobs)
    assert isinstance(got.frames, np.ndarray) and got.frames.shape == (2, 16, 24, 4)
    tol = 0 if codec == "raw" else 8
    assert np.abs(got.frames.astype(int) - frames.numpy().astype(int)).max() <= tol
    assert got.chunk_index == 3


def test_a_relay_without_torch_refuses_bfloat16_by_name(monkeypatch):
    blobs: list = []
    meta = wire.pack_array(torch.ones(3, dtype=torch.bfloat16), blobs)
    monkeypatch.setattr(wire, "_torch_module", lambda: None)
    with pytest.raises(wire.WireError, match="bfloat16"):
        wire.unpack_array(meta["$array"], blobs)


def test_an_engine_verb_on_a_relay_only_install_says_which_extra_to_install(monkeypatch, capsys):
    from vacelive.bridge import cli
    from vacelive.bridge.commands import demo

    def run(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(demo, "run", run)
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[engine]'" in err and "needs torch" in err


# -- a fresh venv without torch -------------------------------------------------------------------
def _bin(env_dir: Path, name: str) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / (name + (".exe" if os.name == "nt" else ""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_fresh_venv_relay_install_without_torch_streams_from_an_engine(tmp_path):
    # the engine (main venv, tiny random model) loads while the relay's venv is built
    port, osc = _free_port(), _free_port()
    engine = ProcessLog(vacelive("engine", "--listen", f"tcp://127.0.0.1:{port}", "--random-weights",
                                 "tiny", "--device", "cpu", "--codec", "tae", "--width", "64",
                                 "--height", "48"))
    relay = reader = None
    try:
        py, exe = _relay_venv(tmp_path)

        probe = subprocess.run([str(py), "-c", (
            "import importlib.util as u, json, sys, sysconfig, os\n"
            "import vacelive.engine, vacelive.bridge, vacelive.touchdesigner\n"
            "site = sysconfig.get_paths()['purelib']\n"
            "print(json.dumps({'torch': u.find_spec('torch') is not None,\n"
            "  'file': vacelive.__file__, 'top': sorted(os.listdir(site))}))")],
            capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert probe.returncode == 0, probe.stderr
        info = json.loads(probe.stdout)
        assert info["torch"] is False  # `import torch` fails in this venv
        assert str(tmp_path / "relay-venv") in info["file"]  # the installed copy, not this checkout
        for name in ("engine", "bridge", "presets", "touchdesigner", "engine.py", "bridge.py"):
            assert name not in info["top"], f"top-level {name!r} installed into site-packages"

        helped = subprocess.run([str(exe), "relay", "--help"], capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0 and "--engine" in helped.stdout, helped.stderr
        # the other torch-free verbs of a relay machine, from the installed package data
        td = subprocess.run([str(exe), "td", "install", str(tmp_path / "td")], capture_output=True,
                            text=True, timeout=60)
        assert td.returncode == 0 and (tmp_path / "td" / "surfaces" / "vacelive.tosc").is_file(), td.stderr
        doc = subprocess.run([str(exe), "doctor", "--models", str(tmp_path / "models"), "--osc-port", "0",
                              "--oscquery-port", "0", "--link-port", "0"],
                             capture_output=True, text=True, timeout=60)
        assert doc.returncode == 0 and "torch not installed: relay-only install" in doc.stdout, \
            doc.stdout + doc.stderr

        engine.wait_for("vacelive engine ready", 120)
        out = unique("vr")
        relay = ProcessLog(subprocess.Popen(
            [str(exe), "relay", "--engine", f"tcp://127.0.0.1:{port}", "--control", "none", "--mask",
             "none", "--ref", "none", "--output", f"shm:{out}", "--osc-port", str(osc),
             "--oscquery-port", "0", "--fps", "0"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1")))
        relay.wait_for("vacelive relay running", 60)
        reader = OutputReader(out)  # attaches when the relay's ring appears
        wait_until(lambda: reader.count() >= 24, 120, "two chunks of frames through the torch-free relay")
        frame = reader.items[-1][2]
        assert frame.shape == (48, 64, 4) and frame.dtype == np.uint8
        assert frame[..., :3].std() > 0  # generated pictures, not a blank hold
        assert "Traceback" not in relay.text(), relay.text()[-3000:]
    finally:
        if reader is not None:
            reader.close()
        for p in (relay, engine):
            if p is not None and p.proc.poll() is None:
                p.proc.terminate()
                try:
                    p.proc.wait(20)
                except subprocess.TimeoutExpired:
                    p.proc.kill()


def _relay_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A new venv with `pip install '<this checkout>[relay]'`: (python, vacelive) executables."""
    env_dir = tmp_path / "relay-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    # a plain (not editable) install of this checkout's package files; built from a copy so
    # setuptools' build/ folder never lands in (or goes stale in) the checkout. pip's cache makes
    # the dependencies quick after the first run.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("vacelive", "bridge", "engine", "presets", "touchdesigner"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    py = _bin(env_dir, "python")
    pip = subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"{src}[relay]"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-3000:]
    return py, _bin(env_dir, "vacelive")
