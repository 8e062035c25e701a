"""Per-account allowed and blocked senders (self-service), read by the inbound pipeline.

A pattern is a full address (`boss@example.com`) or a domain written
`@example.com`, which also covers its subdomains (`@example.com` matches
`news@mail.example.com`). An address entry beats a domain entry, and a
more specific domain beats a shorter one, so "block @example.com but allow
boss@example.com" does what people mean.

Lists belong to an account, or to a whole domain: a domain's list is kept
under the owner id `domain_owner(domain_id)` (a negative number, so it can
never collide with an account id) and applies to every account of the
domain that has no entry of its own for that sender.

Inbound use: `lookup(conn, account_id, sender)` gives "allow", "block" or
None. The MX should treat "allow" as a strong negative spam score (never
overriding a DMARC failure, or anyone could forge an allowed sender) and
"block" as delivery to Junk.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from . import migrations

SCHEMA = [
    """
    CREATE TABLE sender_lists (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('allow', 'block')),
        pattern TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE(account_id, pattern)
    );
    CREATE INDEX sender_lists_account ON sender_lists(account_id)
    """,
]
migrations.register("senderlists", SCHEMA)

KINDS = ("allow", "block")


class SenderListError(ValueError):
    """A pattern or kind the list refuses, worded for the user."""


@dataclass(frozen=True)
class Entry:
    id: int
    account_id: int
    kind: str
    pattern: str
    created: float


def normalize_pattern(pattern: str) -> str:
    """`user@domain` or `@domain`, lower-cased; raises SenderListError otherwise."""
    text = pattern.strip().strip("<>").lower().rstrip(".")
    local, at, domain = text.rpartition("@")
    if not text or any(ch.isspace() for ch in text):
        raise SenderListError(f"{pattern!r} is not an address or @domain")
    if not at:
        local, domain = "", text   # a bare domain: accept it as @domain
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels) or len(domain) > 253:
        raise SenderListError(f"{pattern!r}: the domain part must look like example.com")
    return f"{local}@{domain}"


def add(conn: sqlite3.Connection, account_id: int, kind: str, pattern: str) -> Entry:
    """Add or move a pattern to the allow or block list."""
    if kind not in KINDS:
        raise SenderListError(f"list must be one of {', '.join(KINDS)}")
    pattern = normalize_pattern(pattern)
    conn.execute("INSERT INTO sender_lists(account_id, kind, pattern, created) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT(account_id, pattern) DO UPDATE SET kind = excluded.kind",
                 (account_id, kind, pattern, time.time()))
    row = conn.execute("SELECT * FROM sender_lists WHERE account_id = ? AND pattern = ?",
                       (account_id, pattern)).fetchone()
    return _entry(row)


def remove(conn: sqlite3.Connection, account_id: int, pattern: str) -> bool:
    cur = conn.execute("DELETE FROM sender_lists WHERE account_id = ? AND pattern = ?",
                       (account_id, pattern.strip().lower()))
    return cur.rowcount > 0


def list_for(conn: sqlite3.Connection, account_id: int) -> list[Entry]:
    return [_entry(r) for r in conn.execute(
        "SELECT * FROM sender_lists WHERE account_id = ? ORDER BY kind, pattern", (account_id,))]


def lookup(conn: sqlite3.Connection, account_id: int, sender: str) -> str | None:
    """"allow", "block" or None for a sender address (the most specific entry wins)."""
    sender = sender.strip().strip("<>").lower().rstrip(".")
    _local, at, domain = sender.rpartition("@")
    if not at or not domain:
        return None
    candidates = [sender]
    labels = domain.split(".")
    candidates += ["@" + ".".join(labels[i:]) for i in range(len(labels) - 1)]
    marks = ",".join("?" * len(candidates))
    found = {r[0]: r[1] for r in conn.execute(
        f"SELECT pattern, kind FROM sender_lists WHERE account_id = ? AND pattern IN ({marks})",
        (account_id, *candidates))}
    for candidate in candidates:   # most specific first
        if candidate in found:
            return str(found[candidate])
    return None


def domain_owner(domain_id: int) -> int:
    """The owner id under which a domain-wide list is stored."""
    return -domain_id


def lookup_for_account(conn: sqlite3.Connection, account_id: int, sender: str) -> str | None:
    """The account's own verdict for sender, else its domain's."""
    verdict = lookup(conn, account_id, sender)
    if verdict is not None:
        return verdict
    row = conn.execute("SELECT domain_id FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return lookup(conn, domain_owner(row[0]), sender) if row else None


def has_any(conn: sqlite3.Connection, account_id: int) -> bool:
    """Whether the account or its domain has any list entry at all."""
    row = conn.execute("SELECT domain_id FROM accounts WHERE id = ?", (account_id,)).fetchone()
    owners = (account_id, domain_owner(row[0])) if row else (account_id,)
    marks = ",".join("?" * len(owners))
    return conn.execute(f"SELECT 1 FROM sender_lists WHERE account_id IN ({marks}) LIMIT 1",
                        owners).fetchone() is not None


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(row["id"], row["account_id"], row["kind"], row["pattern"], row["created"])
