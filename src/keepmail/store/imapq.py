"""Store queries the IMAP server needs beyond mail.py (synchronous SQL functions).

Snapshot reads of a mailbox's changes (RFC 7162 CONDSTORE/QRESYNC), quota
usage (RFC 9208), keyword lists for SELECT's FLAGS (RFC 9051 7.3.5) and
APPEND/MULTIAPPEND of already-sealed blobs in one transaction (RFC 3502).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from . import blobs, mail
from .models import Message


def uids(conn: sqlite3.Connection, mailbox_id: int) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))]


def snapshot(conn: sqlite3.Connection, mailbox_id: int) -> tuple[int, int, list[int]] | None:
    """(highestmodseq, uidnext, uids) read in one transaction, or None if gone."""
    conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT highestmodseq, uidnext FROM mailboxes WHERE id = ?",
                           (mailbox_id,)).fetchone()
        if row is None:
            return None
        return int(row[0]), int(row[1]), uids(conn, mailbox_id)
    finally:
        conn.execute("COMMIT")


def changes(conn: sqlite3.Connection, mailbox_id: int, modseq: int
            ) -> tuple[int, list[Message], list[int]] | None:
    """(highestmodseq, changed messages, expunged uids) after modseq, consistently."""
    conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT highestmodseq FROM mailboxes WHERE id = ?",
                           (mailbox_id,)).fetchone()
        if row is None:
            return None
        if int(row[0]) <= modseq:
            return int(row[0]), [], []
        changed, gone = mail.changes_since(conn, mailbox_id, modseq)
        return int(row[0]), changed, gone
    finally:
        conn.execute("COMMIT")


def highestmodseq(conn: sqlite3.Connection, mailbox_id: int) -> int:
    row = conn.execute("SELECT highestmodseq FROM mailboxes WHERE id = ?",
                       (mailbox_id,)).fetchone()
    return int(row[0]) if row else 0


def expunged_since(conn: sqlite3.Connection, mailbox_id: int, modseq: int) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
        (mailbox_id, modseq))]


def keywords(conn: sqlite3.Connection, mailbox_id: int) -> set[str]:
    found: set[str] = set()
    for (text,) in conn.execute("SELECT DISTINCT flags FROM messages WHERE mailbox_id = ?"
                                " AND flags != ''", (mailbox_id,)):
        found.update(f for f in text.split() if not f.startswith("\\"))
    return found


def status(conn: sqlite3.Connection, mailbox_id: int) -> dict[str, int]:
    """Counts for STATUS: messages, unseen, deleted, size."""
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0),"
        " COALESCE(SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Seen %' THEN 0 ELSE 1 END), 0),"
        " COALESCE(SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Deleted %' THEN 1 ELSE 0"
        " END), 0) FROM messages WHERE mailbox_id = ?", (mailbox_id,)).fetchone()
    return {"messages": int(row[0]), "size": int(row[1]), "unseen": int(row[2]),
            "deleted": int(row[3])}


def first_unseen_uid(conn: sqlite3.Connection, mailbox_id: int) -> int | None:
    row = conn.execute(
        "SELECT MIN(uid) FROM messages WHERE mailbox_id = ?"
        " AND (' ' || flags || ' ') NOT LIKE '% \\Seen %'", (mailbox_id,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def usage(conn: sqlite3.Connection, account_id: int) -> int:
    """Bytes of mail an account holds (RFC 9208 STORAGE counts these, in KiB)."""
    row = conn.execute("SELECT COALESCE(SUM(m.size), 0) FROM messages m JOIN mailboxes b"
                       " ON b.id = m.mailbox_id WHERE b.account_id = ?",
                       (account_id,)).fetchone()
    return int(row[0])


def quota_bytes(conn: sqlite3.Connection, account_id: int) -> int:
    row = conn.execute("SELECT quota_bytes FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return int(row[0]) if row else 0


def append_sealed(conn: sqlite3.Connection, mailbox_id: int,
                  items: Sequence[tuple[blobs.SealedBlob, frozenset[str], float]],
                  now: float) -> list[int]:
    """Insert sealed blobs as new messages; returns their UIDs (in order)."""
    new: list[int] = []
    for sealed, flags, when in items:
        blobs.insert(conn, sealed, 1, now)
        uid, _ = mail.add_message(conn, mailbox_id, sealed.id, sealed.size, flags=flags,
                                  internaldate=when)
        new.append(uid)
    return new

