"""Store queries the IMAP server needs beyond mail.py (synchronous SQL functions).

Snapshot reads of a mailbox's changes (RFC 7162 CONDSTORE/QRESYNC), quota
usage (RFC 9208), keyword lists for SELECT's FLAGS (RFC 9051 7.3.5) and
APPEND/MULTIAPPEND of already-sealed blobs in one transaction (RFC 3502).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from . import blobs, mail
from .models import Message, format_flags


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
                  items: Sequence[tuple[blobs.SealedBlob | blobs.PlainBlob, frozenset[str],
                                        float]],
                  now: float) -> list[int]:
    """Insert blobs (from Store.seal) as new messages; returns their UIDs (in order)."""
    new: list[int] = []
    for blob, flags, when in items:
        sealed = blobs.insert(conn, blob, 1, now)
        uid, _ = mail.add_message(conn, mailbox_id, sealed.id, sealed.size, flags=flags,
                                  internaldate=when)
        new.append(uid)
    return new



def _marks(n: int) -> str:
    return ",".join("?" * n)


def _plain(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor yielding plain tuples (cheaper than sqlite3.Row for bulk reads)."""
    cur = conn.cursor()
    cur.row_factory = None
    return cur


def sealed_first_chunks(conn: sqlite3.Connection, blob_ids: Sequence[int]
                        ) -> list[tuple[int, int, bytes]]:
    """(blob id, blob size, sealed chunk 0) for many blobs in one query (still encrypted)."""
    out: list[tuple[int, int, bytes]] = []
    for start in range(0, len(blob_ids), 500):
        part = list(blob_ids[start:start + 500])
        # Chunk 0 is in the blob's row when it is the only one (blobs.SCHEMA).
        out += _plain(conn).execute(
            "SELECT b.id, b.size, coalesce(b.data, c.data) FROM blobs b LEFT JOIN blob_chunks c"
            " ON b.data IS NULL AND c.blob_id = b.id AND c.idx = 0"
            f" WHERE b.id IN ({_marks(len(part))}) AND coalesce(b.data, c.data) IS NOT NULL",
            part).fetchall()
    return out


def sealed_blobs(conn: sqlite3.Connection, blob_ids: Sequence[int]
                 ) -> list[tuple[int, int, int, bytes]]:
    """(blob id, blob size, chunk index, sealed chunk) of whole blobs, by blob then index."""
    out: list[tuple[int, int, int, bytes]] = []
    for start in range(0, len(blob_ids), 500):
        part = list(blob_ids[start:start + 500])
        marks = _marks(len(part))
        out += _plain(conn).execute(
            "SELECT id, size, 0, data FROM blobs"
            f" WHERE id IN ({marks}) AND data IS NOT NULL"
            " UNION ALL SELECT b.id, b.size, c.idx, c.data FROM blobs b JOIN blob_chunks c"
            f" ON c.blob_id = b.id WHERE b.id IN ({marks}) AND b.data IS NULL"
            " ORDER BY 1, 3", part + part).fetchall()
    return out


def message_rows(conn: sqlite3.Connection, mailbox_id: int
                 ) -> list[tuple[int, str, float, int, int, int]]:
    """(uid, flags, internaldate, size, modseq, blob id) of a whole mailbox, by UID."""
    return _plain(conn).execute(
        "SELECT uid, flags, internaldate, size, modseq, blob_id FROM messages"
        " WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)).fetchall()


class FetchRow(NamedTuple):
    """What FETCH needs of a message (a cheaper stand-in for models.Message)."""

    uid: int
    flags: frozenset[str]
    internaldate: float
    size: int
    modseq: int
    blob_id: int


def fetch_rows(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]
               ) -> list[FetchRow]:
    """Rows of these messages, by UID: one range query when the UIDs are mostly
    consecutive (the usual `1:*`), IN lists of 500 otherwise."""
    wanted = sorted(set(uids))
    if not wanted:
        return []
    rows: list[tuple[int, str, float, int, int, int]] = []
    lo, hi = wanted[0], wanted[-1]
    if hi - lo + 1 <= 2 * len(wanted):
        rows = _plain(conn).execute(
            "SELECT uid, flags, internaldate, size, modseq, blob_id FROM messages"
            " WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid",
            (mailbox_id, lo, hi)).fetchall()
        if len(rows) != len(wanted):
            keep = set(wanted)
            rows = [r for r in rows if r[0] in keep]
    else:
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows += _plain(conn).execute(
                "SELECT uid, flags, internaldate, size, modseq, blob_id FROM messages"
                f" WHERE mailbox_id = ? AND uid IN ({_marks(len(part))}) ORDER BY uid",
                (mailbox_id, *part)).fetchall()
    sets: dict[str, frozenset[str]] = {}
    out = []
    for uid, text, internaldate, size, modseq, blob_id in rows:
        flags = sets.get(text)
        if flags is None:
            flags = sets[text] = frozenset(text.split())
        out.append(FetchRow(uid, flags, internaldate, size, modseq, blob_id))
    return out


class FlagRow(NamedTuple):
    """A message's flags after STORE (what the FETCH responses need)."""

    uid: int
    flags: frozenset[str]
    modseq: int


def store_flags(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int],
                flags: Sequence[str], mode: str, unchangedsince: int | None = None
                ) -> tuple[list[FlagRow], list[int], list[FlagRow]]:
    """Set, add or remove flags with one UPDATE per distinct flag set, not per message.

    Same semantics as mail.store_flags. Returns (changed rows, uids failing
    UNCHANGEDSINCE, the current rows of every message asked for).
    """
    wanted = set(uids)
    if not wanted:
        return [], [], []
    lo, hi = min(wanted), max(wanted)
    rows = _plain(conn).execute(
        "SELECT id, uid, flags, modseq FROM messages WHERE mailbox_id = ?"
        " AND uid BETWEEN ? AND ? ORDER BY uid", (mailbox_id, lo, hi)).fetchall()
    whole_range = True          # every row in [lo, hi] is one we may change
    groups: dict[str, list[tuple[int, int, int]]] = {}
    failed: list[int] = []
    picked: list[tuple[int, int, str, int]] = []
    for row_id, uid, text, modseq in rows:
        if uid not in wanted:
            whole_range = False
            continue
        picked.append((row_id, uid, text, modseq))
        if unchangedsince is not None and modseq > unchangedsince:
            failed.append(uid)
            whole_range = False
            continue
        groups.setdefault(text, []).append((row_id, uid, modseq))
    flag_set = set(flags)
    new_sets: dict[str, frozenset[str]] = {}
    for text in groups:
        old = frozenset(text.split())
        new = mail._apply_flags(old, flag_set, mode)
        if new != old:
            new_sets[text] = new
    if not new_sets:
        current = [FlagRow(uid, frozenset(text.split()), modseq)
                   for _i, uid, text, modseq in picked]
        return [], failed, current
    row = conn.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?"
                       " RETURNING highestmodseq", (mailbox_id,)).fetchone()
    if row is None:
        raise mail.MailboxError(f"mailbox {mailbox_id} does not exist")
    new_modseq = int(row[0])
    for text, new in new_sets.items():
        members = groups[text]
        if whole_range:
            conn.execute("UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ?"
                         " AND uid BETWEEN ? AND ? AND flags = ?",
                         (format_flags(new), new_modseq, mailbox_id, lo, hi, text))
            continue
        for start in range(0, len(members), 500):
            ids = [m[0] for m in members[start:start + 500]]
            conn.execute(f"UPDATE messages SET flags = ?, modseq = ? WHERE id IN"
                         f" ({_marks(len(ids))})", (format_flags(new), new_modseq, *ids))
    changed: list[FlagRow] = []
    current: list[FlagRow] = []
    sets: dict[str, frozenset[str]] = {}
    failed_set = set(failed)
    for _i, uid, text, modseq in picked:
        new = new_sets.get(text)
        if new is not None and uid not in failed_set:
            item = FlagRow(uid, new, new_modseq)
            changed.append(item)
        else:
            old = sets.get(text)
            if old is None:
                old = sets[text] = frozenset(text.split())
            item = FlagRow(uid, old, modseq)
        current.append(item)
    return changed, failed, current
