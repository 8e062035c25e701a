"""The outbound queue's tables and SQL functions (synchronous, connection-first).

One row per queued message holds one reference on its encrypted blob
(the same counting as blobs.add_refs, in fewer statements); one row per
recipient carries that recipient's retry state.
A recipient row is deleted once delivered or bounced, and the message row (and
its blob reference) once no recipient row is left. Nothing is marked "in
flight" on disk: after a crash every remaining row is simply due again, so a
message may be sent twice but never lost (RFC 5321 6.1 prefers duplicates to
loss).
"""

from __future__ import annotations

import collections
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import migrations

SCHEMA = [
    """
    CREATE TABLE queue_messages (
        id INTEGER PRIMARY KEY,
        blob_id INTEGER NOT NULL REFERENCES blobs(id),
        sender TEXT NOT NULL,
        account_id INTEGER,
        kind TEXT NOT NULL DEFAULT 'submit',
        trace_id TEXT NOT NULL DEFAULT '',
        message_id TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL,
        smtputf8 INTEGER NOT NULL DEFAULT 0,
        body_8bit INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        delay_notified INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE queue_rcpts (
        id INTEGER PRIMARY KEY,
        msg_id INTEGER NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
        rcpt TEXT NOT NULL,
        domain TEXT NOT NULL,
        held INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        last_attempt REAL,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX queue_rcpts_due ON queue_rcpts(held, next_attempt);
    CREATE INDEX queue_rcpts_msg ON queue_rcpts(msg_id)
    """,
    # Deleting a blob makes SQLite look for rows that still reference it (foreign
    # keys are on): without an index that is a scan of the whole queue per blob.
    """
    CREATE INDEX queue_messages_blob ON queue_messages(blob_id)
    """,
]

migrations.register("queue", SCHEMA)


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    blob_id: int
    sender: str
    account_id: int | None
    kind: str            # submit | forward | dsn
    trace_id: str
    message_id: str
    size: int
    smtputf8: bool
    body_8bit: bool
    created: float
    delay_notified: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> QueuedMessage:
        return cls(row["id"], row["blob_id"], row["sender"], row["account_id"], row["kind"],
                   row["trace_id"], row["message_id"], row["size"], bool(row["smtputf8"]),
                   bool(row["body_8bit"]), row["created"], bool(row["delay_notified"]))


@dataclass(frozen=True)
class QueuedRcpt:
    id: int
    msg_id: int
    rcpt: str
    domain: str
    held: bool
    attempts: int
    next_attempt: float
    last_attempt: float | None
    last_error: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> QueuedRcpt:
        return cls(row["id"], row["msg_id"], row["rcpt"], row["domain"], bool(row["held"]),
                   row["attempts"], row["next_attempt"], row["last_attempt"], row["last_error"])


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def enqueue(conn: sqlite3.Connection, blob_id: int, size: int, sender: str,
            rcpts: Iterable[str], **kwargs: Any) -> int:
    """Queue a stored blob for recipients; takes one blob reference. Returns the id."""
    return enqueue_rows(conn, blob_id, size, sender, rcpts, **kwargs)[0].id


def enqueue_rows(conn: sqlite3.Connection, blob_id: int, size: int, sender: str,
                 rcpts: Iterable[str], *, kind: str = "submit", account_id: int | None = None,
                 trace_id: str = "", message_id: str = "", smtputf8: bool = False,
                 body_8bit: bool = False, now: float | None = None,
                 held: bool = False) -> tuple[QueuedMessage, list[QueuedRcpt]]:
    """enqueue(), returning the rows as written.

    Few statements on purpose: each one releases and retakes the GIL in the
    store's writer thread, which costs far more than the SQL under load.
    """
    now = time.time() if now is None else now
    cur = conn.execute(
        "INSERT INTO queue_messages(blob_id, sender, account_id, kind, trace_id, message_id,"
        " size, smtputf8, body_8bit, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (blob_id, sender, account_id, kind, trace_id, message_id, size, int(smtputf8),
         int(body_8bit), now))
    msg = QueuedMessage(int(cur.lastrowid or 0), blob_id, sender, account_id, kind, trace_id,
                        message_id, size, smtputf8, body_8bit, now, False)
    addresses = list(rcpts)
    rows: list[QueuedRcpt] = []
    for start in range(0, len(addresses), 150):
        part = addresses[start:start + 150]
        values = [v for r in part for v in (msg.id, r, domain_of(r), int(held), now)]
        ids = conn.execute(
            "INSERT INTO queue_rcpts(msg_id, rcpt, domain, held, next_attempt) VALUES "
            + ",".join(["(?, ?, ?, ?, ?)"] * len(part)) + " RETURNING id", values).fetchall()
        rows += [QueuedRcpt(i[0], msg.id, r, domain_of(r), held, 0, now, None, "")
                 for i, r in zip(ids, part, strict=True)]
    conn.execute("UPDATE blobs SET refs = refs + 1 WHERE id = ?", (blob_id,))
    return msg, rows


def due(conn: sqlite3.Connection, now: float, limit: int,
        exclude: set[int] | None = None) -> list[QueuedRcpt]:
    """Recipients whose next attempt is due, oldest first (skipping ids in exclude)."""
    rows = conn.execute(
        "SELECT * FROM queue_rcpts WHERE held = 0 AND next_attempt <= ?"
        " ORDER BY next_attempt, id LIMIT ?", (now, limit + len(exclude or ()))).fetchall()
    found = [QueuedRcpt.from_row(r) for r in rows]
    if exclude:
        found = [r for r in found if r.id not in exclude]
    return found[:limit]


def next_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT MIN(next_attempt) FROM queue_rcpts WHERE held = 0").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def get_message(conn: sqlite3.Connection, msg_id: int) -> QueuedMessage | None:
    row = conn.execute("SELECT * FROM queue_messages WHERE id = ?", (msg_id,)).fetchone()
    return QueuedMessage.from_row(row) if row else None


def rcpts_of(conn: sqlite3.Connection, msg_id: int) -> list[QueuedRcpt]:
    return [QueuedRcpt.from_row(r) for r in conn.execute(
        "SELECT * FROM queue_rcpts WHERE msg_id = ? ORDER BY id", (msg_id,))]


def list_messages(conn: sqlite3.Connection, limit: int = 1000) -> list[QueuedMessage]:
    return [QueuedMessage.from_row(r) for r in conn.execute(
        "SELECT * FROM queue_messages ORDER BY id LIMIT ?", (limit,))]


def count(conn: sqlite3.Connection) -> tuple[int, int]:
    """(messages, recipients) in the queue."""
    m = conn.execute("SELECT COUNT(*) FROM queue_messages").fetchone()[0]
    r = conn.execute("SELECT COUNT(*) FROM queue_rcpts").fetchone()[0]
    return int(m), int(r)


def mark_done(conn: sqlite3.Connection, rcpt_ids: Iterable[int]) -> None:
    """Recipients delivered or bounced: forget them, and their message when it is empty.

    Set-at-a-time, so the delivery agent can mark a whole batch of deliveries
    in a few statements: the recipient rows, then the messages left without
    recipients, then their blob references.
    """
    ids = list(rcpt_ids)
    msg_ids: set[int] = set()
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        marks = ",".join("?" * len(part))
        msg_ids |= {r[0] for r in conn.execute(
            f"DELETE FROM queue_rcpts WHERE id IN ({marks}) RETURNING msg_id", part)}
    _release_empty(conn, sorted(msg_ids))


def release_if_empty(conn: sqlite3.Connection, msg_id: int) -> bool:
    return _release_empty(conn, [msg_id]) > 0


def _release_empty(conn: sqlite3.Connection, msg_ids: list[int]) -> int:
    """Delete the messages in msg_ids that have no recipient left; drop their references."""
    blob_refs: collections.Counter[int] = collections.Counter()
    for start in range(0, len(msg_ids), 500):
        part = msg_ids[start:start + 500]
        marks = ",".join("?" * len(part))
        blob_refs.update(r[0] for r in conn.execute(
            f"DELETE FROM queue_messages WHERE id IN ({marks}) AND NOT EXISTS"
            " (SELECT 1 FROM queue_rcpts WHERE msg_id = queue_messages.id) RETURNING blob_id",
            part))
    # Usually the queue holds the last reference: then one statement drops the blob
    # (and its chunks, ON DELETE CASCADE) instead of an UPDATE and a DELETE.
    single = [b for b, n in blob_refs.items() if n == 1]
    for start in range(0, len(single), 500):
        part = single[start:start + 500]
        marks = ",".join("?" * len(part))
        gone = {r[0] for r in conn.execute(
            f"DELETE FROM blobs WHERE id IN ({marks}) AND refs <= 1 RETURNING id", part)}
        kept = [b for b in part if b not in gone]
        if kept:
            conn.executemany("UPDATE blobs SET refs = refs - 1 WHERE id = ?",
                             [(b,) for b in kept])
    for blob_id, n in blob_refs.items():
        if n > 1 and conn.execute("DELETE FROM blobs WHERE id = ? AND refs <= ? RETURNING id",
                                  (blob_id, n)).fetchone() is None:
            conn.execute("UPDATE blobs SET refs = refs - ? WHERE id = ?", (n, blob_id))
    return sum(blob_refs.values())


def defer(conn: sqlite3.Connection, rcpt_ids: Iterable[int], error: str, next_attempt: float,
          now: float) -> None:
    conn.executemany(
        "UPDATE queue_rcpts SET attempts = attempts + 1, last_attempt = ?, last_error = ?,"
        " next_attempt = ? WHERE id = ?", [(now, error, next_attempt, i) for i in rcpt_ids])


def defer_each(conn: sqlite3.Connection,
               rows: Iterable[tuple[float, str, float, int]]) -> None:
    """defer() for several recipients at once: (now, error, next_attempt, rcpt id) each."""
    conn.executemany(
        "UPDATE queue_rcpts SET attempts = attempts + 1, last_attempt = ?, last_error = ?,"
        " next_attempt = ? WHERE id = ?", rows)


def set_delay_notified(conn: sqlite3.Connection, msg_id: int) -> None:
    conn.execute("UPDATE queue_messages SET delay_notified = 1 WHERE id = ?", (msg_id,))


# -- operator actions (keepmail queue ...) --------------------------------------
def set_held(conn: sqlite3.Connection, msg_id: int, held: bool) -> int:
    return conn.execute("UPDATE queue_rcpts SET held = ? WHERE msg_id = ?",
                        (int(held), msg_id)).rowcount


def hold_account(conn: sqlite3.Connection, account_id: int, held: bool = True) -> int:
    """Hold (or release) every queued message of one account (used by the abuse guard)."""
    return conn.execute(
        "UPDATE queue_rcpts SET held = ? WHERE msg_id IN"
        " (SELECT id FROM queue_messages WHERE account_id = ?)", (int(held), account_id)).rowcount


def retry_now(conn: sqlite3.Connection, msg_id: int | None, now: float) -> int:
    if msg_id is None:
        return conn.execute("UPDATE queue_rcpts SET next_attempt = ? WHERE held = 0",
                            (now,)).rowcount
    return conn.execute("UPDATE queue_rcpts SET next_attempt = ? WHERE msg_id = ? AND held = 0",
                        (now, msg_id)).rowcount


def delete_message(conn: sqlite3.Connection, msg_id: int) -> bool:
    conn.execute("DELETE FROM queue_rcpts WHERE msg_id = ?", (msg_id,))
    return release_if_empty(conn, msg_id)
