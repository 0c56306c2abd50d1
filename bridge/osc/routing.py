"""One OSC routing table: address → handler, matched with OSC 1.0 address patterns.

Pattern syntax, as the OSC 1.0 specification defines it
(https://opensoundcontrol.stanford.edu/spec-1_0.html#osc-message-dispatching-and-pattern-matching):
a pattern matches an address with the same number of '/'-separated parts when each part matches;
within a part `?` is any one character, `*` any run of characters, `[abc]` / `[a-z]` one character
of the set (`!` first negates it, `-` last is literal), `{foo,bar}` one of the strings.

A literal address is one dict lookup. Routes added with `patterns=False` (queries, preset commands,
load-time parameters) answer only to their literal address, so `/vace/*` never triggers them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

from vacelive.bridge.param_types import ParamError

PATTERN_CHARS = frozenset("*?[]{}")
Handler = Callable[..., None]


@dataclass(frozen=True)
class Route:
    address: str
    handler: Handler
    patterns: bool = True  # reachable through an address pattern


def is_pattern(address: str) -> bool:
    return not PATTERN_CHARS.isdisjoint(address)


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of an OSC 1.0 address pattern; ParamError if it is malformed."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ParamError(f"address pattern '{pattern[:80]}': '[' without ']'")
            out.append(_char_class(pattern, pattern[i + 1:end]))
            i = end
        elif c == "{":
            end = pattern.find("}", i + 1)
            if end < 0:
                raise ParamError(f"address pattern '{pattern[:80]}': '{{' without '}}'")
            words = pattern[i + 1:end].split(",")
            if any(set(w) & (PATTERN_CHARS | {"/"}) for w in words):
                raise ParamError(f"address pattern '{pattern[:80]}': {{...}} holds plain strings")
            out.append("(?:" + "|".join(re.escape(w) for w in words) + ")")
            i = end
        elif c in "]}":
            raise ParamError(f"address pattern '{pattern[:80]}': '{c}' without its opening")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _char_class(pattern: str, body: str) -> str:
    if "/" in body:
        raise ParamError(f"address pattern '{pattern[:80]}': [...] cannot hold '/'")
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    if not body:
        raise ParamError(f"address pattern '{pattern[:80]}': empty [...]")
    parts, j = [], 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            lo, hi = body[j], body[j + 2]
            if lo > hi:
                raise ParamError(f"address pattern '{pattern[:80]}': range {lo}-{hi} is reversed")
            parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
            j += 3
        else:  # also a '-' at the end: a literal minus
            parts.append(re.escape(body[j]))
            j += 1
    return f"[^/{''.join(parts)}]" if negate else f"[{''.join(parts)}]"


class RoutingTable:
    """Ordered routes; `match()` gives the routes an incoming address (or pattern) reaches."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def add(self, address: str, handler: Handler, *, patterns: bool = True) -> None:
        if is_pattern(address):
            raise ValueError(f"route address {address!r} holds OSC pattern characters")
        if address in self._routes:
            raise ValueError(f"route {address} is defined twice")
        self._routes[address] = Route(address, handler, patterns)

    def __contains__(self, address: object) -> bool:
        return address in self._routes

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def addresses(self) -> list[str]:
        return list(self._routes)

    def match(self, address: str) -> list[Route]:
        if not is_pattern(address):
            route = self._routes.get(address)
            return [route] if route is not None else []
        rx = compile_pattern(address)
        return [r for r in self._routes.values() if r.patterns and rx.fullmatch(r.address)]
