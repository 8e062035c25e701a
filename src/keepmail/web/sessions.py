"""Server-side console sessions, their cookie, and CSRF protection for every form.

The cookie holds only a random token (`__Host-` prefix: Secure, Path=/, no
Domain; plus HttpOnly and SameSite=Strict); the session itself stays in
memory on the server, so logging out, changing a password or disabling an
account ends sessions at once, which signed-cookie sessions cannot do. A
restart logs everyone out, which is acceptable for a console.

CSRF: each session has its own token. `CsrfMiddleware` refuses every
state-changing request (POST, PUT, PATCH, DELETE) whose form field
`csrf_token` (or header X-CSRF-Token) does not match the session's, before
any endpoint runs, so no form can forget the check. Only the machine
endpoints clients call without a session (Outlook's autodiscover POST) are
exempt, and they change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "__Host-keepmail"
SCOPE_KEY = "keepmail.session"
MAX_FORM_BYTES = 1024 * 1024
MAX_ANONYMOUS = 20_000


@dataclass
class Session:
    token_hash: str
    csrf: str
    created: float
    last_seen: float
    account_id: int | None = None
    address: str = ""
    second_factor: bool = False      # TOTP verified in this session
    pending_address: str = ""        # password accepted, TOTP code still to come
    pending_account: int | None = None
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, message: str, level: str = "info") -> None:
        self.flashes.append((level, message))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


def _hash(token: str) -> str:
    # Keyed by the token's hash: a memory dump does not hand out live cookies.
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, idle_seconds: float = 3600.0, max_seconds: float = 12 * 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def create(self) -> tuple[str, Session]:
        self._evict()
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(_hash(token), secrets.token_urlsafe(32), now, now)
        self._sessions[session.token_hash] = session
        return token, session

    def get(self, token: str) -> Session | None:
        session = self._sessions.get(_hash(token))
        if session is None:
            return None
        now = self.clock()
        if now - session.last_seen > self.idle_seconds or now - session.created > self.max_seconds:
            self._sessions.pop(session.token_hash, None)
            return None
        session.last_seen = now
        return session

    def drop(self, session: Session) -> None:
        self._sessions.pop(session.token_hash, None)

    def drop_account(self, account_id: int, keep: Session | None = None) -> int:
        """End every session of an account (password change, disabling), except `keep`."""
        victims = [s for s in self._sessions.values()
                   if account_id in (s.account_id, s.pending_account) and s is not keep]
        for s in victims:
            self.drop(s)
        return len(victims)

    def _evict(self) -> None:
        now = self.clock()
        for key, s in list(self._sessions.items()):
            if now - s.last_seen > self.idle_seconds or now - s.created > self.max_seconds:
                del self._sessions[key]
        anonymous = [s for s in self._sessions.values() if s.account_id is None]
        if len(anonymous) > MAX_ANONYMOUS:   # a flood of login-page visits
            anonymous.sort(key=lambda s: s.last_seen)
            for s in anonymous[: len(anonymous) - MAX_ANONYMOUS]:
                self.drop(s)


def cookie_header(token: str | None) -> tuple[bytes, bytes]:
    if token is None:
        value = f"{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    else:
        value = f"{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
    return b"set-cookie", value.encode("latin-1")


def _cookie_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == COOKIE and val:
                    return val
    return None


class SessionMiddleware:
    """Loads the session named by the cookie into scope; sets or clears the cookie."""

    def __init__(self, app: ASGIApp, store: SessionStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _cookie_token(scope)
        state = SessionState(self.store, self.store.get(token) if token else None)
        scope[SCOPE_KEY] = state

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and state.cookie_change:
                headers = list(message.get("headers", []))
                headers.append(cookie_header(state.new_token))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class SessionState:
    """The request's view of its session: read it, start one, rotate it, end it."""

    def __init__(self, store: SessionStore, session: Session | None) -> None:
        self.store = store
        self.session = session
        self.cookie_change = False
        self.new_token: str | None = None

    def ensure(self) -> Session:
        if self.session is None:
            self.new_token, self.session = self.store.create()
            self.cookie_change = True
        return self.session

    def rotate(self) -> Session:
        """A fresh id and CSRF token (at login: no session fixation), keeping flashes."""
        flashes = self.session.flashes if self.session else []
        if self.session is not None:
            self.store.drop(self.session)
        self.new_token, self.session = self.store.create()
        self.session.flashes = flashes
        self.cookie_change = True
        return self.session

    def end(self) -> None:
        if self.session is not None:
            self.store.drop(self.session)
        self.session = None
        self.new_token = None
        self.cookie_change = True


class CsrfMiddleware:
    """Refuses unsafe requests without the session's CSRF token (see module docstring)."""

    UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

    def __init__(self, app: ASGIApp, exempt: set[str], on_refuse: ASGIApp) -> None:
        self.app = app
        self.exempt = {p.lower() for p in exempt}
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in self.UNSAFE
                or scope["path"].lower() in self.exempt):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive, MAX_FORM_BYTES)
        state: SessionState | None = scope.get(SCOPE_KEY)
        session = state.session if state else None
        if body is None or session is None or not _origin_ok(scope) \
                or not hmac.compare_digest(_token_of(scope, body).encode(), session.csrf.encode()):
            scope["keepmail.refusal"] = "csrf"
            await self.on_refuse(scope, _replay(b""), send)
            return
        await self.app(scope, _replay(body), send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _token_of(scope: Scope, body: bytes) -> str:
    header = _header(scope, b"x-csrf-token")
    if header:
        return header
    if _header(scope, b"content-type").split(";")[0].strip() != \
            "application/x-www-form-urlencoded":
        return ""
    values = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("csrf_token", [])
    return values[0] if len(values) == 1 else ""


def _origin_ok(scope: Scope) -> bool:
    """A second line behind the token: a browser's Origin must be this very site."""
    origin = _header(scope, b"origin")
    if not origin or origin == "null":
        return origin != "null"
    host = _header(scope, b"host")
    return urllib.parse.urlsplit(origin).netloc.lower() == host.lower()
