"""The one parameter schema: every live and load-time parameter of vacelive, described once.

OSC handling (bridge/osc), the parameter store, preset validation, docs/osc.md, `/vace/describe`,
the OSCQuery namespace and the TouchDesigner parameter page are all generated from `Param`
records here, so adding a parameter is one entry in `_live_params()`.

Live parameter names equal ChunkRequest field names where such a field exists (seed, steps,
context_scale, ...); `Snapshot.request_fields()` in bridge/store.py relies on that.

`Param.coerce()` turns one Python value into the canonical stored value (immutable: tuples, not
lists) or raises ParamError with a message meant for the performer. OSC-specific argument shapes
(multi-argument lists, `/norm`, `/index`) are handled in bridge/osc/coercion.py on top of it.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

PREFIX = "/vace"
SCHEMA_VERSION = 1

ParamType = Literal["float", "int", "bool", "str", "enum", "str_list", "prompts", "action"]

# What a change costs on the engine side. Shown in docs and UIs so a performer knows which
# moves are free and which cause a hitch.
COSTS: dict[str, str] = {
    "none": "applied at the next chunk boundary at no extra cost",
    "text_encode": "the text encoder runs on new prompt text (cached per text)",
    "kv_recache": "with transition_chunks = 0 the cross-attention cache is reset and the KV cache "
    "is re-computed from recent frames (a cut); with a transition the prompts blend instead",
    "vae_encode": "image files are loaded and VAE-encoded",
    "lora_remerge": "LoRA weights are re-scaled (re-merged where LoRAs are fused)",
    "reset": "every stream state is cleared; the next chunk starts fresh (a visible cut)",
    "restart": "load-time: fixed when the engine starts; restart to change it",
}

INT32_MAX = 2**31 - 1
MAX_TEXT = 4000  # characters; far beyond the 512 text tokens the encoder reads, a sanity bound
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_][A-Za-z0-9_-]*)*$")
_LORA_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,47}$")

Prompts = tuple[tuple[str, float], ...]  # canonical weighted prompt list: ((text, weight), ...)


class ParamError(ValueError):
    """A value or address that cannot be applied; str(err) is shown to the performer as-is."""


@dataclass(frozen=True)
class Param:
    name: str  # also the address suffix: address = /vace/<name>
    type: ParamType
    default: Any
    description: str
    group: str  # page name for UIs (TouchDesigner custom page, control-surface tab)
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    live: bool = True
    cost: tuple[str, ...] = ("none",)
    max_items: int | None = None  # str_list / prompts
    morph: Literal["lerp", "step", "prompts", "none"] = "step"  # how a preset morph moves it
    in_presets: bool = True  # saved into / loaded from presets
    alias_of: str | None = None  # a shorthand that writes another param (prompt -> prompts)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad parameter name {self.name!r}")
        unknown = [c for c in self.cost if c not in COSTS]
        if unknown:
            raise ValueError(f"{self.name}: unknown cost {unknown}")
        if self.type == "enum" and self.default not in self.choices:
            raise ValueError(f"{self.name}: default {self.default!r} not in {self.choices}")

    # -- addresses --------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{PREFIX}/{self.name}"

    @property
    def numeric(self) -> bool:
        return self.type in ("float", "int")

    @property
    def osc_type(self) -> str:
        """OSC type tags of the value as sent back (OSCQuery TYPE)."""
        return {
            "float": "f", "int": "i", "bool": "i", "str": "s", "enum": "s",
            "str_list": "s", "prompts": "sf", "action": "I",
        }[self.type]

    # -- values -----------------------------------------------------------------------------
    def coerce(self, value: Any, *, clamp: bool = True) -> Any:
        """Canonical value for `value`, or ParamError. Numbers outside the range are clamped
        (clamp=True, the OSC rule) or rejected (clamp=False, the preset-file rule)."""
        try:
            return _COERCERS[self.type](self, value, clamp)
        except ParamError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:  # anything odd: a clean message
            raise ParamError(f"{self.name}: cannot use {_show(value)} ({exc})") from None

    def normalized(self, value: Any) -> float:
        """Value → 0..1 within the range (numeric params)."""
        lo, hi = self.min, self.max
        return 0.0 if hi == lo else (float(value) - lo) / (hi - lo)

    def from_normalized(self, x: Any) -> Any:
        """0..1 → value in the range; x itself is clamped to 0..1."""
        if not self.numeric:
            raise ParamError(f"{self.address}/norm: {self.name} is not numeric")
        x = _number(self, x)
        x = min(1.0, max(0.0, x))
        return self.coerce(self.min + x * (self.max - self.min))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name, "address": self.address, "type": self.type,
            "default": _jsonable(self.default), "description": self.description,
            "group": self.group, "live": self.live, "cost": list(self.cost),
        }
        if self.min is not None:
            d["min"], d["max"] = self.min, self.max
        if self.choices:
            d["choices"] = list(self.choices)
        if self.unit:
            d["unit"] = self.unit
        if self.max_items is not None:
            d["max_items"] = self.max_items
        if self.live and self.numeric:
            d["norm_address"] = self.address + "/norm"
        if self.live and self.type == "enum":
            d["index_address"] = self.address + "/index"
        if self.live and self.type != "action":
            d["morph"] = self.morph
            d["in_presets"] = self.in_presets
        if self.alias_of:
            d["alias_of"] = self.alias_of
        return d


# --------------------------------------------------------------------------------------------
# coercion of one Python value (OSC argument shapes are handled in bridge/osc/coercion.py)

_TRUE = {"1", "true", "on", "yes", "t", "y"}
_FALSE = {"0", "false", "off", "no", "f", "n", ""}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(p: Param, value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            raise ParamError(f"{p.name}: expected a number, got {_show(value)}") from None
    else:
        raise ParamError(f"{p.name}: expected a number, got {_show(value)}")
    if not math.isfinite(x):
        raise ParamError(f"{p.name}: {value!r} is not a finite number")
    return x


def _in_range(p: Param, x: float, clamp: bool) -> float:
    if p.min is not None and not (p.min <= x <= p.max):
        if not clamp:
            raise ParamError(f"{p.name}: {x:g} is outside {p.min:g}..{p.max:g}")
        x = min(p.max, max(p.min, x))
    return x


def _coerce_float(p: Param, value: Any, clamp: bool) -> float:
    return float(_in_range(p, _number(p, value), clamp))


def _coerce_int(p: Param, value: Any, clamp: bool) -> int:
    x = _number(p, value)
    return int(_in_range(p, math.floor(x + 0.5), clamp))  # 3.5 → 4, TD floats welcome


def _coerce_bool(p: Param, value: Any, clamp: bool) -> bool:
    if isinstance(value, str):
        s = value.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        if not _looks_numeric(s):
            raise ParamError(f"{p.name}: expected a bool (0/1, true/false), got {_show(value)}")
    if isinstance(value, (bool, int, float, str)):
        return _number(p, value) >= 0.5  # 0/1, 0.0/1.0 and fader values alike
    raise ParamError(f"{p.name}: expected a bool (0/1, true/false), got {_show(value)}")


def _coerce_enum(p: Param, value: Any, clamp: bool) -> str:
    if isinstance(value, str):
        s = value.strip()
        for c in p.choices:
            if c.lower() == s.lower():
                return c
        try:
            float(s)
        except ValueError:
            raise ParamError(
                f"{p.name}: {value!r} is not one of {', '.join(p.choices)}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ParamError(f"{p.name}: expected a name or index, got {_show(value)}")
    x = _number(p, value)
    if x != math.floor(x) or not 0 <= x < len(p.choices):
        raise ParamError(
            f"{p.name}: index {x:g} is not in 0..{len(p.choices) - 1} "
            f"({', '.join(f'{i}={c}' for i, c in enumerate(p.choices))})"
        )
    return p.choices[int(x)]


def _text(p: Param, value: Any) -> str:
    if isinstance(value, str):
        s = value
    elif isinstance(value, bool):
        s = "true" if value else "false"
    elif isinstance(value, int):
        s = str(value)
    elif isinstance(value, float):
        s = str(int(value)) if value.is_integer() else repr(value)
    else:
        raise ParamError(f"{p.name}: expected text, got {_show(value)}")
    if len(s) > MAX_TEXT:
        raise ParamError(f"{p.name}: text of {len(s)} characters is longer than {MAX_TEXT}")
    if "\x00" in s:
        raise ParamError(f"{p.name}: text contains a NUL character")
    return s


def _coerce_str(p: Param, value: Any, clamp: bool) -> str:
    if isinstance(value, (list, tuple)):  # several OSC string args: one text
        return _text(p, " ".join(_text(p, v) for v in value))
    return _text(p, value)


def _coerce_str_list(p: Param, value: Any, clamp: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, (str, int, float)) else value
    if not isinstance(items, (list, tuple)):
        raise ParamError(f"{p.name}: expected a list of text, got {_show(value)}")
    out = tuple(t for t in (_text(p, v).strip() for v in items) if t)  # "" clears
    if p.max_items is not None and len(out) > p.max_items:
        raise ParamError(f"{p.name}: {len(out)} items, at most {p.max_items} allowed")
    return out


def _coerce_prompts(p: Param, value: Any, clamp: bool) -> Prompts:
    """Accepts "text", [("text", w), ...], [{"text":..,"weight":..}], Prompt objects, or a flat
    alternating ["text", w, "text", w] list (OSC style; a missing weight means 1.0)."""
    if isinstance(value, str):
        pairs: list[tuple[Any, Any]] = [(value, 1.0)]
    elif isinstance(value, (list, tuple)):
        if all(isinstance(v, (str, int, float)) for v in value):
            pairs = _pairs_from_flat(p, list(value))
        else:
            pairs = [_pair(p, item) for item in value]
    else:
        raise ParamError(f"{p.name}: expected text or a weighted list, got {_show(value)}")
    if not pairs:
        raise ParamError(f"{p.name}: needs at least one prompt")
    if p.max_items is not None and len(pairs) > p.max_items:
        raise ParamError(f"{p.name}: {len(pairs)} prompts, at most {p.max_items} allowed")
    out = []
    for text, weight in pairs:
        w = _number(p, weight)
        if w < 0:
            if not clamp:
                raise ParamError(f"{p.name}: weight {w:g} is negative")
            w = 0.0
        out.append((_text(p, text), float(w)))
    if not any(w > 0 for _, w in out):
        raise ParamError(f"{p.name}: at least one prompt needs a weight above 0")
    return tuple(out)


def _pairs_from_flat(p: Param, flat: list[Any]) -> list[tuple[Any, Any]]:
    pairs = []
    i = 0
    while i < len(flat):
        text = flat[i]
        if not isinstance(text, str):
            raise ParamError(
                f"{p.name}: expected text at position {i + 1}, got {_show(text)} "
                "(send text, weight, text, weight ...)"
            )
        weight: Any = 1.0
        if i + 1 < len(flat) and not isinstance(flat[i + 1], str):
            weight = flat[i + 1]
            i += 1
        elif i + 1 < len(flat) and _looks_numeric(flat[i + 1]):
            weight = flat[i + 1]  # a weight sent as a string, e.g. from a text field
            i += 1
        pairs.append((text, weight))
        i += 1
    return pairs


def _looks_numeric(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _pair(p: Param, item: Any) -> tuple[Any, Any]:
    if isinstance(item, str):
        return item, 1.0
    if isinstance(item, Mapping):
        if "text" not in item:
            raise ParamError(f"{p.name}: prompt entry {_show(item)} has no 'text'")
        return item["text"], item.get("weight", 1.0)
    if isinstance(item, (list, tuple)) and len(item) in (1, 2):
        return item[0], item[1] if len(item) == 2 else 1.0
    if hasattr(item, "text") and hasattr(item, "weight"):  # engine.request.Prompt
        return item.text, item.weight
    raise ParamError(f"{p.name}: cannot read prompt entry {_show(item)}")


def _coerce_action(p: Param, value: Any, clamp: bool) -> bool:
    return True


_COERCERS = {
    "float": _coerce_float, "int": _coerce_int, "bool": _coerce_bool, "enum": _coerce_enum,
    "str": _coerce_str, "str_list": _coerce_str_list, "prompts": _coerce_prompts,
    "action": _coerce_action,
}


def _jsonable(value: Any) -> Any:
    """Canonical value → JSON (prompts as [{"text","weight"}], tuples as lists)."""
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return [{"text": t, "weight": w} for t, w in value]
        return list(value)
    return value


def to_json_value(value: Any) -> Any:
    return _jsonable(value)


def dominant_text(prompts: Prompts) -> str:
    """The text with the largest weight: what `prompt` reads back when a weighted list is set."""
    return max(prompts, key=lambda tw: tw[1])[0] if prompts else ""


# --------------------------------------------------------------------------------------------
# the parameter list

def _live_params() -> list[Param]:
    P = Param
    return [
        # Prompt
        P("prompt", "str", "", "Single prompt text; same as prompts = [(text, 1.0)]. Reads back "
          "the highest-weighted text when a weighted list is set.", "Prompt",
          cost=("text_encode", "kv_recache"), morph="none", in_presets=False,
          alias_of="prompts"),
        P("prompts", "prompts", (("", 1.0),), "Weighted prompt list blended by the engine. OSC "
          "args alternate text, weight (\"a forest\", 1.0, \"neon city\", 0.5); one JSON string "
          "[{\"text\":..,\"weight\":..}] also works.", "Prompt", max_items=8,
          cost=("text_encode", "kv_recache"), morph="prompts"),
        P("transition_chunks", "int", 0, "Chunks over which a prompt change blends; 0 cuts "
          "(cross-attention reset and KV re-cache).", "Prompt", 0, 32, unit="chunks",
          morph="lerp"),
        P("blend", "enum", "linear", "How weighted prompt embeddings are blended.", "Prompt",
          choices=("linear", "slerp")),
        # Generation
        P("seed", "int", 42, "Noise seed of the next chunks.", "Generation", 0, INT32_MAX),
        P("steps", "int", 4, "Denoising steps per chunk (fewer is faster, softer).",
          "Generation", 1, 4, unit="steps", morph="lerp"),
        P("pause", "bool", False, "Hold generation; the output keeps showing the last frame.",
          "Generation", in_presets=False),
        P("reset", "action", None, "Clear every stream state; the next chunk starts fresh.",
          "Generation", cost=("reset",), morph="none", in_presets=False),
        # VACE
        P("context_scale", "float", 1.0, "VACE hint strength: how strongly control video, "
          "masks and references steer the output.", "VACE", 0.0, 2.0, morph="lerp"),
        P("hint_reuse", "bool", False, "Compute VACE hints once per chunk instead of every "
          "denoising step (faster, slightly less faithful).", "VACE"),
        P("refs", "str_list", (), "Reference image file paths (0 to 3) for subject/style (R2V). "
          "Several args or one; an empty message or \"\" clears them.", "VACE", max_items=3,
          cost=("vae_encode",)),
        P("ref_fit", "enum", "crop", "How reference images are fitted to the generation size.",
          "VACE", choices=("crop", "letterbox")),
        # Inputs
        P("video_enabled", "bool", True, "Use the control/source video input when one is "
          "connected; off generates from text and references only.", "Inputs"),
        P("annotator", "enum", "none", "Turn the incoming video into a control map on the GPU "
          "before VACE (none: the video already is a control map or a source to inpaint).",
          "Inputs", choices=("none", "gray", "edges", "scribble", "depth", "pose")),
        P("fit", "enum", "crop", "How wrong-size video and mask inputs are fitted.", "Inputs",
          choices=("crop", "letterbox", "stretch")),
        P("mask_enabled", "bool", True, "Use the mask input when one is connected (white = "
          "generate, black = keep).", "Inputs"),
        P("mask_channel", "enum", "alpha", "Which channel of the mask texture is the mask.",
          "Inputs", choices=("alpha", "red", "luma")),
        P("outpaint_direction", "enum", "none", "Expand the canvas: the input shrinks into the "
          "frame and the new border on these sides is generated.", "Inputs",
          choices=("none", "left", "right", "top", "bottom", "horizontal", "vertical", "all")),
        P("outpaint_ratio", "float", 0.25, "Fraction of the output width/height generated on "
          "each outpainted side.", "Inputs", 0.0, 0.45, morph="lerp"),
        # Extension
        P("extension_mode", "enum", "none", "Anchor the stream to first/last frame or clip "
          "files (VACE frame extension); changing it to none ends a running extension.", "Extension",
          choices=("none", "firstframe", "lastframe", "firstlastframe", "firstclip", "lastclip",
                   "firstlastclip"), cost=("vae_encode",)),
        P("extension_first", "str", "", "File path of the first-frame image or clip.",
          "Extension", cost=("vae_encode",)),
        P("extension_last", "str", "", "File path of the last-frame image or clip.",
          "Extension", cost=("vae_encode",)),
        P("extension_chunks", "int", 1, "For how many chunks the anchors condition the stream.",
          "Extension", 1, 64, unit="chunks"),
        # Output
        P("output_fps", "float", 0.0, "Output frame rate target; 0 follows the measured "
          "generation rate.", "Output", 0.0, 120.0, unit="fps", in_presets=False),
        P("snapshot", "action", None, "Save the next output frame as a PNG (the run loop "
          "writes it and reports the path).", "Output", morph="none", in_presets=False),
    ]


def _lora_param(name: str, default: float) -> Param:
    what = "the pipeline's own LoRA (e.g. LongLive)" if name == "pipeline" else f"LoRA '{name}'"
    return Param(f"lora/{name}", "float", float(default), f"Scale of {what}.", "LoRA", 0.0, 2.0,
                 cost=("lora_remerge",), morph="lerp")


def _load_time_params() -> list[Param]:
    def P(name, type_, default, description, **kw):
        return Param(name, type_, default, description, "Startup", live=False,
                     cost=("restart",), morph="none", in_presets=False, **kw)

    return [
        P("pipeline", "str", "longlive", "Causal pipeline (cache policy and schedule)."),
        P("width", "int", 832, "Generation width in pixels (multiple of 16).", min=256,
          max=2048, unit="px"),
        P("height", "int", 480, "Generation height in pixels (multiple of 16).", min=256,
          max=2048, unit="px"),
        P("dtype", "enum", "bfloat16", "Model compute dtype.",
          choices=("bfloat16", "float16", "float32")),
        P("codec", "str", "wan2.1", "VAE used to encode inputs and decode frames."),
        P("models_dir", "str", "", "Folder with the model weights."),
        P("loras", "str_list", (), "User LoRAs registered at start-up (name=path); each gets "
          "/vace/lora/<name>."),
        P("osc_host", "str", "127.0.0.1", "OSC bind address; 0.0.0.0 opts into the LAN."),
        P("osc_port", "int", 7700, "OSC UDP port.", min=1, max=65535),
        P("oscquery_port", "int", 7701, "OSCQuery HTTP port (0 = off).", min=0, max=65535),
        P("presets_dir", "str", "", "User preset folder (saved presets)."),
    ]


# --------------------------------------------------------------------------------------------
# non-parameter addresses (for docs, /vace/describe and OSCQuery)

@dataclass(frozen=True)
class Control:
    address: str
    args: str  # human signature
    reply: str
    description: str
    osc_type: str = ""


CONTROLS: tuple[Control, ...] = (
    Control(f"{PREFIX}/get", "[address|name ...]", "<address> <value> per parameter",
            "Current value(s); no argument sends every live value.", "s"),
    Control(f"{PREFIX}/describe", "[address|name]", f"{PREFIX}/describe <json>",
            "The schema as JSON (one parameter, or everything).", "s"),
    Control(f"{PREFIX}/hello", "[port]", "every live value",
            "Register sender-ip:port (default: the sending port) for echoes and status; "
            "TouchDesigner sends from a random port, so pass its OSC In port.", "i"),
    Control(f"{PREFIX}/preset/load", "name [chunks]", f"{PREFIX}/preset/loaded name chunks",
            "Morph to a preset over N chunks (default 0 = switch at the next chunk).", "si"),
    Control(f"{PREFIX}/preset/save", "name", f"{PREFIX}/preset/saved name path",
            "Save the current live values to the user preset folder.", "s"),
    Control(f"{PREFIX}/preset/list", "", f"{PREFIX}/preset/list name ...",
            "Names of every shipped and saved preset.", ""),
)


@dataclass(frozen=True)
class StatusField:
    name: str
    type: str
    unit: str
    description: str

    @property
    def address(self) -> str:
        return f"{PREFIX}/status/{self.name}"


# Everything the run loop's status provider (bridge.run.loop.RunLoop.status) sends, in its order.
STATUS_FIELDS: tuple[StatusField, ...] = (
    StatusField("fps", "float", "fps", "Frames per second generated (measured; 0 while paused)."),
    StatusField("fps_out", "float", "fps", "Rate the output is paced at right now (the fixed "
                "output_fps, or following the generation rate)."),
    StatusField("latency_ms", "float", "ms", "Time of the last chunk, request to frames."),
    StatusField("chunk", "int", "", "Index of the last generated chunk."),
    StatusField("dropped", "int", "frames", "Output frames dropped or held so far."),
    StatusField("gpu_mem_mb", "float", "MB", "GPU memory allocated by the engine."),
    StatusField("errors", "int", "chunks", "Failed chunks so far."),
    StatusField("paused", "int", "", "1 while paused (the output holds the last frame), else 0."),
    StatusField("jitter_p99_ms", "float", "ms", "Output pacing jitter, 99th percentile over the "
                "last 1024 frames."),
)

FEEDBACK: tuple[tuple[str, str], ...] = (
    (f"{PREFIX}/<param> <value>", "echo of every applied value (clamped/canonical form); "
     "numeric params also at <address>/norm, enums also at <address>/index"),
    (f"{PREFIX}/error <message>", "every rejected message, malformed packet or unknown address"),
    (f"{PREFIX}/status/<field> <value>", "a few times per second while a run loop is attached"),
    (f"{PREFIX}/notice <message>", "run-loop notices (input fixed up, snapshot written, ...)"),
)


# --------------------------------------------------------------------------------------------

class Schema:
    """An ordered, immutable set of Params with address lookup."""

    def __init__(self, params: Iterable[Param]):
        self._params: dict[str, Param] = {}
        for p in params:
            if p.name in self._params:
                raise ValueError(f"duplicate parameter {p.name}")
            self._params[p.name] = p
        self._by_address = {p.address: p for p in self._params.values()}

    def __iter__(self) -> Iterator[Param]:
        return iter(self._params.values())

    def __len__(self) -> int:
        return len(self._params)

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __getitem__(self, name: str) -> Param:
        try:
            return self._params[name]
        except KeyError:
            raise ParamError(f"unknown parameter '{name}'{self._suggest(name)}") from None

    def get(self, name: str) -> Param | None:
        return self._params.get(name)

    @property
    def live(self) -> list[Param]:
        return [p for p in self if p.live]

    @property
    def load_time(self) -> list[Param]:
        return [p for p in self if not p.live]

    @property
    def lora_names(self) -> list[str]:
        return [p.name[5:] for p in self if p.name.startswith("lora/")]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.live if p.type != "action"}

    def resolve(self, address: str) -> tuple[Param, str]:
        """OSC address → (param, mode) with mode 'value', 'norm' or 'index'; ParamError if
        the address names nothing."""
        p = self._by_address.get(address)
        if p is not None:
            return p, "value"
        base, _, tail = address.rpartition("/")
        p = self._by_address.get(base)
        if p is not None and p.live:
            if tail == "norm" and p.numeric:
                return p, "norm"
            if tail == "index" and p.type == "enum":
                return p, "index"
        raise ParamError(f"unknown address '{address}'{self._suggest(address)}")

    def _suggest(self, key: str) -> str:
        pool = list(self._by_address) + [c.address for c in CONTROLS] if key.startswith("/") \
            else list(self._params)
        close = difflib.get_close_matches(key, pool, n=1, cutoff=0.8)
        return f" (did you mean {close[0]}?)" if close else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "prefix": PREFIX,
            "costs": COSTS,
            "params": [p.to_json() for p in self],
            "controls": [
                {"address": c.address, "args": c.args, "reply": c.reply,
                 "description": c.description} for c in CONTROLS
            ],
            "status": [
                {"address": s.address, "type": s.type, "unit": s.unit,
                 "description": s.description} for s in STATUS_FIELDS
            ],
        }

    def describe_json(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)


def build_schema(loras: Sequence[str | tuple[str, float]] = ()) -> Schema:
    """The schema of one engine session: the fixed parameters plus one `lora/<name>` scale for
    the pipeline LoRA and for each user LoRA registered at start-up ((name, default scale) or
    name with default 1.0)."""
    lora_params = [_lora_param("pipeline", 1.0)]
    for entry in loras:
        name, default = (entry, 1.0) if isinstance(entry, str) else entry
        if not _LORA_NAME_RE.match(name) or name == "pipeline":
            raise ValueError(
                f"LoRA name {name!r}: use letters, digits, '_' or '-' (not 'pipeline')"
            )
        lora_params.append(_lora_param(name, default))
    return Schema(_live_params() + lora_params + _load_time_params())


DEFAULT_SCHEMA = build_schema()


if __name__ == "__main__":  # `python -m bridge.schema [lora ...]`: the schema as JSON (stdlib only)
    import sys

    print(json.dumps(build_schema(sys.argv[1:]).to_json(), indent=2, ensure_ascii=False))
