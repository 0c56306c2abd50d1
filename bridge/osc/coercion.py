"""OSC arguments ↔ parameter values: the TouchDesigner-friendly rules on top of Param.coerce.

Incoming (`args_to_value`):
- scalars (float/int/bool/enum) take exactly one argument; floats, ints, bools and numeric
  strings are all accepted (4.0 → int 4, 1 → True, "2" → 2, enum by name or index);
- numbers clamp to the range (the echo shows the clamped value); unparseable → ParamError;
- `str` joins several string arguments with spaces;
- lists (`refs`, `prompts`) take any number of arguments, an OSC array, or one JSON string;
  zero arguments or "" clear a `str_list`;
- `<address>/norm` takes one 0..1 number (clamped to 0..1) mapped onto the range;
  `<address>/index` takes an enum index;
- 32-bit floats are rounded to 7 significant digits so 0.1 reads back as 0.1, not 0.1000000015.

Outgoing (`echo_messages`): bools as int 0/1 (TouchDesigner's OSC In CHOP reads no T/F), enums
as their name plus the index at `/index`, numbers also normalized at `/norm`, lists as several
arguments, prompts as text, weight, text, weight ...
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

from vacelive.bridge.param_types import Param, ParamError


def _clean(arg: Any, where: str) -> Any:
    if isinstance(arg, float):
        return float(f"{arg:.7g}") if math.isfinite(arg) else arg
    if isinstance(arg, (bytes, bytearray)):
        raise ParamError(f"{where}: blob arguments are not supported")
    if isinstance(arg, tuple):  # MIDI 'm', RGBA 'r', time tags
        raise ParamError(f"{where}: unsupported argument {arg!r}")
    return arg


def flatten(args: Sequence[Any], where: str) -> list[Any]:
    """OSC arrays are flattened into the argument list; None (OSC 'N') is dropped."""
    out: list[Any] = []
    for a in args:
        if isinstance(a, list):
            out.extend(flatten(a, where))
        elif a is not None:
            out.append(_clean(a, where))
    return out


def _json_list(args: list[Any]) -> Any:
    """One string argument holding a JSON list/object (TouchDesigner DAT style) → parsed."""
    if len(args) == 1 and isinstance(args[0], str) and args[0].lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(args[0])
        except json.JSONDecodeError:
            return None  # plain text that happens to start with a bracket
    return None


def args_to_value(p: Param, args: Sequence[Any], mode: str = "value") -> Any:
    """Canonical value for a message at p's address (mode 'value'|'norm'|'index')."""
    where = p.address if mode == "value" else f"{p.address}/{mode}"
    args = flatten(args, where)
    if mode in ("norm", "index") or p.type in ("float", "int", "bool", "enum"):
        if len(args) != 1:
            raise ParamError(f"{where}: expects one value, got {len(args)}")
        if mode == "norm":
            return p.from_normalized(args[0])
        if mode == "index" and isinstance(args[0], str) and not args[0].strip().lstrip("-").isdigit():
            raise ParamError(f"{where}: expects an index number, got {args[0]!r}")
        return _with_address(p, where, args[0])
    if p.type == "str":
        if not args:
            raise ParamError(f"{where}: expects text")
        return _with_address(p, where, args if len(args) > 1 else args[0])
    parsed = _json_list(args)
    if isinstance(parsed, dict):
        parsed = [parsed]
    return _with_address(p, where, parsed if parsed is not None else args)


def _with_address(p: Param, where: str, value: Any) -> Any:
    try:
        return p.coerce(value)
    except ParamError as exc:  # messages read "<param>: ..."; OSC users know addresses
        msg = str(exc)
        if msg.startswith(p.name + ":"):
            msg = where + msg[len(p.name):]
        raise ParamError(msg) from None


def is_trigger(args: Sequence[Any]) -> bool:
    """Should an action fire? No argument, or a truthy one. 0 / false / off is a button release
    (TouchOSC sends 1 then 0, a TouchDesigner pulse 1 then 0) and is ignored, not an error."""
    flat = [a for a in args if a is not None and not isinstance(a, list)]
    if not flat:
        return True
    a = flat[0]
    if isinstance(a, (bool, int, float)):
        return float(a) >= 0.5
    if isinstance(a, str):
        return a.strip().lower() not in ("0", "false", "off", "no", "0.0")
    return True


def value_args(p: Param, value: Any) -> list[Any]:
    """Arguments of the message that carries `value` at p.address."""
    t = p.type
    if t == "bool":
        return [1 if value else 0]
    if t == "str_list":
        return list(value)
    if t == "prompts":
        return [x for text, weight in value for x in (text, float(weight))]
    if t == "float":
        return [float(value)]
    return [value]


def echo_messages(p: Param, value: Any) -> list[tuple[str, list[Any]]]:
    """Every (address, args) that mirrors `value` to control surfaces."""
    msgs = [(p.address, value_args(p, value))]
    if p.numeric and p.min is not None:
        msgs.append((p.norm_address, [float(p.normalized(value))]))
    elif p.type == "enum":
        msgs.append((p.index_address, [p.choices.index(value)]))
    return msgs
