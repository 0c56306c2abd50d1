"""Weights of the control-map annotators: which files, where they come from, where they go.

Torch-free (the `vacelive weights` command imports it). Every file sits in the models folder at
`<folder>/<file>` (the same `<repo name>/<path>` layout as the pipelines' weights):
    <models>/Depth-Anything-V2-Small-hf/config.json, model.safetensors   (Hugging Face)
    <models>/torchvision/raft_small_C_T_V2-01064c6d.pth                  (download.pytorch.org)
Nothing is ever downloaded at run time: `vacelive weights download depth` (or flow, ...) places
the files; the annotator only reads the models folder and names that command when they are missing.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class AnnotatorFile:
    path: str  # inside the models folder
    repo_id: str = ""  # Hugging Face repo ...
    filename: str = ""  # ... and its file
    url: str = ""  # or a plain HTTPS download
    sha256_prefix: str = ""  # torchvision names its files <name>-<first 8 hex of sha256>.pth

    @property
    def source(self) -> str:
        return self.url or f"Hugging Face {self.repo_id} : {self.filename}"


@dataclass(frozen=True)
class AnnotatorModel:
    name: str  # the annotator name (/vace/annotator) and the `vacelive weights` argument
    title: str
    folder: str  # folder inside the models folder
    files: tuple[AnnotatorFile, ...]
    license: str

    def missing(self, models: Path) -> list[AnnotatorFile]:
        return [f for f in self.files if not _present(models / f.path)]

    @property
    def download_command(self) -> str:
        return f"vacelive weights download {self.name}"


def _present(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _depth(name: str, size: str, license: str) -> AnnotatorModel:
    repo = f"depth-anything/Depth-Anything-V2-{size}-hf"
    folder = repo.split("/")[-1]
    return AnnotatorModel(
        name, f"Depth Anything V2 {size} (transformers)", folder,
        tuple(AnnotatorFile(f"{folder}/{f}", repo_id=repo, filename=f) for f in ("config.json", "model.safetensors")),
        license)


# torchvision.models.optical_flow: Raft_Small_Weights.C_T_V2 / Raft_Large_Weights.C_T_SKHT_V2
# (each one's DEFAULT), https://pytorch.org/vision/stable/models/raft.html
TORCHVISION_MODELS = "https://download.pytorch.org/models"


def _raft(name: str, title: str, file: str) -> AnnotatorModel:
    return AnnotatorModel(
        name, title, "torchvision",
        (AnnotatorFile(f"torchvision/{file}", url=f"{TORCHVISION_MODELS}/{file}",
                       sha256_prefix=file.rsplit("-", 1)[1].split(".")[0]),),
        "BSD-3-Clause (torchvision)")


# DWPose as UniAnimate-DiT runs it: YOLOX-L person detector + DWPose-L 384x288 whole-body, ONNX
# (Hugging Face yzd-v/DWPose, Apache-2.0); engine.conditioning.pose_annotator reads <models>/DWPose/.
DWPOSE = AnnotatorModel(
    "pose", "DWPose (YOLOX-L detector + DWPose-L whole-body, ONNX over onnxruntime)", "DWPose",
    tuple(AnnotatorFile(f"DWPose/{f}", repo_id="yzd-v/DWPose", filename=f) for f in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")),
    "Apache-2.0")
# Not an annotator: UniAnimate-DiT's released file (14B LoRA + the pose CNNs that engine.pose loads
# for pose tokens), Hugging Face ZheWang123/UniAnimate-DiT; engine.pose.build reads it from here.
UNIANIMATE = AnnotatorModel(
    "unianimate", "UniAnimate-DiT pose embedding (pose tokens; the file also holds its 14B LoRA)", "UniAnimate-DiT",
    (AnnotatorFile("UniAnimate-DiT/UniAnimate-Wan2.1-14B-Lora-12000.ckpt", repo_id="ZheWang123/UniAnimate-DiT",
                   filename="UniAnimate-Wan2.1-14B-Lora-12000.ckpt"),),
    "see the model card (ZheWang123/UniAnimate-DiT)")

ANNOTATOR_MODELS: dict[str, AnnotatorModel] = {m.name: m for m in (
    DWPOSE, UNIANIMATE,
    _depth("depth", "Small", "Apache-2.0"),
    _depth("depth-base", "Base", "CC-BY-NC-4.0"),
    _depth("depth-large", "Large", "CC-BY-NC-4.0"),
    _raft("flow", "RAFT small (torchvision, Chairs + Things)", "raft_small_C_T_V2-01064c6d.pth"),
    _raft("flow-large", "RAFT large (torchvision, Chairs + Things + Sintel/KITTI/HD1K/Things)",
          "raft_large_C_T_SKHT_V2-ff5fadd5.pth"),
)}


def missing_message(model: AnnotatorModel, models: Path, what: str) -> str:
    """The performer's sentence for missing weights: what, where, and the command that fetches them."""
    files = ", ".join(str(models / f.path) for f in model.missing(models)) or str(models / model.folder)
    return (f"{what}: weights not found ({files}). Download them with: {model.download_command} "
            f"--models {models}. Until then the video is ignored for this annotator.")


class AnnotatorDownloadError(RuntimeError):
    pass


def download(model: AnnotatorModel, models: Path, *, cache_dir: Path | None = None,
             local_files_only: bool = False, report: Callable[[str], None] = print,
             opener: Callable[[str], object] = urllib.request.urlopen) -> list[Path]:
    """Place the model's missing files into the models folder; every file is tried, then
    AnnotatorDownloadError lists the failures. URL files are checked against their sha256 prefix."""
    placed, failures = [], []
    hub_files = [f for f in model.files if not f.url and not _present(models / f.path)]
    if hub_files and not local_files_only:
        from huggingface_hub import constants

        from vacelive.engine.models_dir import hub_unreachable

        reason = hub_unreachable(constants.ENDPOINT)
        if reason is not None:  # fail in seconds, not after the hub client's retries
            raise AnnotatorDownloadError(
                f"cannot reach {constants.ENDPOINT} ({reason}); nothing was downloaded. Missing in "
                f"{models}: " + ", ".join(f"{models / f.path} (Hugging Face {f.repo_id}, file "
                                          f"{f.filename})" for f in hub_files))
    for f in model.files:
        dest = models / f.path
        if _present(dest):
            report(f"present  {f.path}")
            continue
        report(f"fetching {f.source}")
        try:
            if f.url:
                if local_files_only:
                    raise AnnotatorDownloadError("offline: only Hugging Face files come from the cache")
                _fetch_url(f, dest, opener)
            else:
                from huggingface_hub import hf_hub_download

                from vacelive.engine.models_dir import HF_CACHE_NAME, _place

                src = hf_hub_download(repo_id=f.repo_id, filename=f.filename,
                                      cache_dir=str(cache_dir or models / HF_CACHE_NAME),
                                      local_files_only=local_files_only)
                _place(Path(src), dest)
        except Exception as exc:  # network, 404, hash, disk: report and go on with the rest
            from vacelive.engine.models_dir import HF_CACHE_NAME, _offline_reason

            offline = _offline_reason(exc, Path(cache_dir or models / HF_CACHE_NAME))
            reason = offline or f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            failures.append(f"  - {f.source}: {reason}")
            continue
        placed.append(dest)
        report(f"placed   {dest}")
    if failures:
        raise AnnotatorDownloadError(f"{len(failures)} file(s) could not be downloaded into {models}:\n"
                                     + "\n".join(failures))
    return placed


def _fetch_url(f: AnnotatorFile, dest: Path, opener) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    with opener(f.url) as response, open(tmp, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if f.sha256_prefix and not digest.hexdigest().startswith(f.sha256_prefix):
        tmp.unlink(missing_ok=True)
        raise AnnotatorDownloadError(f"sha256 {digest.hexdigest()[:8]}... does not match {f.sha256_prefix}")
    os.replace(tmp, dest)
