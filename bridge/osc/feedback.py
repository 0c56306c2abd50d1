"""Outgoing OSC: replies, errors, coalesced value echoes and periodic status.

Who hears what:
- replies and errors go to the sender and to every registered peer (configured
  `--osc-feedback host:port` targets and `/vace/hello` registrations). TouchDesigner's OSC Out
  sends from a random port it never reads, so it needs a registered peer to hear anything;
- echoes and status go to every registered peer and every recent sender (bounded LRU), so all
  surfaces stay in sync with each other, with presets and with morphs.

Echoes are coalesced per address by a feedback thread: under a 1,000 msg/s fader burst each
address is sent at most once per wake-up, and nothing queues without bound. Errors are rate
limited (a flood of bad packets cannot turn into a flood of replies or log lines).
"""
from __future__ import annotations

import logging
import numbers
import socket
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping

from pythonosc.osc_message_builder import OscMessageBuilder

from vacelive.bridge.param_types import PREFIX

log = logging.getLogger("vacelive.bridge.osc")

Addr = tuple[str, int]
StatusProvider = Callable[[], Mapping[str, Any]]

MAX_RECENT = 16
RECENT_TTL_S = 600.0


def build(address: str, args: Iterable[Any]) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, bool):
            a = int(a)
        if isinstance(a, int) and not -(2**31) <= a < 2**31:
            a = float(a)
        b.add_arg(a)
    return b.build().dgram


class RateLimit:
    """At most `per_s` events per second (token bucket); counts what it suppressed."""

    def __init__(self, per_s: float, burst: float | None = None):
        self.per_s, self.burst = per_s, burst or per_s
        self.tokens, self.last = self.burst, time.monotonic()
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_s)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            self.suppressed += 1
            return False


class Feedback:
    def __init__(
        self,
        sock: socket.socket,
        targets: Iterable[Addr] = (),
        status_provider: StatusProvider | None = None,
        status_hz: float = 4.0,
    ):
        self._sock = sock
        self._targets: list[Addr] = list(targets)
        self._peers: "OrderedDict[Addr, None]" = OrderedDict()  # /vace/hello registrations
        self._recent: "OrderedDict[Addr, float]" = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[str, list[Any]] = {}
        self.status_provider = status_provider
        self.status_period = 1.0 / status_hz if status_hz > 0 else None
        self.last_status: dict[str, Any] = {}
        self.status_listeners: list[Callable[[dict[str, Any]], None]] = []  # OSCQuery LISTEN
        self._stop = False
        self._thread: threading.Thread | None = None
        self._error_limit = RateLimit(50.0)
        self._log_limit = RateLimit(5.0, 20.0)
        self.sent = 0

    # -- who hears ----------------------------------------------------------------------------
    def note_sender(self, addr: Addr) -> None:
        with self._lock:
            self._recent.pop(addr, None)
            self._recent[addr] = time.monotonic()
            while len(self._recent) > MAX_RECENT:
                self._recent.popitem(last=False)

    def add_peer(self, addr: Addr) -> None:
        with self._lock:
            self._peers.pop(addr, None)
            self._peers[addr] = None
            while len(self._peers) > MAX_RECENT:
                self._peers.popitem(last=False)

    def _registered(self) -> list[Addr]:  # under the lock
        return self._targets + [a for a in self._peers if a not in self._targets]

    def _everyone(self) -> list[Addr]:  # under the lock
        cutoff = time.monotonic() - RECENT_TTL_S
        for addr in [a for a, t in self._recent.items() if t < cutoff]:
            del self._recent[addr]
        dests = self._registered()
        return dests + [a for a in self._recent if a not in dests]

    # -- sending ------------------------------------------------------------------------------
    def _send(self, dgram: bytes, dests: Iterable[Addr]) -> None:
        for dest in dests:
            try:
                self._sock.sendto(dgram, dest)
                self.sent += 1
            except OSError as exc:  # unreachable peer, closed socket: never fatal
                if self._log_limit.allow():
                    log.warning("OSC send to %s:%s failed: %s", dest[0], dest[1], exc)

    def reply(self, sender: Addr | None, address: str, args: Iterable[Any]) -> None:
        try:
            dgram = build(address, args)
        except Exception as exc:  # e.g. a reply too large for one datagram
            log.warning("cannot build reply %s: %s", address, exc)
            return
        with self._lock:
            dests = self._registered()
        if sender is not None and sender not in dests:
            dests.append(sender)
        self._send(dgram, dests)

    def error(self, sender: Addr | None, message: str) -> None:
        if self._log_limit.allow():
            who = f"{sender[0]}:{sender[1]}" if sender else "-"
            log.warning("OSC from %s rejected: %s", who, message)
        if self._error_limit.allow():
            self.reply(sender, f"{PREFIX}/error", [message])

    def broadcast(self, address: str, args: Iterable[Any]) -> None:
        with self._lock:
            dests = self._everyone()
        if dests:
            self._send(build(address, args), dests)

    def echo(self, messages: Iterable[tuple[str, list[Any]]]) -> None:
        """Queue value echoes; the feedback thread sends the latest per address."""
        with self._lock:
            for address, args in messages:
                self._pending[address] = args
            self._wake.notify()

    # -- thread -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="osc-feedback", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        next_status = time.monotonic()
        while True:
            with self._lock:
                timeout = None
                if self.status_period is not None:
                    timeout = max(0.0, next_status - time.monotonic())
                if not self._pending and not self._stop:
                    self._wake.wait(timeout)
                if self._stop:
                    return
                pending, self._pending = self._pending, {}
                dests = self._everyone()
            try:
                if pending and dests:
                    for address, args in pending.items():
                        self._send(build(address, args), dests)
                if self.status_period is not None and time.monotonic() >= next_status:
                    next_status = time.monotonic() + self.status_period
                    self._send_status(dests)
            except Exception:  # keep feeding back whatever happens
                if self._log_limit.allow():
                    log.exception("OSC feedback failed")

    def _send_status(self, dests: list[Addr]) -> None:
        if self.status_provider is None:
            return
        try:
            status = dict(self.status_provider())
        except Exception as exc:
            if self._log_limit.allow():
                log.warning("status provider failed: %s", exc)
            return
        self.last_status = status
        for fn in list(self.status_listeners):
            try:
                fn(status)
            except Exception as exc:
                if self._log_limit.allow():
                    log.warning("status listener failed: %s", exc)
        if not dests:
            return
        for key, value in status.items():
            if isinstance(value, bool):
                value = int(value)
            elif isinstance(value, numbers.Integral):  # numpy scalars too
                value = int(value)
            elif isinstance(value, numbers.Real):
                value = float(value)
            if isinstance(value, (int, float, str)) and str(key).isidentifier():
                self._send(build(f"{PREFIX}/status/{key}", [value]), dests)
