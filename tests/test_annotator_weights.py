"""Annotator weights: the catalogue's public sources and models-folder layout, `vacelive weights
check|download <annotator>` (no network: a fake URL opener and a fake Hugging Face download),
the sha256 check of torchvision files, and the error that names the download command."""
from __future__ import annotations

import argparse
import hashlib
import io

import pytest

from vacelive.bridge.commands import weights as cli
from vacelive.engine import annotator_models as am
from vacelive.engine.annotator_models import ANNOTATOR_MODELS, AnnotatorDownloadError, download, missing_message


def parse(*argv):
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(argv)


def test_catalogue_names_the_public_sources_and_layout():
    d = ANNOTATOR_MODELS["depth"]
    assert [f.path for f in d.files] == ["Depth-Anything-V2-Small-hf/config.json",
                                         "Depth-Anything-V2-Small-hf/model.safetensors"]
    assert {f.repo_id for f in d.files} == {"depth-anything/Depth-Anything-V2-Small-hf"}
    assert ANNOTATOR_MODELS["depth-large"].files[1].repo_id == "depth-anything/Depth-Anything-V2-Large-hf"
    small, large = ANNOTATOR_MODELS["flow"].files[0], ANNOTATOR_MODELS["flow-large"].files[0]
    assert small.url == "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth"
    assert large.url == "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth"
    assert (small.path, small.sha256_prefix) == ("torchvision/raft_small_C_T_V2-01064c6d.pth", "01064c6d")


class FakeUrls:
    def __init__(self, payload: bytes):
        self.payload, self.urls = payload, []

    def __call__(self, url):
        self.urls.append(url)
        return io.BytesIO(self.payload)


def test_url_download_checks_the_sha256_prefix(tmp_path, monkeypatch):
    payload = b"raft weights"
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    f = am.AnnotatorFile(f"torchvision/raft-{prefix}.pth", url=f"https://example.invalid/raft-{prefix}.pth",
                         sha256_prefix=prefix)
    model = am.AnnotatorModel("flow", "t", "torchvision", (f,), "x")
    opener = FakeUrls(payload)
    assert download(model, tmp_path, opener=opener, report=lambda m: None) == [tmp_path / f.path]
    assert (tmp_path / f.path).read_bytes() == payload and opener.urls == [f.url]
    assert download(model, tmp_path, opener=opener, report=lambda m: None) == []  # present: skipped
    bad = am.AnnotatorModel("flow", "t", "torchvision", (am.AnnotatorFile("torchvision/x.pth", url="u",
                                                                          sha256_prefix="00000000"),), "x")
    with pytest.raises(AnnotatorDownloadError, match="sha256"):
        download(bad, tmp_path, opener=opener, report=lambda m: None)
    assert not (tmp_path / "torchvision/x.pth").exists() and not (tmp_path / "torchvision/x.pth.partial").exists()


def test_cli_check_and_download_of_an_annotator(tmp_path, monkeypatch, capsys):
    assert cli.run(parse("check", "depth", "--models", str(tmp_path))) == 1
    err = capsys.readouterr().err
    assert "Depth-Anything-V2-Small-hf/model.safetensors" in err
    assert f"vacelive weights download depth --models {tmp_path}" in err

    src = tmp_path / "cache"
    src.mkdir()
    calls = []

    def fake_hf(repo_id, filename, cache_dir, local_files_only):
        calls.append((repo_id, filename, local_files_only))
        p = src / filename
        p.write_text("{}" if filename.endswith(".json") else "weights")
        return str(p)

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf)
    assert cli.run(parse("download", "depth", "--models", str(tmp_path), "--offline")) == 0
    assert calls == [("depth-anything/Depth-Anything-V2-Small-hf", "config.json", True),
                     ("depth-anything/Depth-Anything-V2-Small-hf", "model.safetensors", True)]
    assert (tmp_path / "Depth-Anything-V2-Small-hf" / "model.safetensors").read_text() == "weights"
    assert cli.run(parse("check", "depth", "--models", str(tmp_path))) == 0
    # torchvision files never come from a cache: offline says so instead of reaching the network
    assert cli.run(parse("download", "flow", "--models", str(tmp_path), "--offline")) == 1
    assert "offline" in capsys.readouterr().err


def test_missing_message_names_files_and_command(tmp_path):
    msg = missing_message(ANNOTATOR_MODELS["flow-large"], tmp_path, "Flow annotator")
    assert str(tmp_path / "torchvision" / "raft_large_C_T_SKHT_V2-ff5fadd5.pth") in msg
    assert f"vacelive weights download flow-large --models {tmp_path}" in msg
