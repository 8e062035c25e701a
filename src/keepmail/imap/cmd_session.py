"""Session commands: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE,
ENABLE, ID, NAMESPACE, COMPRESS, IDLE, CHECK, UNSELECT, CLOSE.

RFC 9051 sections 6.1-6.3 and 6.4.1-6.4.2; RFC 4959 (SASL-IR) with RFC 4616
(PLAIN); RFC 5161 (ENABLE); RFC 2971 (ID); RFC 2342 (NAMESPACE); RFC 4978
(COMPRESS=DEFLATE); RFC 2177 (IDLE); RFC 3691 (UNSELECT).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time

from .. import __version__ as _version
from .parser import Reader
from .session import (
    ANY,
    AUTH,
    AUTHENTICATED,
    LOGOUT,
    NOT_AUTHENTICATED,
    SEL,
    Bad,
    Bye,
    No,
    Result,
    Session,
    command,
)

ENABLEABLE = {"CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2"}
IDLE_LIMIT = 31 * 60  # RFC 2177: clients re-issue IDLE at least every 29 minutes
MAX_FAILED_LOGINS = 3


@command("CAPABILITY", ANY)
async def capability(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.end()
    s.untagged("CAPABILITY " + " ".join(s.server.capabilities(s)))
    return Result()


@command("NOOP", ANY)
async def noop(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.end()
    if s.view is not None:
        await s.report_changes(allow_expunge=True, force=True)
    return Result()


@command("CHECK", SEL)
async def check(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    return await noop(s, tag, r, uid)


@command("LOGOUT", ANY)
async def logout(s: Session, tag: str, r: Reader, uid: bool) -> None:
    r.end()
    s.untagged("BYE Logging out")
    s.tagged(tag, "OK", "LOGOUT completed")
    if s.account is not None:
        s.server.recorder.event(s.trace_id, "imap.logout", account=s.account.address)
    s.close_view()
    s.state = LOGOUT


@command("STARTTLS", (NOT_AUTHENTICATED,))
async def starttls(s: Session, tag: str, r: Reader, uid: bool) -> Result | None:
    r.end()
    if s.conn.secure or not s.conn.tls_available:
        raise No("TLS is already active" if s.conn.secure else "TLS is not available")
    s.tagged(tag, "OK", "Begin TLS negotiation now")
    s.conn.write_then_begin_tls(s.take_output())
    await s.conn.start_tls()
    s.server.recorder.event(s.trace_id, "imap.starttls")
    return None


def _login_allowed(s: Session) -> None:
    if not s.conn.secure and not s.server.config.plaintext_auth:
        raise No("Log in after STARTTLS (plaintext passwords are refused)", "PRIVACYREQUIRED")


async def _finish_login(s: Session, tag: str, user: str, password: str,
                        method: str) -> Result:
    account = None
    guard = s.server.auth_guard   # brute-force throttling (keepmail.abuse), if wired
    if guard is not None and await guard.before_attempt(s.conn.peer_ip, user) is not None:
        s.server.recorder.event(s.trace_id, "imap.login-throttled", user=user[:320],
                                ip=s.conn.peer_ip)
        raise No("Too many failed logins; try again later", "UNAVAILABLE")
    if "\x00" not in user + password and len(user) <= 320 and len(password) <= 1024:
        account = await s.server.authenticator.authenticate(user, password)
    if guard is not None:
        if account is None:
            guard.failure(s.conn.peer_ip, user)
        else:
            guard.success(s.conn.peer_ip, user)
    if account is None:
        s.failed_logins += 1
        s.server.recorder.event(s.trace_id, "imap.login-failed", user=user[:320],
                                method=method, ip=s.conn.peer_ip)
        await asyncio.sleep(s.server.config.fail_delay)
        if s.failed_logins >= MAX_FAILED_LOGINS:
            s.tagged(tag, "NO", "[AUTHENTICATIONFAILED] Invalid credentials")
            raise Bye("Too many failed logins")
        raise No("Invalid credentials", "AUTHENTICATIONFAILED")
    s.account = account
    s.state = AUTHENTICATED
    s.server.recorder.event(s.trace_id, "imap.login", account=account.address, method=method,
                            ip=s.conn.peer_ip)
    return Result("Logged in", "CAPABILITY " + " ".join(s.server.capabilities(s)))


@command("LOGIN", (NOT_AUTHENTICATED,))
async def login(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    user = r.astring()
    r.sp()
    password = r.astring()
    r.end()
    _login_allowed(s)
    return await _finish_login(s, tag, user.decode("utf-8", "replace"),
                               password.decode("utf-8", "replace"), "LOGIN")


@command("AUTHENTICATE", (NOT_AUTHENTICATED,))
async def authenticate(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    mech = r.atom().upper()
    initial: bytes | None = None
    if r.take(b" "):
        initial = r.rest_of_line()
    r.end()
    if mech != "PLAIN":
        raise No(f"Unsupported mechanism {mech[:20]}", "CANNOT")
    _login_allowed(s)
    if initial is None:
        s.send(b"+ \r\n")
        await s.flush()
        line, whole = await s.conn.read_line(8192)
        if not whole:
            raise Bad("SASL response too long")
        initial = line
    if initial.strip() == b"*":
        raise Bad("Authentication cancelled")
    try:
        decoded = base64.b64decode(initial.strip(), validate=True) if initial.strip() != b"=" \
            else b""
    except (binascii.Error, ValueError):
        raise Bad("Invalid base64 in SASL response") from None
    parts = decoded.split(b"\x00")
    if len(parts) != 3:
        raise Bad("Malformed PLAIN response")
    authz, authc, password = (p.decode("utf-8", "replace") for p in parts)
    if authz and authz.lower() != authc.lower():
        raise No("Logging in as another user is not permitted", "AUTHORIZATIONFAILED")
    return await _finish_login(s, tag, authc, password, "AUTHENTICATE PLAIN")


@command("ENABLE", (AUTHENTICATED,))
async def enable(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    newly: list[str] = []
    while r.take(b" "):
        name = r.atom().upper()
        if name not in ENABLEABLE or name in s.enabled:
            continue
        s.enabled.add(name)
        newly.append("IMAP4rev2" if name == "IMAP4REV2" else name)
        if name == "QRESYNC" and "CONDSTORE" not in s.enabled:
            s.enabled.add("CONDSTORE")
    r.end()
    s.untagged("ENABLED" + "".join(" " + n for n in newly))
    return Result()


@command("ID", ANY)
async def ident(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.sp()
    fields: dict[str, str] = {}
    if not r.take(b"NIL"):
        r.enter()
        while not r.take(b")"):
            if fields:
                r.sp()
            key = r.string()
            r.sp()
            value = r.nstring()
            if len(fields) < 30:
                fields[key.decode("utf-8", "replace")[:30]] = (
                    value.decode("utf-8", "replace")[:1024] if value is not None else "")
        r.depth -= 1
    r.end()
    if fields:
        s.server.recorder.event(s.trace_id, "imap.id", **{"client": fields})
    s.untagged(f'ID ("name" "keepmail" "version" "{_version}")')
    return Result()


@command("NAMESPACE", AUTH)
async def namespace(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.end()
    s.untagged('NAMESPACE (("" "/")) NIL NIL')
    return Result()


@command("COMPRESS", ANY)
async def compress(s: Session, tag: str, r: Reader, uid: bool) -> Result | None:
    r.sp()
    mech = r.atom().upper()
    r.end()
    if s.conn.compressed:
        raise No("Compression is already active", "COMPRESSIONACTIVE")
    if mech != "DEFLATE":
        raise Bad(f"Unknown compression {mech[:20]}")
    s.tagged(tag, "OK", "DEFLATE active")
    await s.flush()
    s.conn.start_compress()
    return None


@command("UNSELECT", SEL)
async def unselect(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.end()
    s.close_view()
    return Result()


@command("CLOSE", SEL)
async def close(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    from .cmd_message import expunge_deleted
    r.end()
    view = s.require_view()
    if not view.readonly:
        await expunge_deleted(s, view, None, announce=False)
    s.close_view()
    return Result()


@command("IDLE", AUTH)
async def idle(s: Session, tag: str, r: Reader, uid: bool) -> Result:
    r.end()
    s.send(b"+ idling\r\n")
    if s.view is not None:
        await s.report_changes(allow_expunge=True, force=True)
    await s.flush()
    deadline = time.monotonic() + IDLE_LIMIT
    s.in_idle = True
    try:
        while True:
            line = await _idle_wait(s, deadline)
            if line is None:
                continue
            if line.strip().upper() == b"DONE":
                return Result("IDLE terminated")
            raise Bad("Expected DONE")
    finally:
        s.in_idle = False


async def _idle_wait(s: Session, deadline: float) -> bytes | None:
    """Wait for the client's line or a change; report changes; return the line if any."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Bye("IDLE for too long")
    readable = s.conn.wait_readable()
    event = s.changed_event()
    waiter = asyncio.ensure_future(event.wait()) if event is not None else None
    try:
        waits: set[asyncio.Future[object]] = {readable}  # type: ignore[arg-type]
        if waiter is not None:
            waits.add(waiter)  # type: ignore[arg-type]
        await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if waiter is not None and not waiter.done():
            waiter.cancel()
    if event is not None and event.is_set():
        await s.report_changes(allow_expunge=True)
        await s.flush()
    if readable.done():
        line, whole = await s.conn.read_line(1024)
        if not whole:
            raise Bad("Expected DONE")
        return line
    return None
