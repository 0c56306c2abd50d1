"""Presets: named JSON files of live parameter values, validated against the schema.

Two folders: the shipped examples and a user folder for saved ones (`$VACELIVE_PRESETS_DIR`, else
`$XDG_CONFIG_HOME/vacelive/presets`, else `~/.config/vacelive/presets`; `--presets-dir`
overrides). A saved preset with a shipped name shadows the shipped one. The shipped examples are
the repository's presets/ folder, installed as the package `vacelive.presets`. Files are written atomically (temp file + os.replace), so a crash or a
full disk never leaves half a preset; a corrupt or invalid file loads nothing and the error names
the file and the key.

File format (format 1):
    {"format": 1, "name": "neon-city", "description": "...", "morph_chunks": 4,
     "params": {"prompts": [{"text": "neon city", "weight": 1.0}], "context_scale": 1.2}}
`params` may hold any subset of the live parameters that presets store (see docs/osc.md);
`"prompt": "text"` is accepted as a shorthand for a one-entry prompts list. A `lora/<name>` that
this session did not register is skipped with a notice (presets travel between rigs).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from vacelive.bridge.schema import DEFAULT_SCHEMA

from vacelive.bridge.param_types import ParamError, Schema, to_json_value

FORMAT = 1


def shipped_dir() -> Path:
    """The shipped example presets: the `vacelive.presets` package folder (the repository's
    presets/ in a checkout, package data in a wheel)."""
    import vacelive.presets
    return Path(vacelive.presets.__file__).resolve().parent


SHIPPED_DIR = shipped_dir()
MAX_FILE_BYTES = 1_000_000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
_TOP_KEYS = ("format", "name", "description", "morph_chunks", "params")


class PresetError(ValueError):
    """A preset that cannot be loaded or saved; the message names the file and key."""


def default_user_dir() -> Path:
    env = os.environ.get("VACELIVE_PRESETS_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "vacelive" / "presets"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise PresetError(
            f"preset name {name!r}: use 1-64 letters, digits, space, '_', '-' or '.' "
            "(no path separators)"
        )
    return name


@dataclass(frozen=True)
class Preset:
    name: str
    values: Mapping[str, Any]  # canonical values, ready for ParamStore.morph_to
    description: str = ""
    morph_chunks: int | None = None  # default morph length when the load message gives none
    path: Path | None = None
    notices: tuple[str, ...] = ()  # keys skipped (LoRAs this session lacks)


def validate(data: Any, source: str, schema: Schema = DEFAULT_SCHEMA) -> Preset:
    """Check parsed JSON against the schema; `source` names the file in every message."""
    if not isinstance(data, dict):
        raise PresetError(f"{source}: expected a JSON object, got {type(data).__name__}")
    extra = [k for k in data if k not in _TOP_KEYS]
    if extra:
        raise PresetError(f"{source}: unknown key {extra[0]!r} (expected {', '.join(_TOP_KEYS)})")
    if data.get("format", FORMAT) != FORMAT:
        raise PresetError(f"{source}: format {data.get('format')!r} is not supported (use {FORMAT})")
    params = data.get("params")
    if not isinstance(params, dict):
        raise PresetError(f"{source}: 'params' must be an object of parameter values")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise PresetError(f"{source}: 'description' must be text")
    chunks = data.get("morph_chunks")
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, int)
                               or not 0 <= chunks <= 256):
        raise PresetError(f"{source}: 'morph_chunks' must be an integer 0..256")
    values: dict[str, Any] = {}
    notices = []
    for key, raw in params.items():
        p = schema.get(key)
        where = f"{source}: params.{key}"
        if p is None:
            if key.startswith("lora/"):
                notices.append(f"{where}: LoRA '{key[5:]}' is not loaded in this session; skipped")
                continue
            try:
                schema[key]
            except ParamError as exc:  # carries a did-you-mean
                raise PresetError(f"{where}: {exc}") from None
        if not p.live:
            raise PresetError(f"{where}: load-time parameter; presets hold live parameters only")
        if p.type == "action" or not (p.in_presets or p.alias_of):
            raise PresetError(f"{where}: not stored in presets")
        try:
            values[key] = p.coerce(raw, clamp=False)
        except ParamError as exc:
            raise PresetError(f"{where}: {exc}") from None
    if "prompt" in values and "prompts" in values:
        raise PresetError(f"{source}: give either 'prompt' or 'prompts', not both")
    name = data.get("name")
    return Preset(name if isinstance(name, str) else "", values, description, chunks, None,
                  tuple(notices))


def read(path: Path, schema: Schema = DEFAULT_SCHEMA) -> Preset:
    """Load and validate one preset file; PresetError (never a partial preset) otherwise."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PresetError(f"{source}: {size} bytes is too large for a preset")
        text = path.read_text(encoding="utf-8")
    except PresetError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{source}: cannot read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PresetError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    preset = validate(data, source, schema)
    return Preset(path.stem, preset.values, preset.description, preset.morph_chunks, path,
                  preset.notices)


def write_atomic(path: Path, text: str) -> None:
    """Write text so readers see the old file or the new one, never a half one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class PresetLibrary:
    """Shipped + user presets by name."""

    def __init__(self, schema: Schema = DEFAULT_SCHEMA, user_dir: Path | str | None = None,
                 shipped_dir: Path | str | None = SHIPPED_DIR):
        self.schema = schema
        self.user_dir = Path(user_dir).expanduser() if user_dir else default_user_dir()
        self.shipped_dir = Path(shipped_dir) if shipped_dir else None

    def _dirs(self) -> list[Path]:
        return [d for d in (self.user_dir, self.shipped_dir) if d is not None]

    def names(self) -> list[str]:
        found: set[str] = set()
        for d in self._dirs():
            if d.is_dir():
                found.update(p.stem for p in d.glob("*.json") if not p.name.startswith("."))
        return sorted(found, key=str.lower)

    def path_of(self, name: str) -> Path | None:
        check_name(name)
        for d in self._dirs():
            path = d / f"{name}.json"
            if path.is_file():
                return path
        return None

    def load(self, name: str) -> Preset:
        path = self.path_of(name)
        if path is None:
            known = ", ".join(self.names()) or "none"
            raise PresetError(f"no preset named '{name}' (known: {known})")
        return read(path, self.schema)

    def save(self, name: str, values: Mapping[str, Any], description: str = "",
             morph_chunks: int | None = None) -> Path:
        """Validate and write `values` (canonical store values) as user preset `name`."""
        check_name(name)
        data: dict[str, Any] = {"format": FORMAT, "name": name}
        if description:
            data["description"] = description
        if morph_chunks is not None:
            data["morph_chunks"] = morph_chunks
        data["params"] = {k: to_json_value(v) for k, v in values.items()}
        path = self.user_dir / f"{name}.json"
        validate(data, str(path), self.schema)  # never write a file we would refuse to load
        write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return path
