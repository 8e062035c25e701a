"""Shared plumbing for the abuse guards: clock, optional persistence, recorder, networks.

The guards keep their working state in memory (they sit on the hot path of
every login and submission) and write it behind to the store: a write is
queued to the store's group-commit writer and not awaited, so a login never
waits for an fsync, yet a restart reloads an attacker's throttle. Without a
store (simulations, unit tests) the same classes run purely in memory.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ..store import Store

T = TypeVar("T")
Clock = Callable[[], float]
log = logging.getLogger("keepmail.abuse")


class RecorderLike(Protocol):
    def new_trace(self, kind: str, parent: str = "", **summary: Any) -> str: ...
    def event(self, trace_id: str, kind: str, **data: Any) -> None: ...
    def update(self, trace_id: str, **summary: Any) -> None: ...


class NullRecorder:
    """Stands in for the flight recorder in simulations; keeps events for inspection."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def new_trace(self, kind: str, parent: str = "", **summary: Any) -> str:
        return f"t{len(self.events)}"

    def event(self, trace_id: str, kind: str, **data: Any) -> None:
        self.events.append((trace_id, kind, data))

    def update(self, trace_id: str, **summary: Any) -> None:
        return None


class Persistence:
    """Write-behind access to the store, or nothing when there is no store."""

    def __init__(self, store: Store | None) -> None:
        self.store = store

    def write(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        if self.store is None:
            return
        future = self.store.db.submit(fn)
        future.add_done_callback(_log_failure)

    def write_now(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """A write the caller needs done (operator actions), waited for."""
        return default if self.store is None else self.store.write_sync(fn)

    def read(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        return default if self.store is None else self.store.read_now(fn)


def _log_failure(future: Any) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("abuse state not saved: %s", exc)


def network_of(ip: str) -> str:
    """The network an address belongs to for 'same place' purposes: /24 or /48.

    Home and mobile connections change addresses within their provider's block,
    so a user seen at 198.51.100.7 yesterday is at home at 198.51.100.9 today.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def wall_clock() -> float:
    return time.time()


def normalize_user(username: str) -> str:
    return username.strip().lower()
