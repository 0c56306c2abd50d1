"""The models folder: where a recipe's weights live, what is missing, and how to download it.

Folder: `--models DIR` > `$VACELIVE_MODELS` > `~/.vacelive/models`. Inside it every file sits at
`<repo name>/<path in the repo>` (engine.pipelines.WeightFile.path), e.g.
    ~/.vacelive/models/LongLive-1.3B/models/longlive_base.pt
    ~/.vacelive/models/Wan2.1-T2V-1.3B/google/umt5-xxl/tokenizer.json
Downloads go through `huggingface_hub.hf_hub_download` into an HF cache inside the models folder
(`<models>/.hf-cache`, resumable) and are hard-linked into the layout (same disk: no second copy;
the cache can be deleted afterwards). With another cache folder on another disk they are copied.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vacelive.engine.pipelines import TOKENIZER, Recipe, WeightFile, WeightOptions

log = logging.getLogger(__name__)

ENV_VAR = "VACELIVE_MODELS"
HF_CACHE_NAME = ".hf-cache"


def default_models_dir() -> Path:
    return Path.home() / ".vacelive" / "models"


def models_dir(flag: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The models folder: the --models flag, else $VACELIVE_MODELS, else ~/.vacelive/models."""
    env = os.environ if env is None else env
    chosen = flag or env.get(ENV_VAR) or default_models_dir()
    return Path(chosen).expanduser()


@dataclass(frozen=True)
class MissingFile:
    file: WeightFile
    path: Path  # where it was expected


def _present(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0  # a 0-byte leftover is not a weight file


def check(recipe: Recipe, options: WeightOptions = WeightOptions(),
          models: str | os.PathLike | None = None) -> list[MissingFile]:
    """Every file the recipe needs with these options that is not in the models folder."""
    root = models_dir(models)
    return [MissingFile(f, root / f.path) for f in recipe.needed(options) if not _present(root / f.path)]


def download_command(recipe: Recipe, options: WeightOptions = WeightOptions(),
                     models: str | os.PathLike | None = None) -> str:
    """The exact `vacelive weights download ...` line that fetches what this run needs."""
    parts = ["vacelive", "weights", "download", recipe.name, "--models", _quote(str(models_dir(models)))]
    defaults = WeightOptions()
    if options.codec != defaults.codec:
        parts += ["--codec", options.codec]
    if options.text_encoder != defaults.text_encoder:
        parts += ["--text-encoder", options.text_encoder]
    return " ".join(parts)


def _quote(s: str) -> str:
    return f'"{s}"' if any(c.isspace() for c in s) else s


class MissingWeightsError(FileNotFoundError):
    """Raised before loading when files are missing; the message lists every one and how to get it."""

    def __init__(self, recipe: Recipe, missing: list[MissingFile], options: WeightOptions, models: Path):
        self.recipe, self.missing, self.options, self.models = recipe, missing, options, models
        lines = [f"{len(missing)} weight file(s) for pipeline '{recipe.name}' missing in {models}:"]
        for m in missing:
            lines.append(f"  - {m.file.role}: {m.path}")
            lines.append(f"      from Hugging Face {m.file.repo_id}, file {m.file.filename}")
        lines.append("Download them with:")
        lines.append(f"  {download_command(recipe, options, models)}")
        super().__init__("\n".join(lines))

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror) otherwise
        return self.args[0]


def require(recipe: Recipe, options: WeightOptions = WeightOptions(),
            models: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths by role for a run (the tokenizer role is its folder); MissingWeightsError if incomplete."""
    root = models_dir(models)
    missing = check(recipe, options, root)
    if missing:
        raise MissingWeightsError(recipe, missing, options, root)
    paths: dict[str, Path] = {}
    for f in recipe.needed(options):
        path = root / f.path
        paths.setdefault(f.role, path.parent if f.role == TOKENIZER else path)
    return paths


class DownloadError(RuntimeError):
    """Some files could not be fetched; the message lists each with the reason."""


def hub_unreachable(endpoint: str | None = None, timeout: float = 5.0) -> str | None:
    """None when a TCP connection to the Hugging Face endpoint ($HF_ENDPOINT, default
    https://huggingface.co) opens within `timeout`; otherwise why not. Checked once before a
    download, so a machine without network fails in seconds instead of after the hub client's
    retries. Name resolution runs on a helper thread: getaddrinfo has no timeout of its own."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(2 * timeout)
    return outcome[0] if outcome else f"no answer within {2 * timeout:.0f} s"


def _unreachable_error(endpoint: str, reason: str, missing: list[WeightFile], root: Path) -> DownloadError:
    lines = [f"cannot reach {endpoint} ({reason}); nothing was downloaded.",
             f"{len(missing)} file(s) missing in {root}:"]
    for f in missing:
        lines.append(f"  - {root / f.path}")
        lines.append(f"      from Hugging Face {f.repo_id}, file {f.filename}")
    lines.append("Connect this machine to the network and run the command again, or copy the files "
                 "to those paths (from a Hugging Face cache: --offline --hf-cache DIR).")
    return DownloadError("\n".join(lines))


def _offline_reason(exc: Exception, cache: Path) -> str | None:
    """Our sentence for a file missing from the HF cache under --offline (the hub client's own
    message tells the user to change a Python argument)."""
    if type(exc).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return (f"not in the Hugging Face cache {cache} (--offline never uses the network: run "
                "without --offline to download it, or point --hf-cache at a cache that has it)")
    return None


def download(
    recipe: Recipe,
    models: str | os.PathLike | None = None,
    options: WeightOptions = WeightOptions(),
    *,
    include_optional: bool = False,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    report: Callable[[str], None] = log.info,
) -> list[Path]:
    """Fetch the recipe's missing files into the models folder layout; returns the files placed.

    Files already present are skipped. Every file is tried even if one fails; then DownloadError.
    `cache_dir`: HF cache to download into (default <models>/.hf-cache); `local_files_only`: take
    files only from that cache, never the network (offline installs and tests).
    """
    from huggingface_hub import hf_hub_download  # imported here: only downloads need it

    root = models_dir(models)
    cache = Path(cache_dir) if cache_dir is not None else root / HF_CACHE_NAME
    wanted = recipe.needed(options) + (recipe.optional(options) if include_optional else ())
    placed: list[Path] = []
    failures: list[str] = []
    missing = [f for f in wanted if not _present(root / f.path)]
    if missing and not local_files_only:
        from huggingface_hub import constants

        reason = hub_unreachable(constants.ENDPOINT)
        if reason is not None:
            raise _unreachable_error(constants.ENDPOINT, reason, missing, root)
    for f in wanted:
        dest = root / f.path
        if _present(dest):
            report(f"present  {f.path}")
            continue
        report(f"fetching {f.repo_id} {f.filename}")
        try:
            src = hf_hub_download(repo_id=f.repo_id, filename=f.filename, cache_dir=str(cache),
                                  local_files_only=local_files_only)
            _place(Path(src), dest)
        except Exception as exc:  # network, 404, disk full: report and go on with the rest
            offline = _offline_reason(exc, cache) if local_files_only else None
            reason = offline or f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            failures.append(f"  - {f.repo_id} {f.filename}: {reason}")
            continue
        placed.append(dest)
        report(f"placed   {dest}")
    if failures:
        raise DownloadError(f"{len(failures)} file(s) could not be downloaded into {root}:\n" + "\n".join(failures))
    return placed


def _place(src: Path, dest: Path) -> None:
    """Hard-link (or copy across disks) a cached file to its layout path, atomically."""
    src = src.resolve()  # HF cache snapshots are symlinks into blobs/
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
