"""Mailboxes and the messages in them (synchronous SQL functions).

Every change to a mailbox takes a new MODSEQ from that mailbox, and every
expunge leaves a tombstone (mailbox, uid, modseq): IMAP sessions learn what
changed since they last looked with one indexed query (RFC 7162 CONDSTORE and
QRESYNC fall out of this for free).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from . import blobs
from .models import Mailbox, Message, format_flags


class MailboxError(Exception):
    """A mailbox operation the store refuses."""


def next_counter(conn: sqlite3.Connection, name: str, floor: int = 1) -> int:
    row = conn.execute(
        "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
        " SET value = max(value + 1, ?) RETURNING value", (name, floor, floor)).fetchone()
    return int(row[0])


def create_mailbox(conn: sqlite3.Connection, account_id: int, name: str,
                   role: str | None = None) -> Mailbox:
    if get_mailbox(conn, account_id, name) is not None:
        raise MailboxError(f"mailbox {name} already exists")
    uidvalidity = next_counter(conn, "uidvalidity", int(time.time()))
    cur = conn.execute(
        "INSERT INTO mailboxes(account_id, name, role, uidvalidity, created)"
        " VALUES (?, ?, ?, ?, ?)", (account_id, name, role, uidvalidity, time.time()))
    return get_mailbox_by_id(conn, int(cur.lastrowid or 0))  # type: ignore[return-value]


def get_mailbox(conn: sqlite3.Connection, account_id: int, name: str) -> Mailbox | None:
    if name.upper() == "INBOX":
        name = "INBOX"
    row = conn.execute("SELECT * FROM mailboxes WHERE account_id = ? AND name = ?",
                       (account_id, name)).fetchone()
    return Mailbox.from_row(row) if row else None


def get_mailbox_by_id(conn: sqlite3.Connection, mailbox_id: int) -> Mailbox | None:
    row = conn.execute("SELECT * FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    return Mailbox.from_row(row) if row else None


def get_mailbox_by_role(conn: sqlite3.Connection, account_id: int, role: str) -> Mailbox | None:
    row = conn.execute("SELECT * FROM mailboxes WHERE account_id = ? AND role = ?"
                       " ORDER BY id LIMIT 1", (account_id, role)).fetchone()
    return Mailbox.from_row(row) if row else None


def list_mailboxes(conn: sqlite3.Connection, account_id: int) -> list[Mailbox]:
    return [Mailbox.from_row(r) for r in conn.execute(
        "SELECT * FROM mailboxes WHERE account_id = ? ORDER BY name", (account_id,))]


def set_subscribed(conn: sqlite3.Connection, account_id: int, name: str,
                   subscribed: bool) -> None:
    """Add or remove a name on the account's subscription list (RFC 9051 6.3.7-6.3.8).

    The list holds names, not mailboxes: a name may be subscribed whether or not a
    mailbox by that name exists, and deleting a mailbox leaves its name subscribed.
    """
    if name.upper() == "INBOX":
        name = "INBOX"
    if subscribed:
        conn.execute("INSERT OR IGNORE INTO subscriptions(account_id, name) VALUES (?, ?)",
                     (account_id, name))
    else:
        conn.execute("DELETE FROM subscriptions WHERE account_id = ? AND name = ?",
                     (account_id, name))


def subscriptions(conn: sqlite3.Connection, account_id: int) -> set[str]:
    return {row[0] for row in conn.execute(
        "SELECT name FROM subscriptions WHERE account_id = ?", (account_id,))}


def _rename_subscriptions(conn: sqlite3.Connection, account_id: int, old: str, new: str,
                          separator: str) -> None:
    """Subscriptions follow a client's RENAME of a mailbox and its inferiors."""
    prefix = old + separator
    for row in conn.execute("SELECT name FROM subscriptions WHERE account_id = ?"
                            " AND (name = ? OR substr(name, 1, ?) = ?)",
                            (account_id, old, len(prefix), prefix)).fetchall():
        set_subscribed(conn, account_id, row[0], False)
        set_subscribed(conn, account_id, new + row[0][len(old):], True)


def rename_mailbox(conn: sqlite3.Connection, account_id: int, old: str, new: str,
                   separator: str = "/") -> None:
    """Rename a mailbox and its children; renaming INBOX moves its mail (RFC 9051 6.3.6)."""
    source = get_mailbox(conn, account_id, old)
    if source is None:
        raise MailboxError(f"no mailbox {old}")
    if get_mailbox(conn, account_id, new) is not None:
        raise MailboxError(f"mailbox {new} already exists")
    if source.name == "INBOX":
        _move_inbox_contents(conn, source, new)
        return
    prefix = source.name + separator
    for row in conn.execute("SELECT id, name FROM mailboxes WHERE account_id = ?"
                            " AND (name = ? OR substr(name, 1, ?) = ?)",
                            (account_id, source.name, len(prefix), prefix)).fetchall():
        renamed = new + row["name"][len(source.name):]
        conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (renamed, row["id"]))
    _rename_subscriptions(conn, account_id, source.name, new, separator)


def _move_inbox_contents(conn: sqlite3.Connection, inbox: Mailbox, new: str) -> None:
    target = create_mailbox(conn, inbox.account_id, new)
    if "INBOX" in subscriptions(conn, inbox.account_id):  # INBOX keeps its own
        set_subscribed(conn, inbox.account_id, target.name, True)
    uids = [m.uid for m in list_messages(conn, inbox.id)]
    copy_messages(conn, inbox.id, uids, target.id)
    expunge(conn, inbox.id, uids)


def delete_mailbox_rows(conn: sqlite3.Connection, mailbox_id: int) -> None:
    """Remove a mailbox with its messages, releasing their blobs."""
    for row in conn.execute("SELECT blob_id, COUNT(*) FROM messages WHERE mailbox_id = ?"
                            " GROUP BY blob_id", (mailbox_id,)).fetchall():
        conn.execute("DELETE FROM messages WHERE mailbox_id = ? AND blob_id = ?",
                     (mailbox_id, row[0]))
        blobs.add_refs(conn, row[0], -row[1])
    conn.execute("DELETE FROM expunged WHERE mailbox_id = ?", (mailbox_id,))
    conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))


def _bump_modseq(conn: sqlite3.Connection, mailbox_id: int) -> int:
    row = conn.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?"
                       " RETURNING highestmodseq", (mailbox_id,)).fetchone()
    if row is None:
        raise MailboxError(f"mailbox {mailbox_id} does not exist")
    return int(row[0])


def add_message(conn: sqlite3.Connection, mailbox_id: int, blob_id: int, size: int, *,
                flags: Iterable[str] = (), internaldate: float | None = None,
                trace_id: str = "", message_id: str = "") -> tuple[int, int]:
    """Insert a message row (the caller holds a blob reference for it); returns (uid, modseq)."""
    row = conn.execute(
        "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
        " WHERE id = ? RETURNING uidnext - 1, highestmodseq", (mailbox_id,)).fetchone()
    if row is None:
        raise MailboxError(f"mailbox {mailbox_id} does not exist")
    uid, modseq = int(row[0]), int(row[1])
    now = time.time()
    conn.execute(
        "INSERT INTO messages(mailbox_id, uid, modseq, flags, internaldate, size, blob_id,"
        " trace_id, message_id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (mailbox_id, uid, modseq, format_flags(set(flags)), internaldate or now, size, blob_id,
         trace_id, message_id, now))
    return uid, modseq


def list_messages(conn: sqlite3.Connection, mailbox_id: int) -> list[Message]:
    return [Message.from_row(r) for r in conn.execute(
        "SELECT * FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))]


def get_messages(conn: sqlite3.Connection, mailbox_id: int, uids: Iterable[int]) -> list[Message]:
    wanted = sorted(set(uids))
    found: list[Message] = []
    for start in range(0, len(wanted), 500):
        part = wanted[start:start + 500]
        marks = ",".join("?" * len(part))
        found += [Message.from_row(r) for r in conn.execute(
            f"SELECT * FROM messages WHERE mailbox_id = ? AND uid IN ({marks}) ORDER BY uid",
            (mailbox_id, *part))]
    return found


def changes_since(conn: sqlite3.Connection, mailbox_id: int,
                  modseq: int) -> tuple[list[Message], list[int]]:
    """Messages changed or added after modseq, and UIDs expunged after it."""
    changed = [Message.from_row(r) for r in conn.execute(
        "SELECT * FROM messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
        (mailbox_id, modseq))]
    gone = [r[0] for r in conn.execute(
        "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
        (mailbox_id, modseq))]
    return changed, gone


def store_flags(conn: sqlite3.Connection, mailbox_id: int, uids: Iterable[int],
                flags: Iterable[str], mode: str,
                unchangedsince: int | None = None) -> tuple[list[Message], list[int]]:
    """Set, add or remove flags. Returns (changed messages, uids failing UNCHANGEDSINCE)."""
    wanted = set(flags)
    changed: list[tuple[Message, frozenset[str]]] = []
    failed: list[int] = []
    for msg in get_messages(conn, mailbox_id, uids):
        if unchangedsince is not None and msg.modseq > unchangedsince:
            failed.append(msg.uid)
            continue
        new = _apply_flags(msg.flags, wanted, mode)
        if new != msg.flags:
            changed.append((msg, new))
    if not changed:
        return [], failed
    modseq = _bump_modseq(conn, mailbox_id)
    conn.executemany("UPDATE messages SET flags = ?, modseq = ? WHERE id = ?",
                     [(format_flags(new), modseq, m.id) for m, new in changed])
    result = [Message(m.id, m.mailbox_id, m.uid, modseq, new, m.internaldate, m.size, m.blob_id,
                      m.trace_id, m.message_id) for m, new in changed]
    return result, failed


def _apply_flags(current: frozenset[str], flags: set[str], mode: str) -> frozenset[str]:
    if mode == "set":
        return frozenset(flags)
    if mode == "add":
        return current | flags
    if mode == "remove":
        return current - flags
    raise ValueError(f"unknown flag mode {mode!r}")


def copy_messages(conn: sqlite3.Connection, source_id: int, uids: Iterable[int],
                  dest_id: int) -> list[tuple[int, int]]:
    """Copy messages (sharing their blobs); returns (source uid, new uid) pairs."""
    pairs: list[tuple[int, int]] = []
    for msg in get_messages(conn, source_id, uids):
        blobs.add_refs(conn, msg.blob_id, 1)
        new_uid, _ = add_message(conn, dest_id, msg.blob_id, msg.size, flags=msg.flags,
                                 internaldate=msg.internaldate, trace_id=msg.trace_id,
                                 message_id=msg.message_id)
        pairs.append((msg.uid, new_uid))
    return pairs


def expunge(conn: sqlite3.Connection, mailbox_id: int, uids: Iterable[int]) -> list[int]:
    """Remove messages, leaving tombstones for QRESYNC; returns the expunged uids."""
    msgs = get_messages(conn, mailbox_id, uids)
    if not msgs:
        return []
    modseq = _bump_modseq(conn, mailbox_id)
    for msg in msgs:
        conn.execute("DELETE FROM messages WHERE id = ?", (msg.id,))
        conn.execute("INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                     (mailbox_id, msg.uid, modseq))
        blobs.add_refs(conn, msg.blob_id, -1)
    return [m.uid for m in msgs]


def deleted_uids(conn: sqlite3.Connection, mailbox_id: int) -> list[int]:
    return [m.uid for m in list_messages(conn, mailbox_id) if "\\Deleted" in m.flags]


def mailbox_counts(conn: sqlite3.Connection, mailbox_id: int) -> dict[str, int]:
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0),"
        " SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Seen %' THEN 0 ELSE 1 END)"
        " FROM messages WHERE mailbox_id = ?", (mailbox_id,)).fetchone()
    return {"messages": int(row[0]), "size": int(row[1]), "unseen": int(row[2] or 0)}


def record_training(conn: sqlite3.Connection, account_id: int, blob_id: int | None,
                    is_spam: bool, source: str, message_id: str = "") -> None:
    """Note a user's or admin's spam/ham judgement; holds the blob until consumed."""
    if blob_id is not None:
        blobs.add_refs(conn, blob_id, 1)
    conn.execute("INSERT INTO training_events(account_id, blob_id, message_id, is_spam, source,"
                 " created) VALUES (?, ?, ?, ?, ?, ?)",
                 (account_id, blob_id, message_id, int(is_spam), source, time.time()))


def pending_training(conn: sqlite3.Connection, limit: int = 100) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM training_events WHERE consumed = 0 ORDER BY id LIMIT ?",
                        (limit,)).fetchall()


def consume_training(conn: sqlite3.Connection, event_id: int) -> None:
    row = conn.execute("UPDATE training_events SET consumed = 1 WHERE id = ? AND consumed = 0"
                       " RETURNING blob_id", (event_id,)).fetchone()
    if row is not None and row[0] is not None:
        blobs.add_refs(conn, row[0], -1)
