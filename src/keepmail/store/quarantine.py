"""Quarantined messages: kept encrypted like other mail, with their verdict.

A quarantined message is neither delivered nor refused: the recipients (and
the admin) can look at it and release it into the Inbox — a release is also a
"this is ham" training signal — or delete it. Entries expire after a
retention period; nothing is silently dropped before that.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from . import blobs, migrations
from .mail import record_training

SCHEMA = [
    """
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        blob_id INTEGER NOT NULL REFERENCES blobs(id),
        size INTEGER NOT NULL,
        trace_id TEXT NOT NULL DEFAULT '',
        sender TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        message_id TEXT NOT NULL DEFAULT '',
        client_ip TEXT NOT NULL DEFAULT '',
        account_ids TEXT NOT NULL,
        verdict TEXT NOT NULL DEFAULT '',
        reasons TEXT NOT NULL DEFAULT '[]',
        created REAL NOT NULL,
        released REAL,
        released_by TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX quarantine_created ON quarantine(created)
    """,
    # 2: deleting any blob checks this table's foreign key (see core migration 3).
    """
    CREATE INDEX IF NOT EXISTS quarantine_blob ON quarantine(blob_id)
    """,
]
migrations.register("quarantine", SCHEMA)


@dataclass(frozen=True)
class Entry:
    id: int
    blob_id: int
    size: int
    trace_id: str
    sender: str
    subject: str
    message_id: str
    client_ip: str
    account_ids: list[int]
    verdict: str
    reasons: list[dict[str, object]]
    created: float
    released: float | None
    released_by: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        return cls(row["id"], row["blob_id"], row["size"], row["trace_id"], row["sender"],
                   row["subject"], row["message_id"], row["client_ip"],
                   json.loads(row["account_ids"]), row["verdict"], json.loads(row["reasons"]),
                   row["created"], row["released"], row["released_by"])


def add(conn: sqlite3.Connection, blob_id: int, size: int, *, account_ids: list[int],
        trace_id: str = "", sender: str = "", subject: str = "", message_id: str = "",
        client_ip: str = "", verdict: str = "", reasons: list[dict[str, object]] | None = None,
        ) -> int:
    """Insert an entry; the blob must already hold a reference for it."""
    cur = conn.execute(
        "INSERT INTO quarantine(blob_id, size, trace_id, sender, subject, message_id, client_ip,"
        " account_ids, verdict, reasons, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (blob_id, size, trace_id, sender, subject[:500], message_id, client_ip,
         json.dumps(account_ids), verdict, json.dumps(reasons or []), time.time()))
    return int(cur.lastrowid or 0)


def get(conn: sqlite3.Connection, entry_id: int) -> Entry | None:
    row = conn.execute("SELECT * FROM quarantine WHERE id = ?", (entry_id,)).fetchone()
    return Entry.from_row(row) if row else None


def list_entries(conn: sqlite3.Connection, account_id: int | None = None,
                 include_released: bool = False, limit: int = 200) -> list[Entry]:
    rows = conn.execute("SELECT * FROM quarantine" +
                        ("" if include_released else " WHERE released IS NULL") +
                        " ORDER BY created DESC").fetchall()
    entries = [Entry.from_row(r) for r in rows]
    if account_id is not None:
        entries = [e for e in entries if account_id in e.account_ids]
    return entries[:limit]


def mark_released(conn: sqlite3.Connection, entry: Entry, by: str,
                  accounts: list[int] | None = None) -> None:
    """Note a release for some recipients (all by default), with a ham training signal.

    The entry stays held for the others until they release it too; the blob
    reference goes when nobody is left.
    """
    released = entry.account_ids if accounts is None else accounts
    remaining = [a for a in entry.account_ids if a not in released]
    for account_id in released:
        record_training(conn, account_id, entry.blob_id, False, "quarantine-release",
                        entry.message_id)
    if remaining:
        conn.execute("UPDATE quarantine SET account_ids = ? WHERE id = ?",
                     (json.dumps(remaining), entry.id))
        return
    conn.execute("UPDATE quarantine SET released = ?, released_by = ? WHERE id = ?",
                 (time.time(), by, entry.id))
    blobs.add_refs(conn, entry.blob_id, -1)


def delete(conn: sqlite3.Connection, entry_id: int) -> bool:
    row = conn.execute("DELETE FROM quarantine WHERE id = ? RETURNING blob_id, released",
                       (entry_id,)).fetchone()
    if row is None:
        return False
    if row["released"] is None:
        blobs.add_refs(conn, row["blob_id"], -1)
    return True


def expire(conn: sqlite3.Connection, older_than: float) -> int:
    """Delete entries created before the given time; returns how many."""
    ids = [r[0] for r in conn.execute("SELECT id FROM quarantine WHERE created < ?",
                                      (older_than,)).fetchall()]
    for entry_id in ids:
        delete(conn, entry_id)
    return len(ids)
