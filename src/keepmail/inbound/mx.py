"""The MX policy: who may receive here, what checks say, where the mail lands.

Layers, cheapest first (DESIGN.md, principle 4):
connect  per-IP connection rate; early talkers refused
HELO     sanity rules (claims to be us, malformed)
MAIL     envelope checks (SPF, our own domain forged from outside)
RCPT     a local recipient must exist (550 5.1.1 now, no backscatter later); any
         other domain is a relay attempt (554 5.7.1); suspicious first contacts
         are greylisted
DATA     message checks (DKIM, DMARC, ARC, sender lists, content classifier);
         the verdict says reject, tempfail, quarantine, Junk or Inbox. The
         message is stored once (one blob for every local recipient) with
         Received, Authentication-Results and verdict headers prepended to the
         original bytes, and only then is 250 sent.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
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
from .defenses import Greylister, RateLimiter, helo_rules
from .verdict import Action, Rule, Thresholds, Verdict


@dataclass
class CheckContext:
    session: Session
    envelope: Envelope
    message: bytes
    verdict: Verdict
    headers: list[bytes] = field(default_factory=list)   # fields to prepend
    accounts: list[int] = field(default_factory=list)
    auth: dict[str, str] = field(default_factory=dict)   # spf/dkim/dmarc/arc results
    auth_results: str = ""                               # our Authentication-Results value


# on_inbox is told a given (account, sender) again only after this long.
TELL_INBOX_SECONDS = 60.0

# A check adds rules to ctx.verdict (and may add header fields to prepend).
Check = Callable[[CheckContext], Awaitable[None]]
# An envelope check runs at MAIL FROM: rules go into envelope.notes["rules"].
EnvelopeCheck = Callable[[Session, Envelope], Awaitable[list[Rule]]]
# Called inside the delivery transaction for recipients outside (alias forwards).
Forwarder = Callable[[sqlite3.Connection, int, CheckContext, list[str]], None]
# Called with a message the verdict says to quarantine; returns its id.
Quarantiner = Callable[[CheckContext], Awaitable[str]]
# Returns ARC header fields to prepend (RFC 8617) before mail is forwarded outside,
# for the domain of the forwarding address; b"" when it cannot seal.
ArcSealer = Callable[[bytes, str, CheckContext], Awaitable[bytes]]


@dataclass
class MxPolicy:
    thresholds: Thresholds = field(default_factory=Thresholds)
    our_names: set[str] = field(default_factory=set)   # hostname and local domains
    our_ips: set[str] = field(default_factory=set)
    greet_delay: float = 0.0
    connections_per_minute: int = 60
    messages_per_minute: int = 120


class MxHandler(Handler):
    def __init__(self, store: Store, *, policy: MxPolicy | None = None,
                 checks: Sequence[Check] = (), envelope_checks: Sequence[EnvelopeCheck] = (),
                 greylister: Greylister | None = None, forwarder: Forwarder | None = None,
                 quarantiner: Quarantiner | None = None) -> None:
        self.store = store
        self.policy = policy or MxPolicy()
        self.checks = list(checks)
        self.envelope_checks = list(envelope_checks)
        self.greylister = greylister
        self.forwarder = forwarder
        self.quarantiner = quarantiner
        self._routes: TtlCache[str, routing.Route | None] = TtlCache()
        self._mailboxes: TtlCache[tuple[int, str], Copy | None] = TtlCache()
        # Told (account id, sender) for mail landing in an Inbox: its sender becomes
        # a known correspondent (the abuse guard's signal for normal replies).
        self.on_inbox: Callable[[int, str], None] | None = None
        self._told: dict[tuple[int, str], float] = {}
        self._verdict_fields: dict[str, bytes] = {}
        self.arc_sealer: ArcSealer | None = None
        self._connections = RateLimiter(self.policy.connections_per_minute)
        self._messages = RateLimiter(self.policy.messages_per_minute)

    # -- connection and greeting ----------------------------------------------
    async def connect(self, session: Session) -> Reply | None:
        if not self._connections.hit(session.peer_ip):
            session.record("rate-limited", what="connections per minute")
            return r(421, "4.7.0", "Too many connections from your address; slow down",
                     close=True)
        if self.policy.greet_delay > 0:
            await asyncio.sleep(self.policy.greet_delay)
        return None

    async def early_talker(self, session: Session) -> Reply | None:
        return r(554, "5.5.1", "Protocol error: you talked before my greeting", close=True)

    async def helo(self, session: Session, name: str) -> Reply | None:
        rules = helo_rules(name, session.peer_ip, self.policy.our_names, self.policy.our_ips)
        session.notes["helo_rules"] = rules
        for rule in rules:
            session.record("rule", rule=rule.name, points=rule.points, reason=rule.reason)
        return None

    # -- envelope -----------------------------------------------------------------
    async def mail(self, session: Session, envelope: Envelope) -> Reply | None:
        if not self._messages.hit(session.peer_ip):
            return r(451, "4.7.1", "Too many messages from your address; slow down")
        rules: list[Rule] = list(session.notes.get("helo_rules", []))
        for check in self.envelope_checks:
            rules += await check(session, envelope)
        envelope.notes["rules"] = rules
        for rule in rules:
            if rule.force is Action.REJECT:
                return r(550, "5.7.1", rule.reason)
            if rule.force is Action.TEMPFAIL:
                return r(451, "4.7.1", rule.reason)
        return None

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
        grey = await self._greylist(session, envelope, rcpt)
        if grey is not None:
            session.record("rule", rule=grey.name, reason=grey.reason)
            return r(451, "4.7.1", grey.reason)
        envelope.notes.setdefault("routes", []).append(route)
        return None

    async def _greylist(self, session: Session, envelope: Envelope, rcpt: Path) -> Rule | None:
        if self.greylister is None or not self.greylister.policy.enabled:
            return None
        score = sum(rule.points for rule in envelope.notes.get("rules", []))
        return await self.greylister.check(session.peer_ip, envelope.sender.address,
                                           rcpt.address, score)

    @staticmethod
    def _route(conn: sqlite3.Connection, rcpt: Path) -> routing.Route | None:
        if rcpt.source_route or rcpt.domain.startswith("["):
            return None
        if not routing.is_local_domain(conn, rcpt.domain):
            return None
        if any(ch in rcpt.local for ch in "%!@\""):
            return routing.Route()  # relay tricks never name a real local user
        return routing.resolve(conn, rcpt.address) or routing.Route()

    # -- message ------------------------------------------------------------------
    async def data(self, session: Session, envelope: Envelope, message: bytes) -> Reply:
        ctx = CheckContext(session, envelope, message, Verdict())
        ctx.verdict.add(*envelope.notes.get("rules", []))
        routes: list[routing.Route] = envelope.notes.get("routes", [])
        for route in routes:
            ctx.accounts += [a for a in route.accounts if a not in ctx.accounts]
        for check in self.checks:
            await check(ctx)
        verdict = ctx.verdict.decide(self.policy.thresholds)
        session.record("verdict", action=verdict.action.name.lower(), score=verdict.score,
                       rules=verdict.reasons())
        refusal = self._refusal(verdict)
        if refusal is not None:
            return refusal
        remote = [t for route in routes for t in route.remote]
        try:
            reply = await self._store(ctx, verdict, remote)
        except Exception as exc:  # never a 250 for what was not stored
            self._routes.clear()
            self._mailboxes.clear()
            session.record("store-failed", error=repr(exc))
            return r(451, "4.3.0", "Temporary local problem storing the message; try again")
        greylister = self.greylister
        if (verdict.action is Action.INBOX and verdict.score < 1 and greylister is not None
                and greylister.policy.enabled):
            # Remembering clean networks serves greylisting only: with it off this
            # would be a second write (and fsync wait) for every clean message.
            await greylister.passed(session.peer_ip)
        return reply

    @staticmethod
    def _refusal(verdict: Verdict) -> Reply | None:
        if verdict.action < Action.TEMPFAIL:
            return None
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
                  self._verdict_field(verdict.header_value())]
        raw = mailmsg.prepend(ctx.message, *fields)
        if remote and self.arc_sealer is not None:
            # Forwarding breaks SPF downstream; an ARC set lets the next hop see what
            # we verified (RFC 8617). One blob serves local copies and the forward.
            forwarding_domain = next((r.domain for r, route in zip(
                env.rcpts, env.notes.get("routes", []), strict=False) if route.remote),
                env.rcpts[0].domain)
            raw = await self.arc_sealer(raw, forwarding_domain, ctx) + raw
        head = mailmsg.header_block(ctx.message)
        message_id = (mailmsg.header(ctx.message, "Message-ID", head) or "").strip()
        subject = mailmsg.header(ctx.message, "Subject", head) or ""
        s.recorder.update(env.trace_id, message_id=message_id, subject=subject[:200])
        if verdict.action is Action.QUARANTINE and self.quarantiner is not None:
            qid = await self.quarantiner(CheckContext(s, env, raw, verdict, [], ctx.accounts))
            s.record("quarantined", id=qid)
            s.recorder.update(env.trace_id, detail=f"quarantined as {qid}")
            return r(250, "2.0.0", f"Queued as {env.trace_id}")
        role = "inbox" if verdict.action is Action.INBOX else "junk"
        copies = [c for c in (self._mailbox(a, role) for a in ctx.accounts) if c is not None]
        extra = None
        if remote and self.forwarder is not None:
            forwarder = self.forwarder

            def extra(conn: sqlite3.Connection, blob_id: int) -> None:
                forwarder(conn, blob_id, CheckContext(s, env, raw, verdict, [], ctx.accounts,
                                                      ctx.auth), remote)

        placed = await self.store.deliver(raw, copies, trace_id=env.trace_id,
                                          message_id=message_id, extra=extra)
        for p in placed:
            s.record("delivered", account_id=p.account_id, mailbox=p.mailbox_name, uid=p.uid)
            if role == "inbox" and self.on_inbox is not None and env.sender.address:
                self._tell_inbox(p.account_id, env.sender.address)
        if remote:
            s.record("forward-queued", targets=remote)
        return r(250, "2.0.0", f"Queued as {env.trace_id}")

    def _verdict_field(self, value: str) -> bytes:
        # Most mail gets one of a few verdicts: fold each header field once.
        field = self._verdict_fields.get(value)
        if field is None:
            if len(self._verdict_fields) >= 1000:
                self._verdict_fields.clear()
            field = self._verdict_fields[value] = mailmsg.format_field(
                "X-Keepmail-Verdict", value)
        return field

    def _tell_inbox(self, account_id: int, sender: str) -> None:
        """on_inbox, once a minute at most for one pair: telling it again changes
        nothing, and from an MX worker each telling is a message to the main process."""
        key = (account_id, sender)
        now = time.monotonic()
        if self._told.get(key, 0.0) > now:
            return
        if len(self._told) >= 10_000:
            self._told.clear()
        self._told[key] = now + TELL_INBOX_SECONDS
        assert self.on_inbox is not None
        self.on_inbox(account_id, sender)

    def _mailbox(self, account_id: int, role: str) -> Copy | None:
        return self._mailboxes.get((account_id, role), lambda: self.store.read_now(
            lambda c: _copy(c, account_id, role)))


def _copy(conn: sqlite3.Connection, account_id: int, role: str) -> Copy | None:
    box = mailq.get_mailbox_by_role(conn, account_id, role) or mailq.get_mailbox(
        conn, account_id, "INBOX")
    return Copy(account_id, box.id, box.name) if box is not None else None
