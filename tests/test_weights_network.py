"""`vacelive weights download` without a network: one reachability check, then a fast error that
lists every missing file (no hub-client retries); --offline speaks our language."""
from __future__ import annotations

import socket

import huggingface_hub
import pytest
from huggingface_hub import constants

from vacelive.bridge.cli import main
from vacelive.engine.models_dir import hub_unreachable
from vacelive.engine.pipelines import RECIPES, WeightOptions


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: a connection is refused at once
    return port


@pytest.fixture
def no_hub(monkeypatch):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def never(*a, **k):
        raise AssertionError("hf_hub_download called although the hub is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", never)
    return endpoint


def test_unreachable_hub_fails_at_once_with_every_missing_file(tmp_path, no_hub, capsys):
    models = tmp_path / "models"
    assert main(["weights", "download", "self-forcing", "--models", str(models)]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach {no_hub} (ConnectionRefusedError" in err
    assert "nothing was downloaded" in err
    for f in RECIPES["self-forcing"].needed(WeightOptions()):
        assert str(models / f.path) in err and f"{f.repo_id}, file {f.filename}" in err
    assert "local_files_only" not in err


def test_unreachable_hub_for_an_annotator(tmp_path, no_hub, capsys):
    assert main(["weights", "download", "depth", "--models", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach {no_hub}" in err and "model.safetensors" in err


def test_offline_message_names_the_cache_not_a_python_argument(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "empty-cache"
    assert main(["weights", "download", "self-forcing", "--models", str(tmp_path / "m"),
                 "--hf-cache", str(cache), "--offline"]) == 1
    err = capsys.readouterr().err
    assert "local_files_only" not in err
    assert f"not in the Hugging Face cache {cache}" in err and "run without --offline" in err


def test_reachability_probe():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        assert hub_unreachable(f"http://127.0.0.1:{server.getsockname()[1]}") is None
    finally:
        server.close()
    assert "ConnectionRefusedError" in hub_unreachable(f"http://127.0.0.1:{closed_port()}")


def test_hf_hub_offline_counts_as_unreachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unreachable("http://127.0.0.1:1") == "HF_HUB_OFFLINE is set"
