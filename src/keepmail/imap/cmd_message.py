"""Message commands: FETCH, STORE, SEARCH, SORT, THREAD, COPY, MOVE, EXPUNGE, APPEND.

RFC 9051 sections 6.3.12 (APPEND), 6.4.3-6.4.9; RFC 4315 (UIDPLUS: UID
EXPUNGE, APPENDUID, COPYUID); RFC 6851 (MOVE); RFC 3502 (MULTIAPPEND);
RFC 4731 (ESEARCH); RFC 5182 (SEARCHRES); RFC 5256 (SORT, THREAD);
RFC 7162 (CONDSTORE: UNCHANGEDSINCE, MODIFIED; QRESYNC: VANISHED);
RFC 6855 (UTF8=ACCEPT APPEND); RFC 7889 (APPENDLIMIT); RFC 9208 (OVERQUOTA).

Moving a message into Junk, or out of Junk to anywhere but Trash, records a
spam/ham training event in the same transaction as the move.
"""

from __future__ import annotations

import asyncio
import calendar
import sqlite3
import time
from collections.abc import Callable, Iterable

from ..store import imapq
from ..store import mail as mailq
from ..store.models import Mailbox
from . import fetch, mime, msgcache, search, sort_thread, wire
from .parser import ParseError, Reader, SeqSet
from .session import AUTH, SEL, SYSTEM_FLAGS, Bad, No, Result, Session, command
from .view import SelectedView

_PAST_END = 1 << 64     # above any UID
BATCH = 200            # messages per reader-thread round trip in FETCH
_Batch = tuple[list[bytes], int, set[str]]    # FETCH lines, messages found, their flags
MAX_APPEND_MESSAGES = 1000


# -- FETCH -----------------------------------------------------------------------------------
@command("FETCH", SEL, expunge_ok=False)
@command("UID FETCH", SEL, uid_ok=True)
async def fetch_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    view = s.require_view()
    r.sp()
    seqs = r.sequence_set()
    uids = s.resolve(seqs, uid)
    r.sp()
    items = fetch.parse_items(r)
    changedsince, vanished = _fetch_modifiers(s, r, uid)
    r.end()
    if vanished and changedsince is not None:
        _vanished_earlier(s, view, seqs, changedsince)
    if any(i.name == "MODSEQ" for i in items) or changedsince is not None:
        s.enable_condstore()
    seen_now: set[int] = set()
    if not view.readonly and any(i.sets_seen for i in items):
        seen_now = await _mark_seen(s, view, uids)
    store = s.server.store
    cache = s.server.cache
    missing = False
    ctx = fetch.FetchContext(items, view.uids.seq_of, view.is_recent, s.utf8, uid,
                             changedsince is not None, s.rev2, seen_now)
    renderer = fetch.Renderer(ctx)
    needs_content = any(i.needs_content for i in items)
    wants_flags = any(i.name == "FLAGS" for i in items) or bool(seen_now)
    keywords: set[str] = set()

    def work_on(part: list[int]) -> Callable[[sqlite3.Connection], _Batch]:
        def work(conn: sqlite3.Connection) -> _Batch:
            msgs = imapq.fetch_rows(conn, view.mailbox_id, part)
            if changedsince is not None:
                msgs = [m for m in msgs if m.modseq > changedsince]
            loader = None
            if needs_content:
                loader = msgcache.Loader(conn, store.cipher, cache)
                loader.plan([m.blob_id for m in msgs], [m.size for m in msgs])
            render = renderer.render
            cipher = store.cipher
            lines = [render(conn, cipher, m, loader) for m in msgs]
            found = {f for m in msgs for f in m.flags} if wants_flags else set()
            return lines, len(msgs), found
        return work

    for start in range(0, len(uids), BATCH):
        part = uids[start:start + BATCH]
        try:
            if needs_content:
                lines, found, kw = await store.read(work_on(part))
            else:
                lines, found, kw = store.read_now(work_on(part))
        except fetch.UnknownCte as exc:
            raise No(f"Unknown Content-Transfer-Encoding {exc}", "UNKNOWN-CTE") from None
        if changedsince is None and found < len(part):
            missing = True
        keywords |= kw
        s.announce_keywords(keywords)   # another session's new keyword: FLAGS first
        for line in lines:
            s.send(line)
        if start + BATCH < len(uids):
            # Out with each batch: the client reads it while the next is built.
            await s.flush()
    if missing and not uid:
        return Result("Some messages were expunged by another session", "EXPUNGEISSUED", "NO")
    return Result()


def _fetch_modifiers(s: Session, r: Reader, uid: bool) -> tuple[int | None, bool]:
    if not r.take(b" "):
        return None, False
    changedsince: int | None = None
    vanished = False
    r.enter()
    while not r.take(b")"):
        name = r.atom().upper()
        if name == "CHANGEDSINCE":
            r.sp()
            changedsince = r.number(2**63 - 1)
        elif name == "VANISHED":
            if not uid or not s.qresync:
                raise Bad("VANISHED needs UID FETCH with QRESYNC enabled")
            vanished = True
        else:
            raise Bad(f"Unknown FETCH modifier {name[:30]}")
        r.take(b" ")
    r.depth -= 1
    if vanished and changedsince is None:
        raise Bad("VANISHED needs CHANGEDSINCE")
    return changedsince, vanished


def _vanished_earlier(s: Session, view: SelectedView, seqs: SeqSet, since: int) -> None:
    """RFC 7162 3.2.6: expunged UIDs in the requested set, changed since `since`."""
    gone = s.server.store.read_now(lambda c: imapq.expunged_since(c, view.mailbox_id, since))
    if seqs.saved:
        return
    star = max([view.uids.last, *gone])
    wanted = [u for u in gone if seqs.contains(u, star)]
    if wanted:
        s.untagged(b"VANISHED (EARLIER) " + wire.seq_set(wanted))


async def _mark_seen(s: Session, view: SelectedView, uids: list[int]) -> set[int]:
    def txn(conn: sqlite3.Connection) -> list[imapq.FlagRow]:
        changed, _f, _c = imapq.store_flags(conn, view.mailbox_id, uids, ["\\Seen"], "add")
        return changed
    changed = await s.server.store.change([view.mailbox_id], txn)
    for m in changed:
        view.own_modseqs.add(m.modseq)
    return {m.uid for m in changed}


# -- STORE ------------------------------------------------------------------------------------
def parse_flags(r: Reader) -> list[str]:
    if r.peek() == ord("("):
        raw = r.flag_list()
    else:
        raw = [r.flag()]
        while r.take(b" "):
            raw.append(r.flag())
    return [check_flag(f) for f in raw]


def check_flag(flag: str) -> str:
    if flag.startswith("\\"):
        for system in SYSTEM_FLAGS:
            if system.lower() == flag.lower():
                return system
        raise Bad(f"Unknown system flag {flag[:40]}")
    return flag


@command("STORE", SEL, expunge_ok=False)
@command("UID STORE", SEL, uid_ok=True)
async def store_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    view = s.require_view()
    r.sp()
    uids = s.uids_for(r, uid)
    r.sp()
    unchangedsince: int | None = None
    if r.peek() == ord("("):
        r.enter()
        r.expect(b"UNCHANGEDSINCE ")
        unchangedsince = r.number(2**63 - 1)
        r.leave()
        r.sp()
        s.enable_condstore()
    op = r.atom().upper()
    modes = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}
    silent = op.endswith(".SILENT")
    mode = modes.get(op.removesuffix(".SILENT"))
    if mode is None:
        raise Bad(f"Unknown STORE operation {op[:30]}")
    r.sp()
    flags = [f for f in parse_flags(r) if f != "\\Recent"]
    r.end()
    if view.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")

    def txn(conn: sqlite3.Connection
            ) -> tuple[list[imapq.FlagRow], list[int], list[imapq.FlagRow]]:
        return imapq.store_flags(conn, view.mailbox_id, uids, flags, mode, unchangedsince)
    changed, failed, current = await s.server.store.change([view.mailbox_id], txn)
    for m in changed:
        view.own_modseqs.add(m.modseq)
    s.announce_keywords(flags)
    changed_uids = {m.uid for m in changed} if silent and s.condstore else set()
    failed_set = set(failed)
    if silent and not s.condstore:
        current = []    # nothing to report per message
    for m in current:
        if m.uid in failed_set:
            continue
        if silent and not (s.condstore and m.uid in changed_uids):
            continue
        if silent:  # RFC 7162 3.1.3: MODSEQ still reported for changed messages
            s.untagged(b"%d FETCH (UID %d MODSEQ (%d))" % (view.uids.seq_of(m.uid), m.uid,
                                                          m.modseq))
        else:
            s.untagged(s.flags_fetch(view, m, with_uid=uid or s.condstore))
    if failed:
        numbers = failed if uid else [view.uids.seq_of(u) for u in failed]
        return Result("Conditional STORE failed", "MODIFIED " + wire.seq_set(numbers).decode())
    return Result()


# -- SEARCH / SORT / THREAD ------------------------------------------------------------------------
def _candidates(s: Session, view: SelectedView, conn: sqlite3.Connection,
                uids: Iterable[int] | None = None,
                narrow: search.Narrow | None = None) -> list[search.Candidate]:
    """The view's messages (or some of them) for SEARCH, SORT and THREAD.

    One query reads the mailbox's rows; headers and bytes are decrypted only
    when a key needs them, in batches, through the shared header cache. With
    `narrow` (search.narrow_of a predicate), the messages the shared text index
    rules out are left out before they become Candidates.
    """
    loader = msgcache.Loader(conn, s.server.store.cipher, s.server.cache)
    is_recent = view.is_recent
    wanted = None if uids is None else set(uids)
    has_recent = bool(view.recent)
    flag_sets: dict[str, frozenset[str]] = {}
    rows = []
    # Rows and the view's UIDs both ascend: walk them together for sequence numbers.
    known = iter(view.uids)
    seq, at = 0, -1
    for row in imapq.message_rows(conn, view.mailbox_id):
        uid = row[0]
        while at < uid:
            at = next(known, _PAST_END)
            seq += 1
        if at != uid or (wanted is not None and uid not in wanted):
            continue
        rows.append((seq, row))
    if narrow is not None and rows:
        keep = narrow(s.server.cache.text_index(tuple(row[5] for _seq, row in rows)))
        if keep is not None:
            rows = [rows[i] for i in sorted(keep)]
    out = []
    for seq, (uid, flags, internaldate, size, modseq, blob_id) in rows:
        flag_set = flag_sets.get(flags)
        if flag_set is None:
            flag_set = flag_sets[flags] = frozenset(flags.split())
        out.append(search.Candidate(
            seq, uid, flag_set, internaldate, size, modseq,
            has_recent and is_recent(uid), None, blob_id, loader))   # positional: cheaper
    loader.plan([c.blob_id for c in out], [c.size for c in out])
    return out


def _search_context(view: SelectedView) -> search.Context:
    return search.Context(len(view.uids), view.uids.last, lambda: view.saved,
                          view.uids.uid_of)


async def _run_search(s: Session, view: SelectedView, ctx: search.Context, pred: search.Pred
                      ) -> list[search.Candidate]:
    def work(conn: sqlite3.Connection) -> list[search.Candidate]:
        return [c for c in _candidates(s, view, conn, narrow=search.narrow_of(pred)) if pred(c)]
    if ctx.needs_content:
        return await s.server.store.read(work)
    return s.server.store.read_now(work)


@command("SEARCH", SEL, expunge_ok=False)
@command("UID SEARCH", SEL, uid_ok=True)
async def search_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    view = s.require_view()
    r.sp()
    ctx = _search_context(view)
    try:
        returns, pred = search.parse_search(r, ctx)
    except search.BadCharset:
        raise No("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)") from None
    if ctx.uses_modseq:
        s.enable_condstore()
    found = await _run_search(s, view, ctx, pred)
    numbers = [c.uid if uid else c.seq for c in found]
    modseq = max((c.modseq for c in found), default=0) if ctx.uses_modseq else None
    if returns is None and not s.rev2:
        line = b"SEARCH" + b"".join(b" %d" % n for n in numbers)
        if modseq:
            line += b" (MODSEQ %d)" % modseq
        s.untagged(line)
        return Result()
    _esearch(s, tag, view, uid, returns or [], found, numbers, modseq)
    return Result()


def _esearch(s: Session, tag: str, view: SelectedView, uid: bool, returns: list[str],
             found: list[search.Candidate], numbers: list[int], modseq: int | None) -> None:
    opts = set(returns) or {"ALL"}
    if opts == {"SAVE"}:
        view.saved = {c.uid for c in found}
        return
    if "SAVE" in opts:
        if opts & {"ALL", "COUNT"} or not found:
            view.saved = {c.uid for c in found}
        else:
            keep = set()
            if "MIN" in opts:
                keep.add(min(found, key=lambda c: c.uid).uid)
            if "MAX" in opts:
                keep.add(max(found, key=lambda c: c.uid).uid)
            view.saved = keep
    if modseq and found and not opts & {"ALL", "COUNT"}:
        # RFC 7162 3.1.5 / RFC 4731 3.2: the MODSEQ of the messages returned, i.e. of the
        # MIN and/or MAX message only.
        def key(c: search.Candidate) -> int:
            return c.uid if uid else c.seq
        picked = ([min(found, key=key)] if "MIN" in opts else []) + \
                 ([max(found, key=key)] if "MAX" in opts else [])
        if picked:
            modseq = max(c.modseq for c in picked)
    parts = [b'ESEARCH (TAG "' + tag.encode() + b'")']
    if uid:
        parts.append(b"UID")
    if numbers:
        if "MIN" in opts:
            parts.append(b"MIN %d" % min(numbers))
        if "MAX" in opts:
            parts.append(b"MAX %d" % max(numbers))
    if "COUNT" in opts:
        parts.append(b"COUNT %d" % len(numbers))
    if numbers and "ALL" in opts:
        parts.append(b"ALL " + wire.seq_set(numbers))
    if modseq and numbers:
        parts.append(b"MODSEQ %d" % modseq)
    s.untagged(b" ".join(parts))


def _charset(r: Reader) -> None:
    charset = r.astring().decode("ascii", "replace").upper()
    if charset not in search.CHARSETS:
        raise No("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")


@command("SORT", SEL, expunge_ok=False)
@command("UID SORT", SEL, uid_ok=True)
async def sort_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    view = s.require_view()
    r.sp()
    criteria = sort_thread.parse_sort_criteria(r)
    r.sp()
    _charset(r)
    r.sp()
    ctx = _search_context(view)
    pred = search.Program(r, ctx).parse_all()
    r.end()

    def work(conn: sqlite3.Connection) -> list[search.Candidate]:
        found = [c for c in _candidates(s, view, conn, narrow=search.narrow_of(pred)) if pred(c)]
        return sort_thread.sort_messages(found, criteria)
    ordered = await s.server.store.read(work)
    s.untagged(b"SORT" + b"".join(b" %d" % (c.uid if uid else c.seq) for c in ordered))
    return Result()


@command("THREAD", SEL, expunge_ok=False)
@command("UID THREAD", SEL, uid_ok=True)
async def thread_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    view = s.require_view()
    r.sp()
    algorithm = r.atom().upper()
    if algorithm not in sort_thread.THREAD_ALGORITHMS:
        raise Bad(f"Unknown threading algorithm {algorithm[:30]}")
    r.sp()
    _charset(r)
    r.sp()
    ctx = _search_context(view)
    pred = search.Program(r, ctx).parse_all()
    r.end()

    def number(c: search.Candidate) -> int:
        return c.uid if uid else c.seq

    def work(conn: sqlite3.Connection) -> bytes:
        found = [c for c in _candidates(s, view, conn, narrow=search.narrow_of(pred)) if pred(c)]
        if algorithm == "ORDEREDSUBJECT":
            trees = sort_thread.ordered_subject(found, number)
        else:
            trees = sort_thread.references(found, number)
        return sort_thread.render_threads(trees)
    s.untagged(b"THREAD " + await s.server.store.read(work))
    return Result()


# -- COPY / MOVE -----------------------------------------------------------------------------------
def _training(source: Mailbox | None, dest: Mailbox) -> bool | None:
    """True: the user says spam; False: says ham; None: no judgement."""
    src_role = source.role if source else None
    if dest.role == "junk" and src_role != "junk":
        return True
    if src_role == "junk" and dest.role not in ("junk", "trash"):
        return False
    return None


async def _check_quota(s: Session, extra: int) -> None:
    assert s.account is not None
    account_id = s.account.id
    limit = s.server.store.read_now(lambda c: imapq.quota_bytes(c, account_id))
    if limit > 0:
        used = s.server.store.read_now(lambda c: imapq.usage(c, account_id))
        if used + extra > limit:
            raise No("Mailbox quota exceeded", "OVERQUOTA")


async def _copy_or_move(s: Session, r: Reader, uid: bool, move: bool) -> Result:
    view = s.require_view()
    r.sp()
    uids = s.uids_for(r, uid)
    r.sp()
    dest_name = s.mailbox_arg(r)
    r.end()
    if move and view.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    assert s.account is not None
    account_id = s.account.id
    store = s.server.store
    dest = _existing_mailbox(s, dest_name, "Target mailbox")
    source = store.read_now(lambda c: mailq.get_mailbox_by_id(c, view.mailbox_id))
    uids = [u for u in uids if u not in view.pending_gone]
    if not uids:
        return Result("completed" if uid else "No messages")
    size = store.read_now(lambda c: sum(m.size for m in mailq.get_messages(
        c, view.mailbox_id, uids)))
    await _check_quota(s, size)
    judgement = _training(source, dest)

    def txn(conn: sqlite3.Connection) -> list[tuple[int, int]]:
        msgs = mailq.get_messages(conn, view.mailbox_id, uids)
        pairs = mailq.copy_messages(conn, view.mailbox_id, [m.uid for m in msgs], dest.id)
        if move:
            mailq.expunge(conn, view.mailbox_id, [m.uid for m in msgs])
        if judgement is not None:
            for m in msgs:
                mailq.record_training(conn, account_id, m.blob_id, judgement, "imap-move",
                                      message_id=m.message_id)
        return pairs
    pairs = await store.change({view.mailbox_id, dest.id}, txn)
    if not pairs:
        return Result()
    s.note_added(dest.id, [p[1] for p in pairs])
    code = (f"COPYUID {dest.uidvalidity} {wire.seq_set_ordered([p[0] for p in pairs]).decode()}"
            f" {wire.seq_set_ordered([p[1] for p in pairs]).decode()}")
    if move:
        s.untagged(f"OK [{code}] Moved")
        _announce_own_expunge(s, view, [p[0] for p in pairs])
        return Result()
    return Result("completed", code)


def _announce_own_expunge(s: Session, view: SelectedView, uids: list[int]) -> None:
    present = sorted(u for u in uids if u in view.uids)
    if not present:
        return
    if s.qresync:
        s.untagged(b"VANISHED " + wire.seq_set(present))
    else:
        for u in reversed(present):
            s.untagged(f"{view.uids.seq_of(u)} EXPUNGE")
    view.uids.remove(present)
    view.saved.difference_update(present)
    view.pending_gone.difference_update(present)


@command("COPY", SEL, expunge_ok=False)
@command("UID COPY", SEL, uid_ok=True)
async def copy_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    return await _copy_or_move(s, r, uid, move=False)


@command("MOVE", SEL, expunge_ok=True)
@command("UID MOVE", SEL, uid_ok=True)
async def move_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    return await _copy_or_move(s, r, uid, move=True)


# -- EXPUNGE ------------------------------------------------------------------------------------------
async def expunge_deleted(s: Session, view: SelectedView, subset: list[int] | None,
                          announce: bool = True) -> list[int]:
    known = list(view.uids) if subset is None else [u for u in subset if u in view.uids]

    def txn(conn: sqlite3.Connection) -> list[int]:
        msgs = mailq.get_messages(conn, view.mailbox_id, known)
        doomed = [m.uid for m in msgs if "\\Deleted" in m.flags]
        return mailq.expunge(conn, view.mailbox_id, doomed)
    gone = await s.server.store.change([view.mailbox_id], txn)
    if announce:
        _announce_own_expunge(s, view, gone)
    return gone


@command("EXPUNGE", SEL)
async def expunge_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    view = s.require_view()
    r.end()
    if view.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    await expunge_deleted(s, view, None)
    return _modseq_result(s, view)


@command("UID EXPUNGE", SEL, uid_ok=True)
async def uid_expunge_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    view = s.require_view()
    r.sp()
    uids = s.uids_for(r, True)
    r.end()
    if view.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    await expunge_deleted(s, view, uids)
    return _modseq_result(s, view)


def _modseq_result(s: Session, view: SelectedView) -> Result:
    if not s.condstore:
        return Result()
    highest = s.server.store.read_now(lambda c: imapq.highestmodseq(c, view.mailbox_id))
    return Result("completed", f"HIGHESTMODSEQ {highest}")


# -- APPEND -----------------------------------------------------------------------------------------
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                        "Sep", "Oct", "Nov", "Dec"), 1)}


def parse_date_time(text: bytes) -> float:
    """`dd-Mon-yyyy hh:mm:ss +zzzz` (RFC 9051 date-time) to a timestamp."""
    try:
        s = text.decode("ascii")
        date, clock, zone = s.split(" ") if not s.startswith(" ") else s[1:].split(" ")
        day, mon, year = date.split("-")
        hh, mm, ss = (int(x) for x in clock.split(":"))
        if len(zone) != 5 or zone[0] not in "+-" or len(year) != 4 or len(clock) != 8:
            raise ValueError
        offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * 60 * (1 if zone[0] == "+" else -1)
        stamp = calendar.timegm((int(year), _MONTHS[mon.capitalize()], int(day), hh, mm, ss))
        if not (1 <= int(day) <= 31 and hh < 24 and mm < 60 and ss < 61):
            raise ValueError
        return float(stamp - offset)
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise Bad("Invalid date-time") from exc


def _one_append(r: Reader) -> tuple[list[str], float | None, bytes]:
    flags: list[str] = []
    when: float | None = None
    if r.peek() == ord("("):
        flags = [f for f in parse_flags(r) if f != "\\Recent"]
        r.sp()
    if r.peek() == 0x22:
        when = parse_date_time(r.string())
        r.sp()
    if r.take(b"UTF8 "):
        r.enter()
        if not r.is_binary_literal():
            raise ParseError("UTF8 APPEND needs a literal8")
        data = r.string()
        r.leave()
    else:
        data = r.string()
    return flags, when, data


@command("APPEND", AUTH)
async def append_cmd(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    name = s.mailbox_arg(r)
    messages = []
    while r.take(b" "):
        messages.append(_one_append(r))
        if len(messages) > MAX_APPEND_MESSAGES:
            raise No("Too many messages in one APPEND", "LIMIT")
    r.end()
    if not messages:
        raise Bad("APPEND needs a message")
    for _f, _w, data in messages:
        if not data:
            raise No("Cannot append an empty message")
        if len(data) > s.server.config.limits.max_append:
            raise No("Message too large", "TOOBIG")
    messages = [(f, w, await _storable(data)) for f, w, data in messages]
    store = s.server.store
    box = _existing_mailbox(s, name, "Mailbox")
    await _check_quota(s, sum(len(m[2]) for m in messages))
    sealed = [await store.seal(data) for _f, _w, data in messages]
    now = time.time()
    items = [(blob, frozenset(f), w or now) for blob, (f, w, _d) in zip(sealed, messages,
                                                                          strict=True)]
    new = await store.change([box.id], lambda c: imapq.append_sealed(c, box.id, items, now))
    s.note_added(box.id, list(new))
    s.server.recorder.event(s.trace_id, "imap.append", account=s.account.address,
                            mailbox=name, count=len(new))
    return Result("completed", f"APPENDUID {box.uidvalidity} {wire.seq_set(new).decode()}")


async def _storable(data: bytes) -> bytes:
    """What APPEND stores: parts holding NUL (sent in a literal8) become base64 (RFC 3516
    4.3), since no BODY[] or RFC822 literal could return them; anything else as sent."""
    if b"\x00" not in data:
        return data
    try:
        return await asyncio.to_thread(mime.encode_binary_parts, data)
    except mime.BinaryContent:
        raise No("Message has NUL bytes outside any body part", "UNKNOWN-CTE") from None


def _existing_mailbox(s: Session, name: str, what: str) -> Mailbox:
    """The logged-in account's mailbox `name`, or NO [TRYCREATE] (RFC 9051 6.3.12, 6.4.7)."""
    assert s.account is not None
    account_id = s.account.id
    box = s.server.store.read_now(lambda c: mailq.get_mailbox(c, account_id, name))
    if box is None:
        raise No(f"{what} does not exist", "TRYCREATE")
    return box
