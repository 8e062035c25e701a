"""Alerts: telling people when the abuse guard acts (never a silent drop).

Every alert goes three ways: a flight-recorder trace (kind "abuse"), a row in
`abuse_alerts` (the console lists them), and — when enabled — a short
message into the Inbox of every admin account and, for holds, of the user
concerned. Inbox delivery is best effort and asynchronous: an alert must
never slow down or fail the submission that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from ..store import abuse as db
from .base import Clock, NullRecorder, Persistence, RecorderLike, wall_clock

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger("keepmail.abuse")


@dataclass(frozen=True)
class Note:
    to: str
    subject: str
    body: str


class Alerter:
    def __init__(self, store: Store | None = None, recorder: RecorderLike | None = None, *,
                 clock: Clock = wall_clock, admin_inbox: bool = True, user_inbox: bool = True,
                 hostname: str = "localhost") -> None:
        self.store = store
        self.persist = Persistence(store)
        self.recorder = recorder or NullRecorder()
        self.clock = clock
        self.admin_inbox = admin_inbox
        self.user_inbox = user_inbox
        self.hostname = hostname
        self.sent: list[Note] = []          # what was put in inboxes (tests, simulations)
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, kind: str, account: str, ip: str, summary: str,
                 detail: dict[str, Any] | None = None, *, tell_user: bool = False) -> None:
        now = self.clock()
        detail = dict(detail or {})
        trace = self.recorder.new_trace("abuse", ip=ip, account=account, status=kind,
                                        detail=summary[:300])
        self.recorder.event(trace, "alert", alert=kind, summary=summary, **detail)
        self.recorder.update(trace, ended=now)
        self.persist.write(lambda c: db.add_alert(c, now, kind, summary, account=account,
                                                  ip=ip, detail=detail))
        log.warning("abuse alert %s %s: %s", kind, account or ip, summary)
        notes = []
        if self.admin_inbox:
            notes += [Note(a, f"[keepmail] {kind}: {account or ip}", summary)
                      for a in self._admins()]
        if tell_user and self.user_inbox and account:
            notes.append(Note(account, "[keepmail] Your outgoing mail is on hold",
                              user_text(summary)))
        for note in notes:
            self._deliver_later(note)

    def _admins(self) -> list[str]:
        return self.persist.read(lambda c: [r[0] for r in c.execute(
            "SELECT address FROM accounts WHERE is_admin = 1 AND disabled = 0")], [])

    def _deliver_later(self, note: Note) -> None:
        self.sent.append(note)
        if self.store is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._deliver(note))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, note: Note) -> None:
        from ..store import Copy, accounts
        from ..store import mail as mailq

        store = self.store
        assert store is not None

        def inbox(c: Any) -> Copy | None:
            acct = accounts.get_account(c, note.to)
            box = acct and mailq.get_mailbox_by_role(c, acct.id, "inbox")
            return Copy(acct.id, box.id, box.name) if acct and box else None

        try:
            copy = store.read_now(inbox)
            if copy is not None:
                await store.deliver(render(note, self.hostname), [copy])
        except Exception as exc:  # an alert must never break mail flow
            log.warning("could not deliver abuse alert to %s: %s", note.to, exc)


def render(note: Note, hostname: str) -> bytes:
    text = (f"From: keepmail <postmaster@{hostname}>\r\nTo: <{note.to}>\r\n"
            f"Subject: {note.subject}\r\nDate: {formatdate(usegmt=True)}\r\n"
            f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nAuto-Submitted: auto-generated\r\n"
            f"\r\n{note.body}\r\n")
    return text.encode("utf-8")


def user_text(summary: str) -> str:
    return ("keepmail has stopped sending your outgoing mail for now, because it looked "
            "unlike how you usually send:\r\n\r\n  " + summary + "\r\n\r\nYour messages are "
            "kept, not lost. If you did not send them, change your password now and tell "
            "your administrator. If you did, ask your administrator to release them.")
