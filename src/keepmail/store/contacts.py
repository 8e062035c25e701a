"""Addresses each account has written to: its correspondents.

A reply from someone a user wrote to is the strongest sign that mail is
wanted, and spammers cannot forge their way onto this list without the
user's own action (they would have to be written to first). Filled by
the submission policy, read by the inbound verdict.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from . import migrations

SCHEMA = [
    """
    CREATE TABLE contacts (
        account_id INTEGER NOT NULL,
        address TEXT NOT NULL,
        first_sent REAL NOT NULL,
        last_sent REAL NOT NULL,
        messages INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (account_id, address)
    ) WITHOUT ROWID
    """,
]
migrations.register("contacts", SCHEMA)


def record(conn: sqlite3.Connection, account_id: int, addresses: Iterable[str],
           now: float | None = None) -> None:
    now = time.time() if now is None else now
    conn.executemany(
        "INSERT INTO contacts(account_id, address, first_sent, last_sent) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(account_id, address) DO UPDATE SET last_sent = excluded.last_sent,"
        " messages = messages + 1",
        [(account_id, a.strip().lower(), now, now) for a in set(addresses) if a.strip()])


def known(conn: sqlite3.Connection, account_id: int, address: str) -> bool:
    return conn.execute("SELECT 1 FROM contacts WHERE account_id = ? AND address = ?",
                        (account_id, address.strip().lower())).fetchone() is not None
