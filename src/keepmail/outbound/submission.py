"""The submission policy (RFC 6409) for ports 587 (STARTTLS) and 465 (RFC 8314).

AUTH PLAIN/LOGIN only inside TLS (RFC 4954 4, RFC 8314 3); MAIL before AUTH is
refused (RFC 6409 4.3). An authenticated user may send only as an address of
their own: their account, its +tag forms, or an alias whose targets include
them; that holds for the envelope sender and for the From: and Sender: fields
(5.7.1 otherwise, DESIGN.md principle 6). Message-ID and Date are added when
missing (RFC 6409 8.2, 8.3), Bcc: fields are cut out of the raw bytes (RFC
5322 3.6.3), a Received field (without the client's IP, for privacy) and
DKIM signatures (RFC 6376, RFC 8463) are prepended. Recipients in our own
domains are delivered at once with the MX's durability rule; the others go
to the durable queue — in the same transaction — before the 250.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from email.utils import getaddresses

from .. import mailmsg
from ..inbound import routing
from ..mailauth import dkim_sign
from ..smtp.address import Path
from ..smtp.handler import Envelope, Handler, Session
from ..smtp.reply import Reply, r
from ..store import Copy, Store, accounts, contacts
from ..store import mail as mailq
from ..store import queue as q
from ..store.auth import Authenticator
from ..store.models import Account
from .agent import DeliveryAgent
from .dkimkeys import DkimKeys

# A policy check (abuse limits, outbound classifier) may refuse a message.
SubmissionCheck = Callable[[Session, Envelope, bytes], Awaitable[Reply | None]]

NOT_YOURS = "5.7.1"


class SubmissionHandler(Handler):
    offer_auth = True
    require_tls_for_auth = True
    require_auth = True

    def __init__(self, store: Store, authenticator: Authenticator, agent: DeliveryAgent | None,
                 *, dkim: DkimKeys | None = None, checks: Sequence[SubmissionCheck] = ()) -> None:
        self.store = store
        self.authenticator = authenticator
        self.agent = agent
        self.dkim = dkim
        self.checks = list(checks)
        # Called with (sender account address, remote recipients) for mail that will be
        # sent: the spam learner counts it as a ham vote for those correspondents.
        self.on_sent: Callable[[str, list[str]], None] | None = None

    async def auth(self, session: Session, username: str, password: str) -> Account | Reply:
        account = await self.authenticator.authenticate(username, password)
        if account is None:
            return r(535, "5.7.8", "Authentication credentials invalid")
        return account

    async def mail(self, session: Session, envelope: Envelope) -> Reply | None:
        account = session.account
        assert account is not None   # the engine enforces require_auth
        if envelope.sender.is_null:
            return r(550, NOT_YOURS, "Submission needs a sender address; the null sender "
                     "is for bounces from mail servers")
        if not self._owns(account, envelope.sender.address, session):
            return r(550, NOT_YOURS, f"You ({account.address}) may not send as "
                     f"{envelope.sender.address}: use your own address or one of your "
                     "aliases")
        return None

    def _owns(self, account: Account, address: str, session: Session | None = None) -> bool:
        # Decisions are remembered for the connection: a client sends as the
        # same address message after message.
        cache: dict[str, bool] = session.notes.setdefault("owns", {}) if session else {}
        key = address.lower()
        if key not in cache:
            cache[key] = self.store.read_now(lambda c: owns(c, account, address))
        return cache[key]

    async def rcpt(self, session: Session, envelope: Envelope, rcpt: Path,
                   params: dict[str, str]) -> Reply | None:
        if rcpt.source_route:
            return r(553, "5.1.3", "Source routes are not accepted")
        # Whether a domain is ours is remembered for the connection, like `owns`: a
        # client sends to the same remote domains message after message.
        domains: dict[str, bool] = session.notes.setdefault("local_domains", {})
        domain = rcpt.domain.lower()
        if domains.get(domain) is False:
            route: routing.Route | bool | None = None
        else:
            route = self.store.read_now(lambda c: _local_route(c, rcpt.address))
            domains[domain] = route is not None
        if route is False:
            return r(550, "5.1.1", f"No such user here: {rcpt.address}")
        notes = envelope.notes
        if isinstance(route, routing.Route):
            for account_id in route.accounts:
                if account_id not in notes.setdefault("local", []):
                    notes["local"].append(account_id)
            notes.setdefault("remote", []).extend(route.remote)
        else:
            notes.setdefault("remote", []).append(rcpt.address)
        return None

    async def data(self, session: Session, envelope: Envelope, message: bytes) -> Reply:
        account = session.account
        assert account is not None
        problem = self._check_headers(session, account, message)
        if problem is not None:
            return problem
        for check in self.checks:
            refusal = await check(session, envelope, message)
            if refusal is not None and refusal.code >= 400:
                return refusal
        raw = await self._prepare(session, envelope, message)
        return await self._store(session, envelope, account, raw)

    def _check_headers(self, session: Session, account: Account,
                       message: bytes) -> Reply | None:
        block = mailmsg.header_block(message)
        from_value = mailmsg.header(message, "From", block)
        if not from_value:
            return r(550, "5.6.0", "Message has no From: header field (RFC 5322 3.6)")
        for name in ("From", "Sender"):
            value = from_value if name == "From" else mailmsg.header(message, name, block)
            if value is None:
                continue
            addresses = _addresses(session, value)
            if not addresses:
                return r(550, "5.6.0", f"Cannot read the address in {name}: {value[:100]}")
            for address in addresses:
                if not self._owns(account, address, session):
                    return r(550, NOT_YOURS, f"You ({account.address}) may not send with "
                             f"{name}: {address}; use your own address or one of your "
                             "aliases")
        return None

    async def _prepare(self, session: Session, envelope: Envelope, message: bytes) -> bytes:
        message = strip_bcc(message)
        domain = envelope.sender.domain.lower()
        added = []
        if not mailmsg.has_header(message, "Message-ID"):
            added.append(f"Message-ID: <{secrets.token_hex(12)}@{domain}>\r\n".encode())
        if not mailmsg.has_header(message, "Date"):
            added.append(f"Date: {mailmsg.date_now(gmt=True)}\r\n".encode())
        proto = "ESMTPSA" if session.esmtp else "SMTPSA"
        received = mailmsg.format_field(
            "Received", f"by {session.hostname} (keepmail) with {proto} id "
            f"{envelope.trace_id}; {mailmsg.date_now(gmt=True)}")
        # Date and Message-ID go at the end of the header block in practice, but
        # prepending is equally valid (RFC 5322 3.6 sets no order) and never
        # touches the user's bytes.
        raw = mailmsg.prepend(message, received, *added)
        return await self._sign(session, raw, message)

    async def _sign(self, session: Session, raw: bytes, message: bytes) -> bytes:
        if self.dkim is None:
            return raw
        addresses = _addresses(session, mailmsg.header(message, "From") or "")
        if not addresses:
            return raw
        keys = self.dkim.signing_keys(addresses[0].rpartition("@")[2])
        # The RSA signature (~2 ms of CPU) runs on a worker thread, off the loop.
        return await dkim_sign.sign_async(raw, keys) + raw if keys else raw

    async def _store(self, session: Session, envelope: Envelope, account: Account,
                     raw: bytes) -> Reply:
        local: list[int] = envelope.notes.get("local", [])
        remote = list(dict.fromkeys(envelope.notes.get("remote", [])))
        copies = self.store.read_now(lambda c: _inbox_copies(c, local)) if local else []
        message_id = (mailmsg.header(raw, "Message-ID") or "").strip()
        subject = mailmsg.header(raw, "Subject") or ""
        session.recorder.update(envelope.trace_id, message_id=message_id, subject=subject[:200])
        smtputf8 = envelope.smtputf8 or not envelope.sender.address.isascii() or \
            not all(a.isascii() for a in remote)
        queued: list[tuple[q.QueuedMessage, list[q.QueuedRcpt]]] = []
        # The abuse guard may hold the account: the mail is kept, not sent.
        held = bool(envelope.notes.get("hold"))

        def enqueue(conn: sqlite3.Connection, blob_id: int) -> None:
            # Whoever the user writes to becomes a trusted correspondent for the MX.
            contacts.record(conn, account.id, [p.address for p in envelope.rcpts])
            if remote:
                queued.append(q.enqueue_rows(
                    conn, blob_id, len(raw), envelope.sender.address, remote,
                    account_id=account.id, trace_id=envelope.trace_id, message_id=message_id,
                    smtputf8=smtputf8, body_8bit=not raw.isascii(), held=held))

        placed = await self.store.deliver(raw, copies, trace_id=envelope.trace_id,
                                          message_id=message_id, extra=enqueue)
        for p in placed:
            session.record("delivered", account_id=p.account_id, mailbox=p.mailbox_name,
                           uid=p.uid)
        if queued:
            msg, rows = queued[0]
            session.record("queued", queue_id=msg.id, rcpts=remote, held=held or None)
            if self.agent is not None and not held:
                self.agent.dispatch_rows(msg, rows, raw)
            if self.on_sent is not None and not held:
                self.on_sent(account.address, remote)
        return r(250, "2.0.0", f"Queued as {envelope.trace_id}")


def _addresses(session: Session, value: str) -> list[str]:
    """The addresses in a From: or Sender: value, remembered for the connection.

    email.utils.getaddresses costs ~20 µs, and a client sends with the same
    From: message after message.
    """
    cache: dict[str, list[str]] = session.notes.setdefault("addresses", {})
    found = cache.get(value)
    if found is None:
        found = [a for _n, a in getaddresses([value]) if a]
        if len(cache) >= 32:
            cache.clear()
        cache[value] = found
    return list(found)



def owns(conn: sqlite3.Connection, account: Account, address: str) -> bool:
    """Whether address is the account's own: itself, a +tag form, or its alias.

    Catch-all aliases ('@domain') do not count: receiving everything for a
    domain is not a licence to send as every address in it.
    """
    address = accounts.normalize_address(address)
    local, _, domain = address.rpartition("@")
    candidates = [address]
    if "+" in local:
        candidates.append(f"{local.partition('+')[0]}@{domain}")
    for candidate in candidates:
        if candidate == account.address:
            return True
        if accounts.alias_targets(conn, candidate):
            route = routing.resolve(conn, candidate)
            if route is not None and account.id in route.accounts:
                return True
    return False


def _local_route(conn: sqlite3.Connection, address: str) -> routing.Route | bool | None:
    """A Route for a local address, False for an unknown local one, None if remote."""
    _, _, domain = address.rpartition("@")
    if domain.startswith("[") or not routing.is_local_domain(conn, domain):
        return None
    route = routing.resolve(conn, address)
    return route if route is not None and not route.empty else False


def _inbox_copies(conn: sqlite3.Connection, account_ids: list[int]) -> list[Copy]:
    copies = []
    for account_id in account_ids:
        box = mailq.get_mailbox_by_role(conn, account_id, "inbox") or mailq.get_mailbox(
            conn, account_id, "INBOX")
        if box is not None:
            copies.append(Copy(account_id, box.id, box.name))
    return copies


def strip_bcc(message: bytes) -> bytes:
    """Cut every Bcc: field (with its continuation lines) out of the header block."""
    block = mailmsg.header_block(message)
    if b"bcc" not in block.lower():
        return message
    fields, _ = dkim_sign.split_message(block)
    kept = [f for f in fields if f.partition(b":")[0].strip().lower() != b"bcc"]
    if len(kept) == len(fields):
        return message
    separator = b"\r\n" if block.endswith(b"\r\n\r\n") else b""
    return b"".join(kept) + separator + message[len(block):]
