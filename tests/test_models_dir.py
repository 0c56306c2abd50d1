"""Models folder: resolution order, missing-weights error, offline download from a fake HF cache, CLI."""
import os
import socket
from pathlib import Path

import pytest

from vacelive.bridge.cli import main
from vacelive.engine.models_dir import (
    DownloadError,
    MissingWeightsError,
    check,
    default_models_dir,
    download,
    models_dir,
    require,
)
from vacelive.engine.pipelines import RECIPES, TOKENIZER, WeightOptions

LONGLIVE = RECIPES["longlive"]
FP8_TAE = WeightOptions(codec="tae", text_encoder="fp8")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: downloads must come from the fake cache."""
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def fake_hub(cache: Path, files, skip=()) -> Path:
    """An HF cache folder: models--org--name/{blobs/<id>, snapshots/<rev>/<file> -> blob, refs/main}."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    for i, f in enumerate(files):
        if f.filename in skip:
            continue
        repo = cache / f"models--{f.repo_id.replace('/', '--')}"
        blob = repo / "blobs" / f"blob{i:04d}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(f"weights of {f.repo_id}/{f.filename}".encode())
        snap = repo / "snapshots" / rev / f.filename
        snap.parent.mkdir(parents=True, exist_ok=True)
        if not snap.exists():
            os.symlink(os.path.relpath(blob, snap.parent), snap)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
    return cache


def test_models_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models_dir(None, env={}) == default_models_dir() == tmp_path / "home" / ".vacelive" / "models"
    assert models_dir(None, env={"VACELIVE_MODELS": "/data/m"}) == Path("/data/m")
    assert models_dir("/flag/m", env={"VACELIVE_MODELS": "/data/m"}) == Path("/flag/m")
    assert models_dir("~/m", env={}) == tmp_path / "home" / "m"


def test_missing_error_lists_every_file_with_repo_filename_and_command(tmp_path):
    models = tmp_path / "my models"
    (models / "LongLive-1.3B/models").mkdir(parents=True)
    (models / "LongLive-1.3B/models/lora.pt").write_bytes(b"")  # an empty leftover is still missing
    missing = check(LONGLIVE, FP8_TAE, models)
    needed = LONGLIVE.needed(FP8_TAE)
    assert [m.file for m in missing] == list(needed) and len(needed) == 9
    with pytest.raises(MissingWeightsError) as err:
        require(LONGLIVE, FP8_TAE, models)
    msg = str(err.value)
    assert msg.startswith("9 weight file(s) for pipeline 'longlive' missing")
    for f in needed:
        assert str(models / f.path) in msg
        assert f"from Hugging Face {f.repo_id}, file {f.filename}" in msg
    assert f'vacelive weights download longlive --models "{models}" --codec tae --text-encoder fp8' in msg
    assert "Wan2.1_VAE.pth" not in msg  # not needed with the TAE codec
    assert err.value.missing == missing and isinstance(err.value, FileNotFoundError)


def test_download_from_fake_hub_makes_check_pass(tmp_path):
    models, cache = tmp_path / "models", fake_hub(tmp_path / "hub", LONGLIVE.files)
    assert check(LONGLIVE, models=models)
    placed = download(LONGLIVE, models, cache_dir=cache, local_files_only=True, report=lambda s: None)
    assert len(placed) == len(LONGLIVE.needed()) and check(LONGLIVE, models=models) == []
    paths = require(LONGLIVE, models=models)
    assert paths[TOKENIZER] == models / "Wan2.1-T2V-1.3B/google/umt5-xxl"
    assert paths["generator"].read_bytes() == b"weights of Efficient-Large-Model/LongLive-1.3B/models/longlive_base.pt"
    blob = (cache / "models--Efficient-Large-Model--LongLive-1.3B/snapshots").rglob("longlive_base.pt").__next__()
    assert os.path.samefile(paths["generator"], blob.resolve())  # hard link: no second copy on disk
    assert not list(models.rglob("*.partial"))
    # options not downloaded yet are still missing; a second run fetches only those
    assert {m.file.role for m in check(LONGLIVE, FP8_TAE, models)} == {"tae", "text_encoder"}
    again = download(LONGLIVE, models, FP8_TAE, cache_dir=cache, local_files_only=True, report=lambda s: None)
    assert len(again) == 2 and check(LONGLIVE, FP8_TAE, models) == []


def test_download_reports_every_failure_and_keeps_the_rest(tmp_path):
    models = tmp_path / "models"
    cache = fake_hub(tmp_path / "hub", LONGLIVE.files, skip={"models/lora.pt", "Wan2.1_VAE.pth"})
    with pytest.raises(DownloadError) as err:
        download(LONGLIVE, models, cache_dir=cache, local_files_only=True, report=lambda s: None)
    msg = str(err.value)
    assert "2 file(s)" in msg and "Efficient-Large-Model/LongLive-1.3B models/lora.pt" in msg
    assert "Wan-AI/Wan2.1-T2V-1.3B Wan2.1_VAE.pth" in msg
    assert {m.file.filename for m in check(LONGLIVE, models=models)} == {"models/lora.pt", "Wan2.1_VAE.pth"}


def test_cli_check_download_list(tmp_path, capsys):
    models, cache = tmp_path / "models", fake_hub(tmp_path / "hub", RECIPES["self-forcing"].files)
    assert main(["weights", "check", "self-forcing", "--models", str(models)]) == 1
    err = capsys.readouterr().err
    assert "gdhe17/Self-Forcing, file checkpoints/self_forcing_dmd.pt" in err
    assert f"vacelive weights download self-forcing --models {models}" in err
    rc = main(["weights", "download", "self-forcing", "--models", str(models), "--hf-cache", str(cache), "--offline"])
    out = capsys.readouterr().out
    assert rc == 0 and "all 8 file(s) present" in out
    assert main(["weights", "check", "self-forcing", "--models", str(models)]) == 0
    capsys.readouterr()
    assert main(["weights", "list", "--models", str(models)]) == 0
    out = capsys.readouterr().out
    assert "Self-Forcing/checkpoints/self_forcing_dmd.pt" in out and "MISSING" in out  # longlive still missing
    assert main(["weights", "check", "framepack"]) == 2  # not a pipeline: the known ones are listed
    err = capsys.readouterr().err
    assert "unknown pipeline 'framepack'" in err and "memflow" in err
    rc = main(["weights", "download", "longlive", "--models", str(models), "--hf-cache", str(tmp_path / "empty"),
               "--offline"])
    assert rc == 1 and "could not be downloaded" in capsys.readouterr().err
