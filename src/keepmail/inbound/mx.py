"""The MX policy: who may receive here, what checks say, where the mail lands.

RCPT: a recipient in a local domain must exist (550 5.1.1 now rather than a
bounce later: no backscatter); any other domain is a relay attempt and is
refused (554 5.7.1) — only authenticated users on the submission port relay.
DATA: the verdict pipeline runs, then the message is stored once (one blob for
every local recipient) with Received, Authentication-Results and verdict
headers prepended to the original bytes, and only then is 250 sent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from .. import mailmsg
from ..cache import TtlCache
from ..smtp.address import Path
from ..smtp.handler import Envelope, Handler, Session
from ..smtp.reply import Reply, r
from ..store import Copy, Store
from ..store import mail as mailq
from . import routing
from .verdict import Action, Rule, Thresholds, Verdict


@dataclass
class CheckContext:
    session: Session
    envelope: Envelope
    message: bytes
    verdict: Verdict
    headers: list[bytes] = field(default_factory=list)   # fields to prepend
    accounts: list[int] = field(default_factory=list)


# A check adds rules to ctx.verdict (and may add header fields to prepend).
Check = Callable[[CheckContext], Awaitable[None]]
# Called inside the delivery transaction for recipients outside (alias forwards).
Forwarder = Callable[[sqlite3.Connection, int, CheckContext, list[str]], None]
# Called with a message the verdict says to quarantine; returns its id.
Quarantiner = Callable[[CheckContext], Awaitable[str]]


class MxHandler(Handler):
    def __init__(self, store: Store, *, checks: Sequence[Check] = (),
                 thresholds: Thresholds | None = None, forwarder: Forwarder | None = None,
                 quarantiner: Quarantiner | None = None) -> None:
        self.store = store
        self.checks = list(checks)
        self.thresholds = thresholds or Thresholds()
        self.forwarder = forwarder
        self.quarantiner = quarantiner
        self._routes: TtlCache[str, routing.Route | None] = TtlCache()
        self._mailboxes: TtlCache[tuple[int, str], Copy | None] = TtlCache()

    async def rcpt(self, session: Session, envelope: Envelope, rcpt: Path,
                   params: dict[str, str]) -> Reply | None:
        route = self._routes.get(rcpt.address.lower(), lambda: self.store.read_now(
            lambda c: self._route(c, rcpt)))
        if route is None:
            return r(554, "5.7.1", f"Relay access denied: we do not accept mail for "
                     f"{rcpt.domain}")
        if route.empty:
            return r(550, "5.1.1", f"No such user here: {rcpt.address}")
        if route.remote and self.forwarder is None:
            return r(451, "4.3.0", "Forwarding is not available right now")
        envelope.notes.setdefault("routes", []).append(route)
        return None

    @staticmethod
    def _route(conn: sqlite3.Connection, rcpt: Path) -> routing.Route | None:
        if rcpt.source_route or rcpt.domain.startswith("["):
            return None
        if not routing.is_local_domain(conn, rcpt.domain):
            return None
        if any(ch in rcpt.local for ch in "%!@\""):
            return routing.Route()  # relay tricks never name a real local user
        return routing.resolve(conn, rcpt.address) or routing.Route()

    async def data(self, session: Session, envelope: Envelope, message: bytes) -> Reply:
        ctx = CheckContext(session, envelope, message, Verdict())
        routes: list[routing.Route] = envelope.notes.get("routes", [])
        for route in routes:
            ctx.accounts += [a for a in route.accounts if a not in ctx.accounts]
        for check in self.checks:
            await check(ctx)
        verdict = ctx.verdict.decide(self.thresholds)
        session.record("verdict", action=verdict.action.name.lower(), score=verdict.score,
                       rules=verdict.reasons())
        refusal = self._refusal(verdict)
        if refusal is not None:
            return refusal
        remote = [t for route in routes for t in route.remote]
        return await self._store(ctx, verdict, remote)

    @staticmethod
    def _refusal(verdict: Verdict) -> Reply | None:
        reasons = "; ".join(rule.reason for rule in verdict.rules if rule.points > 0 or
                            rule.force)[:300]
        if verdict.action is Action.REJECT:
            return r(550, "5.7.1", f"Message refused: {reasons or 'policy'}")
        if verdict.action is Action.TEMPFAIL:
            return r(451, "4.7.1", f"Try again later: {reasons or 'policy'}")
        return None

    async def _store(self, ctx: CheckContext, verdict: Verdict, remote: list[str]) -> Reply:
        s, env = ctx.session, ctx.envelope
        single = env.rcpts[0].address if len(env.rcpts) == 1 else None
        fields = [s.received_header(single), *ctx.headers,
                  mailmsg.format_field("X-Keepmail-Verdict", verdict.header_value())]
        raw = mailmsg.prepend(ctx.message, *fields)
        if verdict.action is Action.QUARANTINE and self.quarantiner is not None:
            qid = await self.quarantiner(CheckContext(s, env, raw, verdict, [], ctx.accounts))
            s.record("quarantined", id=qid)
            return r(250, "2.0.0", f"Queued as {env.trace_id}")
        role = "inbox" if verdict.action is Action.INBOX else "junk"
        copies = [c for c in (self._mailbox(a, role) for a in ctx.accounts) if c is not None]
        message_id = mailmsg.header(ctx.message, "Message-ID") or ""
        subject = mailmsg.header(ctx.message, "Subject") or ""
        s.recorder.update(env.trace_id, message_id=message_id.strip(), subject=subject[:200])
        extra = None
        if remote and self.forwarder is not None:
            forwarder = self.forwarder

            def extra(conn: sqlite3.Connection, blob_id: int) -> None:
                forwarder(conn, blob_id, ctx, remote)

        placed = await self.store.deliver(raw, copies, trace_id=env.trace_id,
                                          message_id=message_id.strip(), extra=extra)
        for p in placed:
            s.record("delivered", account_id=p.account_id, mailbox=p.mailbox_name, uid=p.uid)
        if remote:
            s.record("forward-queued", targets=remote)
        return r(250, "2.0.0", f"Queued as {env.trace_id}")

    def _mailbox(self, account_id: int, role: str) -> Copy | None:
        return self._mailboxes.get((account_id, role), lambda: self.store.read_now(
            lambda c: _copy(c, account_id, role)))


def _copy(conn: sqlite3.Connection, account_id: int, role: str) -> Copy | None:
    box = mailq.get_mailbox_by_role(conn, account_id, role) or mailq.get_mailbox(
        conn, account_id, "INBOX")
    return Copy(account_id, box.id, box.name) if box is not None else None


def rule(name: str, points: float, reason: str, force: Action | None = None) -> Rule:
    return Rule(name, points, reason, force)
