"""Two-way sync between TouchDesigner parameters and the engine's OSC namespace (stdlib only).

Outgoing: `encode(param, read)` builds the one OSC message that carries a schema parameter's
current value, reading its TouchDesigner parameter(s) through `read(td_name)`.
Incoming: `classify(address, args)` says what a feedback message is; `decode(param, args)`
turns a value echo into {td_name: value} writes.

Two guards keep the sync free of loops and jumps:

- `FeedbackGuard`: every value written into a parameter *from feedback* is remembered; when
  TouchDesigner then reports that parameter as changed (Parameter Execute DAT, immediately or
  at the end of the frame), the change equal to the remembered value is not sent back. What is
  remembered is exactly what the engine last said it has, so suppressing it never loses a move.
- `PendingEchoes`: while a fader is being dragged, the echoes of its older values are still on
  the way back; writing them would make the slider jump backwards. Values sent in the last
  `hold_s` seconds are remembered per parameter; an echo of an older one is dropped, an echo of
  the newest is not written either (the parameter has it, or an even newer move whose callback
  has not run yet), and a foreign value (another surface, a preset morph) is taken only once
  nothing of ours is in flight.
"""

import math
from typing import Any, Callable, Iterable, Sequence

PREFIX = "/vace"


def same(a: Any, b: Any) -> bool:
    """Equality that forgives float32 round trips (OSC floats are 32-bit)."""
    if isinstance(a, bool) or isinstance(b, bool):
        both_int = isinstance(a, (bool, int)) and isinstance(b, (bool, int))
        return bool(a) == bool(b) if both_int else a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# --------------------------------------------------------------------------------------------
# parameter value <-> OSC arguments

def value_of(param: dict, specs: Sequence[Any], read: Callable[[str], Any]) -> Any:
    """The schema value of `param` from its TouchDesigner parameter(s) (canonical tuples for
    lists and prompts, like the engine's echo)."""
    t = param["type"]
    if t == "str_list":
        items = (str(read(s.td_name) or "").strip() for s in specs if s.role == "list_item")
        return tuple(i for i in items if i)
    if t == "prompts":
        texts = {s.slot: str(read(s.td_name) or "") for s in specs if s.role == "prompt_text"}
        weights = {s.slot: float(read(s.td_name)) for s in specs if s.role == "prompt_weight"}
        pairs = tuple((texts[i], max(0.0, weights.get(i, 1.0)))
                      for i in sorted(texts) if texts[i].strip())
        return pairs or (("", 1.0),)  # the schema default: an empty prompt
    value = read(specs[0].td_name)
    if t == "float":
        return float(value)
    if t == "int":
        return int(round(float(value)))
    if t == "bool":
        return bool(value)
    return str(value)


def args_of(param: dict, value: Any) -> list[Any]:
    """OSC arguments of a value (the engine's coercion rules, docs/osc.md)."""
    t = param["type"]
    if t == "bool":
        return [1 if value else 0]  # TouchDesigner and the engine both read 0/1
    if t == "str_list":
        return list(value)
    if t == "prompts":
        return [x for text, weight in value for x in (text, float(weight))]
    if t == "action":
        return [1]
    return [value]


def encode(param: dict, specs: Sequence[Any], read: Callable[[str], Any]) -> tuple[str, list, Any]:
    """(address, args, value) of the message carrying `param`'s current value."""
    if param["type"] == "action":
        return param["address"], [1], None
    value = value_of(param, specs, read)
    return param["address"], args_of(param, value), value


def decode(param: dict, specs: Sequence[Any], args: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """(canonical value, {td_name: value}) of an echo at `param`'s address. Raises ValueError
    for arguments that do not fit (a newer engine, a foreign sender)."""
    t = param["type"]
    args = list(args)
    if t == "prompts":
        pairs = []
        i = 0
        while i < len(args):
            text = str(args[i])
            weight = 1.0
            if i + 1 < len(args) and isinstance(args[i + 1], (int, float)) \
                    and not isinstance(args[i + 1], bool):
                weight = float(args[i + 1])
                i += 1
            pairs.append((text, weight))
            i += 1
        writes: dict[str, Any] = {}
        for s in specs:
            text, weight = pairs[s.slot] if s.slot < len(pairs) else ("", 1.0)
            writes[s.td_name] = text if s.role == "prompt_text" else weight
        return tuple(pairs), writes
    if t == "str_list":
        items = [str(a) for a in args]
        writes = {s.td_name: items[s.slot] if s.slot < len(items) else "" for s in specs}
        return tuple(items), writes
    if len(args) != 1:
        raise ValueError(f"{param['address']}: expected one value, got {len(args)}")
    a = args[0]
    if t == "float":
        value: Any = float(a)
    elif t == "int":
        value = int(round(float(a)))
    elif t == "bool":
        value = bool(float(a) >= 0.5) if not isinstance(a, str) else a.lower() in ("1", "true")
    elif t == "enum":
        value = str(a)
        if value not in param["choices"]:
            raise ValueError(f"{param['address']}: unknown choice {value!r}")
    else:
        value = str(a)
    return value, {specs[0].td_name: value}


# --------------------------------------------------------------------------------------------
# what a feedback message is

def classify(address: str, args: Sequence[Any], known: Iterable[str]) -> tuple:
    """One of ('param', name), ('status', field, value), ('error', text), ('notice', text),
    ('preset_list', names), ('preset_loaded', name, chunks), ('preset_saved', name, path),
    ('describe', json_text), ('derived',) for /norm and /index twins, ('unknown', name),
    ('ignore',) for anything outside /vace/."""
    if not address.startswith(PREFIX + "/"):
        return ("ignore",)
    rest = address[len(PREFIX) + 1:]
    known = known if isinstance(known, (set, frozenset, dict)) else set(known)
    if rest in known:
        return ("param", rest)
    if rest.startswith("status/") and args:
        return ("status", rest[7:], args[0])
    if rest in ("error", "notice"):
        return (rest, " ".join(str(a) for a in args))
    if rest == "preset/list":
        return ("preset_list", [str(a) for a in args])
    if rest == "preset/loaded":
        return ("preset_loaded", str(args[0]) if args else "", args[1] if len(args) > 1 else 0)
    if rest == "preset/saved":
        return ("preset_saved", str(args[0]) if args else "", str(args[1]) if len(args) > 1 else "")
    if rest == "describe":
        return ("describe", str(args[0]) if args else "")
    head, _, name = rest.partition("/")
    if head in ("norm", "index") and name in known:  # /vace/norm/<name>, /vace/index/<name>
        return ("derived",)
    base, _, tail = rest.rpartition("/")
    if tail in ("norm", "index") and base in known:  # the older <address>/norm form
        return ("derived",)
    return ("unknown", rest)


def error_address(message: str) -> str | None:
    """The address an engine error is about ("/vace/steps: ..." -> "/vace/steps")."""
    head = message.split(":", 1)[0].strip()
    return head if head.startswith(PREFIX + "/") and " " not in head else None


# --------------------------------------------------------------------------------------------
# the two guards

class FeedbackGuard:
    """Remembers values written from feedback so their change callbacks are not sent back."""

    def __init__(self) -> None:
        self._written: dict[str, Any] = {}

    def mark(self, td_name: str, value: Any) -> None:
        self._written[td_name] = value

    def is_echo(self, td_name: str, value: Any) -> bool:
        """True if `value` is what feedback last wrote (consumed: the next equal change is the
        performer's). A different value forgets the mark: the performer moved on."""
        if td_name not in self._written:
            return False
        if same(self._written.pop(td_name), value):
            return True
        return False


class PendingEchoes:
    """Values sent recently per parameter, to tell the echoes of our own moves from news."""

    OURS, STALE, FOREIGN = "ours", "stale", "foreign"

    def __init__(self, hold_s: float = 0.5, max_items: int = 64):
        self.hold_s, self.max_items = hold_s, max_items
        self._sent: dict[str, list[tuple[Any, float]]] = {}

    def sent(self, name: str, value: Any, now: float) -> None:
        entries = self._sent.setdefault(name, [])
        entries.append((value, now))
        del entries[:-self.max_items]

    def classify(self, name: str, value: Any, now: float) -> str:
        """OURS: the echo of our newest value (nothing to write: the parameter has it, or a
        newer move whose callback is still pending); STALE: an older value of ours (writing it
        would jump back); FOREIGN: someone else's value, to be shown."""
        entries = [e for e in self._sent.get(name, ()) if now - e[1] < self.hold_s]
        if not entries:
            self._sent.pop(name, None)
            return self.FOREIGN
        for i in range(len(entries) - 1, -1, -1):
            if same(entries[i][0], value):
                if i == len(entries) - 1:
                    self._sent.pop(name, None)
                    return self.OURS
                self._sent[name] = entries[i + 1:]
                return self.STALE
        self._sent[name] = entries
        return self.STALE  # someone else's value while ours is in flight: ours lands last
