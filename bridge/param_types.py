"""The parameter type system: what a parameter is (`Param`), how a value is coerced and
checked, what a change costs, and `Schema`, an ordered set of parameters with OSC address lookup.
The catalogue of vacelive's own parameters is bridge/schema.py.

`Param.coerce()` turns one Python value into the canonical stored value (immutable: tuples, not
lists) or raises ParamError with a message meant for the performer. OSC-specific argument shapes
(multi-argument lists, `/norm`, `/index`) are handled in bridge/osc/coercion.py on top of it.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
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
    # Pipelines that have this parameter (engine.pipelines recipe names); () = every pipeline.
    # On another pipeline the OSC server refuses it with a notice naming the ones that have it.
    pipelines: tuple[str, ...] = ()

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
    def coerce(self, value: Any, *, clamp: bool | None = True) -> Any:
        """Canonical value for `value`, or ParamError. Numbers outside the range are clamped
        (clamp=True, the OSC rule), rejected (clamp=False, the preset-file rule) or kept
        (clamp=None: a fact the engine reports, such as the size it really runs at)."""
        try:
            return _COERCERS[self.type](self, value, clamp)
        except ParamError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:  # anything odd: a clean message
            raise ParamError(f"{self.name}: cannot use {_show(value)} ({exc})") from None

    @property
    def norm_address(self) -> str:
        """The 0..1 form of a numeric parameter: /vace/norm/<name>, a leaf of its own (the OSC
        address space and OSCQuery make every method a leaf, so it cannot live under the
        parameter's address; the older <address>/norm is still accepted from senders)."""
        return f"{PREFIX}/norm/{self.name}"

    @property
    def index_address(self) -> str:
        """The by-index form of an enum: /vace/index/<name> (older <address>/index accepted)."""
        return f"{PREFIX}/index/{self.name}"

    def normalized(self, value: Any) -> float:
        """Value → 0..1 within the range (numeric params)."""
        lo, hi = self.min, self.max
        return 0.0 if hi == lo else (float(value) - lo) / (hi - lo)

    def from_normalized(self, x: Any) -> Any:
        """0..1 → value in the range; x itself is clamped to 0..1."""
        if not self.numeric:
            raise ParamError(f"{self.norm_address}: {self.name} is not numeric")
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
            d["norm_address"] = self.norm_address
        if self.live and self.type == "enum":
            d["index_address"] = self.index_address
        if self.live and self.type != "action":
            d["morph"] = self.morph
            d["in_presets"] = self.in_presets
        if self.alias_of:
            d["alias_of"] = self.alias_of
        if self.pipelines:
            d["pipelines"] = list(self.pipelines)
        return d

    def available_on(self, pipeline: str | None) -> bool:
        """Whether the pipeline `pipeline` has this parameter (None: unknown, so yes)."""
        return not self.pipelines or pipeline is None or pipeline in self.pipelines

    def unavailable_message(self, pipeline: str) -> str:
        """The notice sent when this parameter is set on a pipeline that does not have it."""
        return (f"{self.address} only applies to the {' / '.join(self.pipelines)} pipeline"
                f"{'s' if len(self.pipelines) > 1 else ''}; this engine runs {pipeline!r}, so the "
                "value is not used")


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


def _in_range(p: Param, x: float, clamp: bool | None) -> float:
    if clamp is not None and p.min is not None and not (p.min <= x <= p.max):
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



@dataclass(frozen=True)
class Control:
    address: str
    args: str  # human signature
    reply: str
    description: str
    osc_type: str = ""

@dataclass(frozen=True)
class StatusField:
    name: str
    type: str
    unit: str
    description: str

    @property
    def address(self) -> str:
        return f"{PREFIX}/status/{self.name}"

# --------------------------------------------------------------------------------------------

class Schema:
    """An ordered, immutable set of Params with address lookup."""

    def __init__(self, params: Iterable[Param], controls: Sequence[Control] = (),
                 status: Sequence[StatusField] = ()):
        self.controls = tuple(controls)  # non-parameter addresses (docs, describe, OSCQuery)
        self.status = tuple(status)  # what the run loop reports under /vace/status
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
        for mode in ("norm", "index"):
            head = f"{PREFIX}/{mode}/"
            if address.startswith(head):
                p = self._params.get(address[len(head):])
                if p is not None and p.live and (p.numeric if mode == "norm" else p.type == "enum"):
                    return p, mode
        base, _, tail = address.rpartition("/")  # the older <address>/norm, <address>/index
        p = self._by_address.get(base)
        if p is not None and p.live:
            if tail == "norm" and p.numeric:
                return p, "norm"
            if tail == "index" and p.type == "enum":
                return p, "index"
        raise ParamError(f"unknown address '{address}'{self._suggest(address)}")

    def _suggest(self, key: str) -> str:
        pool = list(self._by_address) + [c.address for c in self.controls] if key.startswith("/") \
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
                 "description": c.description} for c in self.controls
            ],
            "status": [
                {"address": s.address, "type": s.type, "unit": s.unit,
                 "description": s.description} for s in self.status
            ],
        }

    def describe_json(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)
