"""Login throttling for the console: progressive delay per IP and per account.

The interface (`before_attempt`, `failure`, `success`) is the one
keepmail.abuse.authguard.AuthGuard offers, so the abuse guard can replace this
class without touching the login code (wiring.py picks it when present).

Each key (an IP, an account) counts failures; past a free allowance every
further failure doubles the time the key must wait before the next try, up
to a ceiling. Counters fade after a quiet hour. A success clears the
account's counter but not the IP's, so one valid account cannot be used to
wash an IP that is guessing at others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Throttle(Protocol):
    async def before_attempt(self, ip: str, username: str) -> float | None:
        """None: check the password now; a number: refuse, retry after that many seconds."""

    def failure(self, ip: str, username: str) -> float:
        """Count a failure; returns a short pause the caller may apply before answering."""

    def success(self, ip: str, username: str) -> None:
        """A correct login."""


@dataclass
class _Counter:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class LoginThrottle:
    """In-memory progressive delay; see the module docstring."""

    def __init__(self, *, free_per_account: int = 3, free_per_ip: int = 10,
                 base_delay: float = 2.0, max_delay: float = 900.0, forget_after: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.free = {"ip": free_per_ip, "account": free_per_account}
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.clock = clock
        self.max_keys = max_keys
        self._counters: dict[tuple[str, str], _Counter] = {}

    async def before_attempt(self, ip: str, username: str) -> float | None:
        now = self.clock()
        counters = [self._counters.get(k) for k in self._keys(ip, username)]
        wait = max((c.blocked_until - now for c in counters if c is not None), default=0.0)
        return math.ceil(wait) if wait > 0 else None

    def failure(self, ip: str, username: str) -> float:
        now = self.clock()
        for key in self._keys(ip, username):
            counter = self._get(key, now)
            counter.failures += 1
            counter.last = now
            over = counter.failures - self.free[key[0]]
            if over > 0:
                delay = min(self.base_delay * 2 ** (over - 1), self.max_delay)
                counter.blocked_until = max(counter.blocked_until, now + delay)
        self._prune(now)
        return 0.5  # a small, constant tarpit: it does not reveal which counter tripped

    def success(self, ip: str, username: str) -> None:
        self._counters.pop(("account", _norm(username)), None)

    def blocked(self) -> list[tuple[str, str, float]]:
        """(kind, key, seconds left) of the keys refusing tries now (for the console)."""
        now = self.clock()
        return [(kind, key, c.blocked_until - now) for (kind, key), c in self._counters.items()
                if c.blocked_until > now]

    def _keys(self, ip: str, username: str) -> list[tuple[str, str]]:
        keys = [("ip", ip)]
        if username.strip():
            keys.append(("account", _norm(username)))
        return keys

    def _get(self, key: tuple[str, str], now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is None or (now - counter.last > self.forget_after
                               and counter.blocked_until <= now):
            counter = self._counters[key] = _Counter()
        return counter

    def _prune(self, now: float) -> None:
        if len(self._counters) <= self.max_keys:
            return
        stale = [k for k, c in self._counters.items()
                 if now - c.last > self.forget_after and c.blocked_until <= now]
        for key in stale:
            del self._counters[key]


def _norm(username: str) -> str:
    return username.strip().lower()
