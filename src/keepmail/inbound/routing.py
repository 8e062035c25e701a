"""Where mail for an address goes: accounts, aliases, plus-addressing, catch-all.

Order of look-up for user+tag@domain: the exact address as an account, then
as an alias, then user@domain (plus-addressing), then the domain's catch-all
alias '@domain'. Aliases may point to other aliases (up to MAX_DEPTH) and to
remote addresses, which the outbound queue forwards.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from ..store import accounts

MAX_DEPTH = 8


@dataclass
class Route:
    accounts: list[int] = field(default_factory=list)   # account ids, no duplicates
    remote: list[str] = field(default_factory=list)     # forward targets
    tag: str = ""                                       # the +tag, if any

    @property
    def empty(self) -> bool:
        return not self.accounts and not self.remote


def is_local_domain(conn: sqlite3.Connection, domain: str) -> bool:
    return accounts.get_domain(conn, domain) is not None


def resolve(conn: sqlite3.Connection, address: str) -> Route | None:
    """The route for a local address, or None if no such recipient exists."""
    address = accounts.normalize_address(address)
    route = Route()
    if _expand(conn, address, route, 0, set()):
        return route
    local, domain = accounts.split_address(address)
    if "+" in local:
        base, _, tag = local.partition("+")
        route = Route(tag=tag)
        if base and _expand(conn, f"{base}@{domain}", route, 0, set()):
            return route
    route = Route()
    if _expand(conn, f"@{domain}", route, 0, set()):
        return route
    return None


def _expand(conn: sqlite3.Connection, address: str, route: Route, depth: int,
            seen: set[str]) -> bool:
    if address in seen or depth > MAX_DEPTH:
        return False
    seen.add(address)
    row = conn.execute("SELECT id, disabled FROM accounts WHERE address = ?",
                       (address,)).fetchone()
    if row is not None:
        # A disabled account keeps its address (no one else can take it) but
        # receives nothing: the sender gets a 5.1.1 at RCPT, not a bounce.
        if not row[1] and row[0] not in route.accounts:
            route.accounts.append(row[0])
        return True
    targets = accounts.alias_targets(conn, address)
    if not targets:
        return False
    for target in targets:
        _, domain = accounts.split_address(target)
        if is_local_domain(conn, domain):
            _expand(conn, target, route, depth + 1, seen)
        elif target not in route.remote:
            route.remote.append(target)
    return True
