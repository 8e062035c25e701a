"""One IMAP session: states, dispatch, and telling the client about changes.

RFC 9051 section 3 (states), 5.5 (pipelining), 7.5.1 (when EXPUNGE may be
sent), 7.1 (response codes); RFC 3501 for IMAP4rev1 clients; RFC 5161
(ENABLE), RFC 7162 (CONDSTORE/QRESYNC change reporting).

The session reads one command at a time, runs its handler, sends the changes
other sessions made to the selected mailbox (whichever the command allows),
then the tagged result. Handlers raise `No`/`Bad`; anything unexpected
becomes a tagged NO and is logged, never a dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..store import imapq
from ..store.models import Account
from . import utf7, wire
from .parser import (
    FrameError,
    Limits,
    ParseError,
    RawCommand,
    Reader,
    SeqSet,
    read_command,
    split_command,
)
from .view import SelectedView, UidMap

if TYPE_CHECKING:
    from .server import ImapServer

log = logging.getLogger(__name__)

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-auth", "auth", "selected", "logout"
SYSTEM_FLAGS = frozenset({"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"})
MAX_NAME_BYTES = 1000
MAX_NAME_DEPTH = 32


class No(Exception):
    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.text, self.code = text, code


class Bad(No):
    pass


class Bye(Exception):
    """End the connection after sending `* BYE text`."""


@dataclass
class Result:
    text: str = "completed"
    code: str = ""
    status: str = "OK"


class Conn(Protocol):
    """What a session needs from its connection (server.Connection implements it)."""

    peer_ip: str
    secure: bool
    tls_available: bool
    compressed: bool

    async def read_line(self, limit: int) -> tuple[bytes, bool]: ...
    async def read_exact(self, n: int) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def start_tls(self) -> None: ...
    def start_compress(self) -> None: ...
    def wait_readable(self) -> asyncio.Future[None]: ...


class RecorderLike(Protocol):
    def new_trace(self, kind: str, parent: str = "", **summary: Any) -> str: ...
    def event(self, trace_id: str, kind: str, **data: Any) -> None: ...


Handler = Callable[["Session", str, Reader, bool], Awaitable[Result | None]]


@dataclass
class CommandSpec:
    handler: Handler
    states: tuple[str, ...]
    uid_ok: bool = False
    expunge_ok: bool = True   # may untagged EXPUNGE be sent at the end


COMMANDS: dict[str, CommandSpec] = {}
ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
AUTH = (AUTHENTICATED, SELECTED)
SEL = (SELECTED,)


def command(name: str, states: tuple[str, ...], uid_ok: bool = False,
            expunge_ok: bool = True) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = CommandSpec(fn, states, uid_ok, expunge_ok)
        return fn
    return register


@dataclass
class Session:
    server: ImapServer
    conn: Conn
    state: str = NOT_AUTHENTICATED
    account: Account | None = None
    view: SelectedView | None = None
    enabled: set[str] = field(default_factory=set)
    trace_id: str = ""
    failed_logins: int = 0
    last_active: float = field(default_factory=time.monotonic)
    busy: bool = False
    in_idle: bool = False
    _out: list[bytes] = field(default_factory=list)
    _out_size: int = 0
    _hub_event: asyncio.Event | None = None
    _polled: float = 0.0

    # -- output -----------------------------------------------------------------
    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 3.1): the first one while a mailbox is
        selected also reports the mailbox's HIGHESTMODSEQ, as SELECT would have."""
        if "CONDSTORE" in self.enabled:
            return
        self.enabled.add("CONDSTORE")
        if self.view is not None:
            self.untagged(f"OK [HIGHESTMODSEQ {self.view.modseq}] Highest")

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    async def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            self.conn.write(data)
        await self.conn.drain()

    def take_output(self) -> bytes:
        """The pending output, removed from the buffer (the caller writes it)."""
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return data

    async def maybe_flush(self) -> None:
        """Flush once enough output has piled up (keeps big FETCHes in bounded memory)."""
        if self._out_size >= 256 * 1024:
            await self.flush()

    def untagged(self, text: str | bytes) -> None:
        self.send(b"* " + (text.encode() if isinstance(text, str) else text) + b"\r\n")

    def tagged(self, tag: str, status: str, text: str, code: str = "") -> None:
        code_part = f"[{code}] " if code else ""
        self.send(f"{tag} {status} {code_part}{text}\r\n".encode("utf-8", "replace"))

    # -- main loop ------------------------------------------------------------------
    async def run(self) -> None:
        self.trace_id = self.server.recorder.new_trace("imap", ip=self.conn.peer_ip)
        self.server.recorder.event(self.trace_id, "imap.connect", ip=self.conn.peer_ip,
                                   tls=self.conn.secure)
        caps = " ".join(self.server.capabilities(self))
        self.untagged(f"OK [CAPABILITY {caps}] {self.server.config.hostname} keepmail IMAP ready")
        await self.flush()
        try:
            while self.state != LOGOUT:
                await self.one_command()
        except Bye as exc:
            self.untagged(f"BYE {exc}")
            await self.flush()
        finally:
            self.close_view()
            self.server.recorder.event(self.trace_id, "imap.disconnect",
                                       account=self.account.address if self.account else "")

    async def one_command(self) -> None:
        self.busy = False
        limits: Limits = self.server.config.limits

        async def cont(data: bytes) -> None:
            self.send(data)
            await self.flush()
        try:
            raw = await read_command(self.conn, limits, cont)
        except FrameError as exc:
            await self._frame_error(exc)
            return
        self.busy = True
        self.last_active = time.monotonic()
        await self.execute(raw)

    async def _frame_error(self, exc: FrameError) -> None:
        tag = exc.tag.decode("ascii", "replace")
        if exc.close:
            raise Bye(exc.text)
        status = "NO" if exc.no else "BAD"
        if tag and all(c.isprintable() and c not in " *+" for c in tag):
            self.tagged(tag, status, exc.text, exc.code)
        else:
            self.untagged(f"BAD {exc.text}")
        await self.flush()

    async def execute(self, raw: RawCommand) -> None:
        try:
            tag, name, reader = split_command(raw)
        except ParseError as exc:
            tag = raw.tag.decode("ascii", "replace")
            ok_tag = tag and all(c.isprintable() and c not in " *+(){%\"\\" for c in tag)
            if ok_tag:
                self.tagged(tag, "BAD", str(exc))
            else:
                self.untagged(f"BAD {exc}")
            await self.flush()
            return
        uid = False
        if name == "UID":
            uid = True
            try:
                reader.sp()
                name = "UID " + reader.atom().upper()
            except ParseError:
                name = "UID"
        spec = COMMANDS.get(name)
        if spec is None:
            self.tagged(tag, "BAD", f"Unknown command {name[:40]}")
            await self.flush()
            return
        if self.state not in spec.states:
            self.tagged(tag, "BAD", f"{name} not allowed in this state")
            await self.flush()
            return
        await self._run(spec, tag, name, reader, uid)

    async def _run(self, spec: CommandSpec, tag: str, name: str, reader: Reader,
                   uid: bool) -> None:
        try:
            result = await spec.handler(self, tag, reader, uid)
        except Bad as exc:
            result = Result(exc.text, exc.code, "BAD")
        except No as exc:
            result = Result(exc.text, exc.code, "NO")
        except ParseError as exc:
            result = Result(f"Syntax error: {exc}", "", "BAD")
        except (Bye, ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("IMAP %s failed", name)
            result = Result("Internal error; the administrator can see what happened",
                            "SERVERBUG", "NO")
        if result is None:  # the handler answered itself (LOGOUT, STARTTLS)
            await self.flush()
            return
        if self.state == SELECTED and self.view is not None and name not in ("IDLE",):
            await self.report_changes(allow_expunge=spec.expunge_ok or uid)
        text = result.text
        if result.status == "OK" and text == "completed":
            text = f"{name.split(' ')[-1]} completed"
        self.tagged(tag, result.status, text, result.code)
        await self.flush()

    # -- selected mailbox ---------------------------------------------------------------
    def close_view(self) -> None:
        if self.view is not None and self._hub_event is not None:
            self.server.store.hub.unsubscribe(self.view.mailbox_id, self._hub_event)
        self.view = None
        self._hub_event = None
        if self.state == SELECTED:
            self.state = AUTHENTICATED

    def open_view(self, view: SelectedView) -> None:
        self.close_view()
        self.view = view
        self._hub_event = self.server.store.hub.subscribe(view.mailbox_id)
        self.state = SELECTED

    def changed_event(self) -> asyncio.Event | None:
        return self._hub_event

    async def report_changes(self, allow_expunge: bool, force: bool = False) -> None:
        """Tell the client what other sessions changed (RFC 9051 7.5.1, RFC 7162 3.2.10)."""
        view = self.view
        event = self._hub_event
        if view is None:
            return
        stale = time.monotonic() - self._polled > 30
        if event is not None and not event.is_set() and not force and not stale:
            if allow_expunge and view.pending_gone:
                self._announce_gone(view, view.pending_gone)
                view.pending_gone = set()
            return
        if event is not None:
            event.clear()
        self._polled = time.monotonic()
        found = self.server.store.read_now(
            lambda c: imapq.changes(c, view.mailbox_id, view.modseq))
        if found is None:
            raise Bye("Mailbox was deleted")
        highest, changed, gone = found
        self._report_new_and_flags(view, changed)
        gone_known = {u for u in gone if u in view.uids} | view.pending_gone
        if gone_known and allow_expunge:
            self._announce_gone(view, gone_known)
            view.pending_gone = set()
        else:
            view.pending_gone = gone_known
        view.modseq = max(view.modseq, highest)
        view.own_modseqs = {m for m in view.own_modseqs if m > view.modseq}

    def _report_new_and_flags(self, view: SelectedView, changed: list[Any]) -> None:
        before = len(view.uids)
        updates = []
        new_keywords: set[str] = set()
        for msg in changed:
            new_keywords.update(f for f in msg.flags if not f.startswith("\\"))
            if msg.uid > view.uids.last:
                view.uids.append(msg.uid)
                view.uidnext = max(view.uidnext, msg.uid + 1)
            elif msg.uid in view.uids and msg.modseq not in view.own_modseqs:
                updates.append(msg)
        if new_keywords - view.keywords:
            view.keywords |= new_keywords
            self.untagged(b"FLAGS " + wire.flags(SYSTEM_FLAGS | view.keywords))
        if len(view.uids) != before:
            self._claim_recent(view, before)
            self.untagged(f"{len(view.uids)} EXISTS")
            if not self.rev2:
                self.untagged(f"{view.recent_count()} RECENT")
        for msg in updates:
            self.untagged(self.flags_fetch(view, msg))

    def _claim_recent(self, view: SelectedView, before: int) -> None:
        if view.readonly:
            return
        floor = self.server.recent_floor.get(view.mailbox_id, 0)
        last = view.uids.last
        if last > floor:
            view.recent.append((floor + 1, last))
            self.server.recent_floor[view.mailbox_id] = last

    def announce_keywords(self, flags: Any) -> None:
        """Send FLAGS (and PERMANENTFLAGS) before any response shows a keyword this session
        has not been told of yet (RFC 9051 7.3.5: FLAGS lists the flags in use)."""
        view = self.view
        if view is None:
            return
        new = {f for f in flags if not f.startswith("\\")} - view.keywords
        if not new:
            return
        view.keywords |= new
        self.untagged(b"FLAGS " + wire.flags(SYSTEM_FLAGS | view.keywords))
        if not view.readonly:
            self.untagged(b"OK [PERMANENTFLAGS " + wire.flags(SYSTEM_FLAGS | view.keywords
                                                              | {"\\*"}) + b"] Flags permitted")

    def flags_fetch(self, view: SelectedView, msg: Any, with_uid: bool = True) -> bytes:
        self.announce_keywords(msg.flags)
        seq = view.uids.seq_of(msg.uid)
        flags = set(msg.flags)
        if view.is_recent(msg.uid) and not self.rev2:
            flags.add("\\Recent")
        items = [b"UID %d" % msg.uid] if with_uid else []
        items.append(b"FLAGS " + wire.flags(flags))
        if self.condstore:
            items.append(b"MODSEQ (%d)" % msg.modseq)
        return b"%d FETCH (" % seq + b" ".join(items) + b")"

    def _announce_gone(self, view: SelectedView, uids: set[int]) -> None:
        present = sorted(u for u in uids if u in view.uids)
        if not present:
            return
        if self.qresync:
            self.untagged(b"VANISHED " + wire.seq_set(present))
        else:
            for uid in reversed(present):
                self.untagged(f"{view.uids.seq_of(uid)} EXPUNGE")
        view.uids.remove(present)
        view.saved.difference_update(present)

    # -- helpers shared by command modules ------------------------------------------------------
    def mailbox_arg(self, r: Reader) -> str:
        """A mailbox name argument, decoded and checked (never a path trick)."""
        return normalize_name(decode_name(r.astring(), self.utf8))

    def mailbox_out(self, name: str) -> bytes:
        return wire.mailbox(name, self.utf8)

    def require_view(self) -> SelectedView:
        if self.view is None:
            raise Bad("No mailbox selected")
        return self.view

    def uids_for(self, r: Reader, uid: bool) -> list[int]:
        return self.resolve(r.sequence_set(), uid)

    def resolve(self, seqs: SeqSet, uid: bool) -> list[int]:
        """UIDs named by a sequence set (by number or by UID) in the current view."""
        view = self.require_view()
        if seqs.saved:
            return sorted(u for u in view.saved if u in view.uids)
        count = len(view.uids)
        if uid:
            if count == 0:
                return []
            out: set[int] = set()
            for rng in seqs.ranges:
                lo, hi = rng.resolve(view.uids.last)
                out.update(view.uids.uids_in(lo, hi))
            return sorted(out)
        for rng in seqs.ranges:
            lo, hi = rng.resolve(count)
            if count == 0 or lo < 1 or hi > count:
                raise Bad("Invalid message sequence number")
        return [view.uids.uid_of(n) for n in seqs.expand(count, count)]

    def new_view(self, mailbox: Any, readonly: bool) -> SelectedView:
        snap = self.server.store.read_now(lambda c: imapq.snapshot(c, mailbox.id))
        if snap is None:
            raise No("Mailbox does not exist", "NONEXISTENT")
        highest, uidnext, uids = snap
        view = SelectedView(mailbox.id, mailbox.name, readonly, mailbox.uidvalidity,
                            UidMap(uids), highest, uidnext)
        floor = self.server.recent_floor.setdefault(mailbox.id, uidnext - 1)
        if view.uids.last > floor:
            view.recent.append((floor + 1, view.uids.last))
            if not readonly:   # EXAMINE shows \Recent but leaves it for the next SELECT
                self.server.recent_floor[mailbox.id] = view.uids.last
        return view

    def note_added(self, mailbox_id: int, uids: list[int]) -> None:
        """Messages this session put into a mailbox (APPEND, COPY, MOVE) are \\Recent for the
        next session to select it, also when no session has opened it since start-up."""
        if uids:
            self.server.recent_floor.setdefault(mailbox_id, min(uids) - 1)


def decode_name(data: bytes, utf8: bool) -> str:
    if utf8 or not data.isascii():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Bad("Mailbox name is not valid UTF-8") from exc
        if not utf8 and "&" in text:
            raise Bad("Mailbox name mixes UTF-8 and modified UTF-7")
        return text
    try:
        return utf7.decode(data.decode("ascii"))
    except utf7.Utf7Error as exc:
        # The command is well-formed (an astring); only the name is unusable: NO, not BAD.
        raise No(f"Mailbox name is not valid modified UTF-7: {exc}", "CANNOT") from exc


def normalize_name(name: str, creating: bool = False) -> str:
    """Check a mailbox name; INBOX is case-insensitive, also as a parent."""
    if creating and name.endswith("/"):
        name = name[:-1]
    if not name:
        raise No("Empty mailbox name", "CANNOT")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise No("Mailbox name too long", "LIMIT")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise No("Control characters in mailbox name", "CANNOT")
    parts = name.split("/")
    if len(parts) > MAX_NAME_DEPTH:
        raise No("Mailbox hierarchy too deep", "LIMIT")
    for p in parts:
        if p in ("", ".", ".."):
            raise No("Mailbox name has an empty, '.' or '..' component", "CANNOT")
    if creating and any(c in name for c in "*%"):
        raise No("Wildcards are not allowed in mailbox names", "CANNOT")
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return "/".join(parts)
