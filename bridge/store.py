"""Parameter store: the mailbox between control input (OSC, presets) and the run loop.

It holds the latest value of every parameter and the queued one-shot actions, nothing else:
turning a snapshot into an engine request is the run loop's job (bridge/run/request_fields.py),
preset morph math lives in bridge/morph.py.

- Latest value wins per parameter: a 1,000 msg/s fader stream costs one dict write per message
  and nothing accumulates, so the value the next chunk sees is never stale.
- One-shot actions (reset, snapshot, preset recall) sit in a separate mailbox keyed by kind: a
  repeated action before the next chunk boundary is one action (bounded by construction).
- `snapshot()` is called by the run loop once per chunk boundary. It advances a preset morph by
  one step and returns an immutable, consistent view: every value, what changed since the last
  snapshot, and the drained actions. Writers and the snapshot share one lock, so a bundle applied
  with one `apply()` lands entirely in one snapshot.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from vacelive.bridge.morph import Morph
from vacelive.bridge.param_types import ParamError, Schema, dominant_text
from vacelive.bridge.schema import DEFAULT_SCHEMA

log = logging.getLogger(__name__)

Listener = Callable[[Mapping[str, Any], Any], None]
PRESET_LOAD = "preset_load"


@dataclass(frozen=True)
class Action:
    """A one-shot request for the next chunk boundary."""

    kind: str  # an action param name ("reset", "snapshot") or "preset_load"
    args: tuple = ()
    origin: Any = None  # who asked (OSC sender address, "api", ...), for logs and replies
    payload: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Snapshot:
    """What the run loop sees for one chunk. `values` holds every live parameter."""

    index: int
    values: Mapping[str, Any]
    changed: frozenset[str]
    actions: tuple[Action, ...]
    morph: tuple[str, int, int] | None = None  # (preset, step, steps) while a morph runs

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def action(self, kind: str) -> Action | None:
        return next((a for a in self.actions if a.kind == kind), None)


class ParamStore:
    """Thread-safe latest-value store of the live parameters (see module docstring)."""

    def __init__(
        self,
        schema: Schema = DEFAULT_SCHEMA,
        load_time: Mapping[str, Any] | None = None,
        initial: Mapping[str, Any] | None = None,
    ):
        self.schema = schema
        self._lock = threading.Lock()
        self._values: dict[str, Any] = schema.defaults()
        self._load_time = {p.name: p.default for p in schema.load_time}
        for name, value in (load_time or {}).items():
            p = schema[name]
            if p.live:
                raise ParamError(f"{name} is a live parameter, not a load-time one")
            self._load_time[name] = p.coerce(value, clamp=None)  # what runs, even off-range
        if initial:
            self._values.update(self.prepare(initial, clamp=False))  # a file's value: no clamping
        self._actions: dict[str, Action] = {}
        self._pending: Morph | None = None
        self._morph: Morph | None = None
        self._last: Mapping[str, Any] = MappingProxyType(dict(self._values))
        self._index = 0
        self._listeners: list[Listener] = []
        self.writes = 0  # values written since start (benchmarks, status)

    def set_load_time(self, name: str, value: Any) -> None:
        """Record what the engine really runs with (e.g. the pipeline a relay's remote engine
        reports once it answers); live parameters are not set this way."""
        p = self.schema[name]
        if p.live:
            raise ParamError(f"{name} is a live parameter, not a load-time one")
        value = p.coerce(value, clamp=None)
        with self._lock:
            self._load_time[name] = value

    # -- reading ------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        p = self.schema[name]
        if p.type == "action":
            raise ParamError(f"{p.address} is an action; it has no value")
        with self._lock:
            return self._values[name] if p.live else self._load_time[name]

    def values(self) -> dict[str, Any]:
        """Current live values (a copy)."""
        with self._lock:
            return dict(self._values)

    def load_time_values(self) -> dict[str, Any]:
        return dict(self._load_time)

    def preset_values(self) -> dict[str, Any]:
        """The live values a preset stores."""
        with self._lock:
            return {p.name: self._values[p.name] for p in self.schema.live
                    if p.in_presets and p.type != "action"}

    # -- writing ------------------------------------------------------------------------------
    def prepare(self, changes: Mapping[str, Any], *, clamp: bool = True) -> dict[str, Any]:
        """Coerce a set of changes to canonical values without applying them; ParamError on
        the first problem. Resolves `prompt` ↔ `prompts` so both always agree."""
        out: dict[str, Any] = {}
        for name, value in changes.items():
            p = self.schema[name]
            if not p.live:
                raise ParamError(
                    f"{p.address} is a load-time parameter; set it when the engine starts "
                    f"(restart to change it)"
                )
            if p.type == "action":
                raise ParamError(f"{p.address} is an action; trigger it instead of setting it")
            out[name] = p.coerce(value, clamp=clamp)
        if "prompts" in out:  # the weighted list is the truth; prompt reads its main text
            out["prompt"] = dominant_text(out["prompts"])
        elif "prompt" in out:
            out["prompts"] = ((out["prompt"], 1.0),)
        return out

    def apply(
        self,
        changes: Mapping[str, Any],
        actions: Iterable[Action] = (),
        origin: Any = None,
    ) -> dict[str, Any]:
        """Apply changes and queue actions atomically (all land in the same snapshot). Returns
        the canonical values applied. Nothing is applied if any change is invalid."""
        applied = self.prepare(changes)
        actions = list(actions)
        for a in actions:
            self._check_action(a)
        with self._lock:
            self._values.update(applied)
            for morph in (self._pending, self._morph):
                if morph is not None:  # the performer's hand beats a running preset morph
                    for name in applied:
                        morph.target.pop(name, None)
            for a in actions:
                self._queue(a)
            self.writes += len(applied)
        self._notify(applied, origin)
        return applied

    def set(self, name: str, value: Any, origin: Any = None) -> Any:
        return self.apply({name: value}, origin=origin)[name]

    def trigger(self, kind: str, *args: Any, origin: Any = None) -> None:
        self.apply({}, [Action(kind, tuple(args), origin)], origin)

    def preset_action(self, name: str, values: Mapping[str, Any], chunks: int = 0,
                      origin: Any = None) -> Action:
        """The action that morphs to `values` from the next snapshot on, over `chunks`
        snapshots (0 or 1: a switch at the next chunk); queue it with apply(). ParamError if a
        value is invalid (out-of-range values are refused, not clamped)."""
        target = self.prepare(values, clamp=False)
        return Action(PRESET_LOAD, (name, max(1, int(chunks))), origin, payload=target)

    def morph_to(self, name: str, values: Mapping[str, Any], chunks: int = 0,
                 origin: Any = None) -> None:
        self.apply({}, [self.preset_action(name, values, chunks, origin)], origin)

    def _check_action(self, a: Action) -> None:
        if a.kind == PRESET_LOAD:
            return
        p = self.schema.get(a.kind)
        if p is None or p.type != "action":
            raise ParamError(f"unknown action '{a.kind}'")

    def _queue(self, a: Action) -> None:  # under the lock
        self._actions.pop(a.kind, None)  # re-insert: keeps arrival order of the latest
        self._actions[a.kind] = a
        if a.kind == PRESET_LOAD:
            name, steps = a.args
            self._pending = Morph(name=name, steps=steps, target=dict(a.payload or {}))

    # -- the chunk boundary -------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Consistent view for the next chunk; advances a preset morph by one step."""
        with self._lock:
            if self._pending is not None:
                self._morph, self._pending = self._pending, None
                self._morph.start = dict(self._values)
            moved: dict[str, Any] = {}
            progress = None
            if self._morph is not None:
                moved = self._morph.advance(self.schema, self._values)
                self._values.update(moved)
                progress = (self._morph.name, self._morph.step, self._morph.steps)
                if self._morph.done:
                    self._morph = None
            values = MappingProxyType(dict(self._values))
            last = self._last
            changed = frozenset(k for k, v in values.items() if last.get(k) != v)
            actions = tuple(self._actions.values())
            self._actions.clear()
            self._index += 1
            self._last = values
            snap = Snapshot(self._index, values, changed, actions, progress)
        self._notify(moved, "morph")
        return snap

    # -- listeners (OSC echo) -----------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        """fn(changes, origin) after every applied change (OSC writes, morph steps), called
        outside the lock on the writer's thread; exceptions are logged, never raised."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify(self, changes: Mapping[str, Any], origin: Any) -> None:
        if not changes:
            return
        for fn in list(self._listeners):
            try:
                fn(changes, origin)
            except Exception:  # a broken listener must not break control input
                log.exception("parameter listener failed")
