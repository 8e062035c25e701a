"""Mailbox commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE,
UNSUBSCRIBE, LIST, LSUB, STATUS, GETQUOTA, GETQUOTAROOT, SETQUOTA.

RFC 9051 sections 6.3.1-6.3.11 (with RFC 3501 6.3 for IMAP4rev1 clients);
RFC 5258 (LIST-EXTENDED), RFC 5819 (LIST-STATUS), RFC 6154 (SPECIAL-USE),
RFC 3348 (CHILDREN), RFC 7162 3.1.2/3.2.5 (SELECT with CONDSTORE/QRESYNC),
RFC 7889 (APPENDLIMIT in STATUS), RFC 9208 (QUOTA).

Hierarchy separator is "/". CREATE makes missing parents; DELETE of a
mailbox with children is refused with HASCHILDREN (RFC 9051 6.3.5 allows
this), so the hierarchy never has holes that keepmail made itself.

Subscriptions are names kept apart from the mailboxes (RFC 9051 6.3.7): SUBSCRIBE
works for a name with no mailbox, DELETE leaves the name subscribed (LIST (SUBSCRIBED)
shows it \\NonExistent), RENAME carries subscriptions to the new names. CREATE does
not subscribe (as Dovecot; clients that want it send SUBSCRIBE themselves); a new
account's own folders start subscribed (accounts.add_account).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from ..store import imapq
from ..store import mail as mailq
from ..store.models import Mailbox
from . import wire
from .parser import Reader
from .session import (
    AUTH,
    SYSTEM_FLAGS,
    Bad,
    No,
    Result,
    Session,
    command,
    decode_name,
    normalize_name,
)
from .view import SelectedView

ROLE_ATTRS = {"sent": "\\Sent", "drafts": "\\Drafts", "junk": "\\Junk", "trash": "\\Trash",
              "archive": "\\Archive", "all": "\\All", "flagged": "\\Flagged"}
MAX_SUBSCRIPTIONS = 10_000   # names per account, existing mailboxes or not
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
                "HIGHESTMODSEQ", "APPENDLIMIT")


def _get(s: Session, name: str) -> Mailbox | None:
    assert s.account is not None
    account_id = s.account.id
    return s.server.store.read_now(lambda c: mailq.get_mailbox(c, account_id, name))


def _boxes(s: Session) -> list[Mailbox]:
    assert s.account is not None
    account_id = s.account.id
    return s.server.store.read_now(lambda c: mailq.list_mailboxes(c, account_id))


# -- SELECT / EXAMINE ---------------------------------------------------------------------
@command("SELECT", AUTH)
async def select(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    return await _select(s, r, readonly=False)


@command("EXAMINE", AUTH)
async def examine(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    return await _select(s, r, readonly=True)


def _select_params(s: Session, r: Reader) -> dict[str, Any] | None:
    """(CONDSTORE) and (QRESYNC (uidvalidity modseq [known-uids [seq-match]]))."""
    if not r.take(b" "):
        return None
    qresync: dict[str, Any] | None = None
    r.enter()
    while not r.take(b")"):
        name = r.atom().upper()
        if name == "CONDSTORE":
            s.enabled.add("CONDSTORE")
        elif name == "QRESYNC":
            if not s.qresync:
                raise Bad("QRESYNC is not enabled")
            r.sp()
            r.enter()
            qresync = {"uidvalidity": r.nz_number()}
            r.sp()
            qresync["modseq"] = r.number(2**63 - 1)
            if r.take(b" ") and r.peek() != ord("("):
                qresync["known"] = r.sequence_set()
                r.take(b" ")
            if r.peek() == ord("("):
                r.enter()
                r.sequence_set()
                r.sp()
                r.sequence_set()
                r.leave()
            r.leave()
        else:
            raise Bad(f"Unknown SELECT parameter {name[:30]}")
        r.take(b" ")
    r.depth -= 1
    return qresync


async def _select(s: Session, r: Reader, readonly: bool) -> Result:
    r.sp()
    name = s.mailbox_arg(r)
    qresync = _select_params(s, r)
    r.end()
    had = s.view is not None
    s.close_view()
    if had:
        s.untagged("OK [CLOSED] Previous mailbox closed")
    box = _get(s, name)
    if box is None:
        raise No("Mailbox does not exist", "NONEXISTENT")
    view = s.new_view(box, readonly)
    view.keywords = s.server.store.read_now(lambda c: imapq.keywords(c, box.id))
    _select_responses(s, view, readonly)
    s.open_view(view)
    if qresync is not None and qresync["uidvalidity"] == view.uidvalidity:
        await _qresync(s, view, qresync)
    return Result("completed", "READ-ONLY" if readonly else "READ-WRITE")


def _select_responses(s: Session, view: SelectedView, readonly: bool) -> None:
    flags = wire.flags(SYSTEM_FLAGS | view.keywords)
    s.untagged(f"{len(view.uids)} EXISTS")
    if not s.rev2:
        s.untagged(f"{view.recent_count()} RECENT")
    s.untagged(b"FLAGS " + flags)
    permanent = b"()" if readonly else wire.flags(SYSTEM_FLAGS | view.keywords | {"\\*"})
    s.untagged(b"OK [PERMANENTFLAGS " + permanent + b"] Flags permitted")
    if not s.rev2:
        first = s.server.store.read_now(lambda c: imapq.first_unseen_uid(c, view.mailbox_id))
        seq = view.uids.seq_of(first) if first else 0
        if seq:
            s.untagged(f"OK [UNSEEN {seq}] First unseen")
    s.untagged(f"OK [UIDVALIDITY {view.uidvalidity}] UIDs valid")
    s.untagged(f"OK [UIDNEXT {view.uidnext}] Predicted next UID")
    s.untagged(f"OK [HIGHESTMODSEQ {view.modseq}] Highest")
    if s.rev2:
        s.untagged(b"LIST () \"/\" " + s.mailbox_out(view.name))


async def _qresync(s: Session, view: SelectedView, params: dict[str, Any]) -> None:
    """RFC 7162 3.2.5.1: VANISHED (EARLIER) then FETCH of what changed."""
    since = params["modseq"]
    known = params.get("known")
    gone = s.server.store.read_now(lambda c: imapq.expunged_since(c, view.mailbox_id, since))
    if known is not None:
        gone = [u for u in gone if known.contains(u, view.uids.last)]
    if gone:
        s.untagged(b"VANISHED (EARLIER) " + wire.seq_set(gone))
    changed = s.server.store.read_now(
        lambda c: mailq.changes_since(c, view.mailbox_id, since)[0])
    for msg in changed:
        if msg.uid in view.uids:
            s.untagged(s.flags_fetch(view, msg))


# -- CREATE / DELETE / RENAME -----------------------------------------------------------
def _create_parents(conn: sqlite3.Connection, account_id: int, name: str) -> None:
    parts = name.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if mailq.get_mailbox(conn, account_id, parent) is None:
            mailq.create_mailbox(conn, account_id, parent)


@command("CREATE", AUTH)
async def create(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    name = normalize_name(decode_name(r.astring(), s.utf8), creating=True)
    if r.take(b" "):
        raise No("CREATE parameters are not supported", "CANNOT")
    r.end()
    assert s.account is not None
    account_id = s.account.id

    def txn(conn: sqlite3.Connection) -> int:
        if mailq.get_mailbox(conn, account_id, name) is not None:
            raise No("Mailbox already exists", "ALREADYEXISTS")
        _create_parents(conn, account_id, name)
        return mailq.create_mailbox(conn, account_id, name).id
    box_id = await s.server.store.write(txn)
    s.server.recent_floor[box_id] = 0   # all its messages will be new to the first SELECT
    return Result()


@command("DELETE", AUTH)
async def delete(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    name = s.mailbox_arg(r)
    r.end()
    if name == "INBOX":
        raise No("INBOX cannot be deleted", "CANNOT")
    assert s.account is not None
    account_id = s.account.id

    def txn(conn: sqlite3.Connection) -> int:
        box = mailq.get_mailbox(conn, account_id, name)
        if box is None:
            raise No("Mailbox does not exist", "NONEXISTENT")
        child = conn.execute("SELECT 1 FROM mailboxes WHERE account_id = ? AND"
                             " substr(name, 1, ?) = ? LIMIT 1",
                             (account_id, len(name) + 1, name + "/")).fetchone()
        if child:
            raise No("Delete the mailbox's children first", "HASCHILDREN")
        mailq.delete_mailbox_rows(conn, box.id)
        return box.id
    if s.view is not None and s.view.name == name:
        s.close_view()
    box = _get(s, name)
    await s.server.store.change([box.id] if box else [], txn)
    return Result()


@command("RENAME", AUTH)
async def rename(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    old = s.mailbox_arg(r)
    r.sp()
    new = normalize_name(decode_name(r.astring(), s.utf8), creating=True)
    r.end()
    if new == "INBOX":
        raise No("Cannot rename to INBOX", "ALREADYEXISTS")
    if new.startswith(old + "/"):
        raise No("Cannot rename a mailbox into itself", "CANNOT")
    assert s.account is not None
    account_id = s.account.id

    def txn(conn: sqlite3.Connection) -> None:
        if mailq.get_mailbox(conn, account_id, old) is None:
            raise No("Mailbox does not exist", "NONEXISTENT")
        if mailq.get_mailbox(conn, account_id, new) is not None:
            raise No("Target mailbox already exists", "ALREADYEXISTS")
        _create_parents(conn, account_id, new)
        mailq.rename_mailbox(conn, account_id, old, new)
    box = _get(s, old)
    await s.server.store.change([box.id] if box else [], txn)
    view = s.view
    if view is not None and old != "INBOX" and (view.name == old
                                                or view.name.startswith(old + "/")):
        view.name = new + view.name[len(old):]
    return Result()


@command("SUBSCRIBE", AUTH)
async def subscribe(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    return await _subscribe(s, r, True)


@command("UNSUBSCRIBE", AUTH)
async def unsubscribe(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    return await _subscribe(s, r, False)


async def _subscribe(s: Session, r: Reader, on: bool) -> Result:
    """RFC 9051 6.3.7-6.3.8: the subscription list holds names, so SUBSCRIBE needs no
    existing mailbox, UNSUBSCRIBE of a name not on the list is harmless, and DELETE leaves
    the name subscribed (the server MUST NOT unilaterally remove it)."""
    r.sp()
    raw = decode_name(r.astring(), s.utf8)
    r.end()
    # A new name is checked like one being created (no wildcards); UNSUBSCRIBE takes any
    # name that passes the basic checks, so nothing once subscribed gets stuck.
    name = normalize_name(raw, creating=on)
    assert s.account is not None
    account_id = s.account.id

    def txn(conn: sqlite3.Connection) -> None:
        if on:
            count = conn.execute("SELECT COUNT(*) FROM subscriptions WHERE account_id = ?",
                                 (account_id,)).fetchone()[0]
            if count >= MAX_SUBSCRIPTIONS and name not in mailq.subscriptions(conn, account_id):
                raise No("Too many subscriptions", "LIMIT")
        mailq.set_subscribed(conn, account_id, name, on)
    await s.server.store.write(txn)
    return Result()


def _subscriptions(s: Session) -> set[str]:
    assert s.account is not None
    account_id = s.account.id
    return s.server.store.read_now(lambda c: mailq.subscriptions(c, account_id))


# -- LIST / LSUB ------------------------------------------------------------------------------
def pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = pattern.split("/")
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    out = []
    for ch in "/".join(parts):
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _list_options(r: Reader) -> set[str]:
    r.enter()
    opts: set[str] = set()
    while not r.take(b")"):
        if opts:
            r.sp()
        opt = r.atom().upper()
        if opt not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
            raise Bad(f"Unknown LIST selection option {opt[:30]}")
        opts.add(opt)
    r.depth -= 1
    if "RECURSIVEMATCH" in opts and opts <= {"RECURSIVEMATCH", "REMOTE"}:
        raise Bad("RECURSIVEMATCH needs another selection option")
    return opts


def _return_options(r: Reader) -> tuple[set[str], list[str]]:
    r.enter()
    opts: set[str] = set()
    status: list[str] = []
    while not r.take(b")"):
        if opts:
            r.sp()
        opt = r.atom().upper()
        if opt == "STATUS":
            r.sp()
            status = [i.upper() for i in r.paren_atoms()]
            _check_status_items(status)
        elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"):
            raise Bad(f"Unknown LIST return option {opt[:30]}")
        opts.add(opt)
    r.depth -= 1
    return opts, status


@command("LIST", AUTH)
async def list_(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    selection: set[str] = set()
    extended = False
    if r.peek() == ord("("):
        selection = _list_options(r)
        extended = True
        r.sp()
    reference = decode_name(r.astring(), s.utf8)
    r.sp()
    patterns: list[str] = []
    if r.peek() == ord("("):
        extended = True
        r.enter()
        while not r.take(b")"):
            if patterns:
                r.sp()
            patterns.append(_pattern(s, r))
        r.depth -= 1
    else:
        patterns.append(_pattern(s, r))
    returns: set[str] = set()
    status: list[str] = []
    if r.take(b" "):
        r.expect(b"RETURN ")
        returns, status = _return_options(r)
        extended = True
    r.end()
    if patterns == [""] and not extended:
        s.untagged(b'LIST (\\Noselect) "/" ""')
        return Result()
    _list(s, "LIST", reference, patterns, selection, returns, status, extended)
    return Result()


def _pattern(s: Session, r: Reader) -> str:
    raw = r.list_mailbox()
    try:
        return decode_name(raw, s.utf8)
    except No:
        return raw.decode("utf-8", "replace")


def _list(s: Session, verb: str, reference: str, patterns: list[str], selection: set[str],
          returns: set[str], status: list[str], extended: bool) -> None:
    boxes = {b.name: b for b in _boxes(s)}
    subscribed_only = "SUBSCRIBED" in selection
    subs = _subscriptions(s) if subscribed_only or "SUBSCRIBED" in returns else set()
    names = set(boxes)
    if subscribed_only:  # RFC 5258 3: subscribed names are listed even without a mailbox
        names |= subs
    for n in list(names):  # implied parents that do not exist (holes)
        parts = n.split("/")
        names.update("/".join(parts[:i]) for i in range(1, len(parts)))
    regexes = [pattern_regex(reference + p) for p in patterns if p or reference]
    # RFC 5258 3 RECURSIVEMATCH: a parent that is not subscribed itself is returned with
    # CHILDINFO when a subscribed descendant would not be listed on its own (it does not
    # match the patterns); these are the ancestors of such descendants.
    childinfo: set[str] = set()
    if "RECURSIVEMATCH" in selection:
        for d in subs:
            if not any(rx.match(d) for rx in regexes):
                parts = d.split("/")
                childinfo.update("/".join(parts[:i]) for i in range(1, len(parts)))
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not any(rx.match(name) for rx in regexes):
            continue
        box = boxes.get(name)
        children = [b for b in boxes.values() if b.name.startswith(name + "/")]
        attrs: list[str] = []
        extra = b""
        if subscribed_only and name not in subs:
            if name in childinfo:
                extra = b' ("CHILDINFO" ("SUBSCRIBED"))'
            else:
                continue
        if "SPECIAL-USE" in selection and (box is None or box.role not in ROLE_ATTRS):
            continue
        if box is None:
            attrs.append("\\NonExistent" if extended or s.rev2 else "\\Noselect")
        attrs.append("\\HasChildren" if children else "\\HasNoChildren")
        if box is not None and box.role in ROLE_ATTRS:
            attrs.append(ROLE_ATTRS[box.role])
        if name in subs and ("SUBSCRIBED" in returns or subscribed_only):
            attrs.append("\\Subscribed")
        line = (verb.encode() + b" (" + " ".join(attrs).encode() + b') "/" '
                + s.mailbox_out(name) + extra)
        s.untagged(line)
        if status and box is not None:
            _status_line(s, box, status)


@command("LSUB", AUTH)
async def lsub(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    reference = decode_name(r.astring(), s.utf8)
    r.sp()
    pattern = _pattern(s, r)
    r.end()
    subs = _subscriptions(s)
    existing = {b.name for b in _boxes(s)}
    rx = pattern_regex(reference + pattern)
    shown: set[str] = set()
    for name in sorted(subs):
        if rx.match(name):
            # A subscribed name whose mailbox is gone stays listed (RFC 3501 6.3.9),
            # marked \Noselect since it cannot be selected.
            attrs = b"" if name in existing else b"\\Noselect"
            s.untagged(b"LSUB (" + attrs + b') "/" ' + s.mailbox_out(name))
            shown.add(name)
            continue
        if pattern.endswith("%"):  # an unsubscribed level above a subscribed child
            parts = name.split("/")
            for i in range(len(parts) - 1, 0, -1):
                parent = "/".join(parts[:i])
                if rx.match(parent) and parent not in shown:
                    attrs = b"" if parent in subs and parent in existing else b"\\Noselect"
                    s.untagged(b"LSUB (" + attrs + b') "/" ' + s.mailbox_out(parent))
                    shown.add(parent)
                    break
    return Result()


# -- STATUS ------------------------------------------------------------------------------------
def _check_status_items(items: list[str]) -> None:
    if not items:
        raise Bad("STATUS needs at least one item")
    for item in items:
        if item not in STATUS_ITEMS:
            raise Bad(f"Unknown STATUS item {item[:30]}")


def _status_line(s: Session, box: Mailbox, items: list[str]) -> None:
    counts = s.server.store.read_now(lambda c: imapq.status(c, box.id))
    fresh = s.server.store.read_now(lambda c: mailq.get_mailbox_by_id(c, box.id)) or box
    values = {
        "MESSAGES": counts["messages"], "UNSEEN": counts["unseen"],
        "DELETED": counts["deleted"], "SIZE": counts["size"],
        "UIDNEXT": fresh.uidnext, "UIDVALIDITY": fresh.uidvalidity,
        "HIGHESTMODSEQ": fresh.highestmodseq,
        "APPENDLIMIT": s.server.config.limits.max_append,
    }
    floor = s.server.recent_floor.get(box.id)
    if "RECENT" in items:
        values["RECENT"] = 0 if floor is None else s.server.store.read_now(
            lambda c: c.execute("SELECT COUNT(*) FROM messages WHERE mailbox_id = ? AND uid > ?",
                                (box.id, floor)).fetchone()[0])
    body = " ".join(f"{i} {values[i]}" for i in items)
    s.untagged(b"STATUS " + s.mailbox_out(box.name) + b" (" + body.encode() + b")")


@command("STATUS", AUTH)
async def status(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    name = s.mailbox_arg(r)
    r.sp()
    items = [i.upper() for i in r.paren_atoms()]
    r.end()
    _check_status_items(items)
    if "HIGHESTMODSEQ" in items:
        s.enable_condstore()
    box = _get(s, name)
    if box is None:
        raise No("Mailbox does not exist", "NONEXISTENT")
    _status_line(s, box, items)
    return Result()


# -- QUOTA (RFC 9208) ----------------------------------------------------------------------------
def _quota_line(s: Session) -> bytes | None:
    assert s.account is not None
    account_id = s.account.id
    limit = s.server.store.read_now(lambda c: imapq.quota_bytes(c, account_id))
    if limit <= 0:
        return None
    used = s.server.store.read_now(lambda c: imapq.usage(c, account_id))
    return b'QUOTA "" (STORAGE %d %d)' % ((used + 1023) // 1024, limit // 1024)


@command("GETQUOTAROOT", AUTH)
async def getquotaroot(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    name = s.mailbox_arg(r)
    r.end()
    if _get(s, name) is None:
        raise No("Mailbox does not exist", "NONEXISTENT")
    line = _quota_line(s)
    if line is None:
        s.untagged(b"QUOTAROOT " + s.mailbox_out(name))
    else:
        s.untagged(b"QUOTAROOT " + s.mailbox_out(name) + b' ""')
        s.untagged(line)
    return Result()


@command("GETQUOTA", AUTH)
async def getquota(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    root = r.astring()
    r.end()
    line = _quota_line(s)
    if root != b"" or line is None:
        raise No("No such quota root", "NONEXISTENT")
    s.untagged(line)
    return Result()


@command("SETQUOTA", AUTH)
async def setquota(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    r.astring()
    r.sp()
    r.enter()
    while not r.take(b")"):
        r.atom()
        r.sp()
        r.number(2**63 - 1)
        r.take(b" ")
    r.depth -= 1
    r.end()
    raise No("Quotas are set by the administrator", "NOPERM")
