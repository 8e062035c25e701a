"""Greylisting state: (client network, sender, recipient) triplets and passed networks.

A triplet first seen is refused temporarily; a retry after `delay` seconds
and within `window` passes, and its network is then remembered as a sender
that retries (real servers do, most spam engines don't) so later mail from it
is not delayed again.
"""

from __future__ import annotations

import sqlite3
import time

from . import migrations

SCHEMA = [
    """
    CREATE TABLE greylist (
        network TEXT NOT NULL,
        sender TEXT NOT NULL,
        rcpt TEXT NOT NULL,
        first_seen REAL NOT NULL,
        passed REAL,
        PRIMARY KEY (network, sender, rcpt)
    );
    CREATE TABLE greylist_passed (
        network TEXT PRIMARY KEY,
        last_pass REAL NOT NULL
    )
    """,
]
migrations.register("greylist", SCHEMA)


def check(conn: sqlite3.Connection, network: str, sender: str, rcpt: str, *, delay: float,
          window: float, remember: float, now: float | None = None) -> tuple[bool, float]:
    """Whether this attempt passes; if not, seconds until a retry would."""
    now = time.time() if now is None else now
    known = conn.execute("SELECT last_pass FROM greylist_passed WHERE network = ?",
                         (network,)).fetchone()
    if known is not None and now - known[0] < remember:
        return True, 0.0
    row = conn.execute("SELECT first_seen FROM greylist WHERE network = ? AND sender = ?"
                       " AND rcpt = ?", (network, sender, rcpt)).fetchone()
    if row is None or now - row[0] > window:
        conn.execute("INSERT OR REPLACE INTO greylist(network, sender, rcpt, first_seen)"
                     " VALUES (?, ?, ?, ?)", (network, sender, rcpt, now))
        return False, delay
    waited = now - row[0]
    if waited < delay:
        return False, delay - waited
    conn.execute("UPDATE greylist SET passed = ? WHERE network = ? AND sender = ? AND rcpt = ?",
                 (now, network, sender, rcpt))
    remember_network(conn, network, now)
    return True, 0.0


def remember_network(conn: sqlite3.Connection, network: str, now: float | None = None) -> None:
    conn.execute("INSERT OR REPLACE INTO greylist_passed(network, last_pass) VALUES (?, ?)",
                 (network, time.time() if now is None else now))


def expire(conn: sqlite3.Connection, window: float, remember: float,
           now: float | None = None) -> None:
    now = time.time() if now is None else now
    conn.execute("DELETE FROM greylist WHERE first_seen < ? AND passed IS NULL", (now - window,))
    conn.execute("DELETE FROM greylist_passed WHERE last_pass < ?", (now - remember,))
