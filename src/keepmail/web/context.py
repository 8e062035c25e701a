"""What every console page shares: the Web object, who is asking, rendering, auditing.

Pages are plain async functions wrapped by `user_page` or `admin_page`, which
resolve the viewer from the session on every request (re-reading the
account, so disabling a user or removing admin rights takes effect at the
next click) and hand it in. Admin pages also need the second factor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ..recorder.query import open_readonly
from ..store import accounts
from ..store.models import Account
from .sessions import SCOPE_KEY, Session, SessionState, SessionStore
from .settings import WebSection
from .throttle import Throttle
from .totp import TotpStore

T = TypeVar("T")
HERE = Path(__file__).parent


@dataclass
class Web:
    """The console's services, reachable from any request as request.app.state.web."""

    kapp: Any            # keepmail.app.App (typed loosely: app.py imports the listeners)
    settings: WebSection
    sessions: SessionStore
    throttle: Throttle
    totp: TotpStore
    templates: Jinja2Templates
    metrics_registry: Any = None
    login_counts: dict[str, int] = field(default_factory=dict)

    @property
    def store(self) -> Any:
        return self.kapp.store

    @property
    def recorder(self) -> Any:
        return self.kapp.recorder

    @property
    def config(self) -> Any:
        return self.kapp.config

    async def read_recorder(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a query on a read-only recorder connection in a worker thread."""
        path = self.recorder.path

        def run() -> T:
            conn = open_readonly(path)
            try:
                return fn(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    # -- rendering -------------------------------------------------------------
    def render(self, request: Request, name: str, context: dict[str, Any] | None = None,
               status: int = 200) -> Response:
        state = session_state(request)
        session = state.session
        ctx = {"viewer": getattr(request.state, "viewer", None),
               "csrf_token": session.csrf if session else "",
               "flashes": session.take_flashes() if session else [],
               "hostname": self.config.server.hostname, **(context or {})}
        response = self.templates.TemplateResponse(request, name, ctx, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- auditing -------------------------------------------------------------
    def audit(self, request: Request, action: str, *, outcome: str = "ok",
              account: str | None = None, **data: Any) -> str:
        """Record a console action in the flight recorder (kind "web")."""
        viewer = getattr(request.state, "viewer", None)
        who = account if account is not None else (viewer.account.address if viewer else "")
        summary = " ".join([action, *(str(v) for v in data.values() if isinstance(v, str))])
        trace = self.recorder.new_trace("web", account=who, ip=client_ip(request),
                                        status=outcome, detail=summary[:300])
        self.recorder.event(trace, "action", action=action, outcome=outcome,
                            path=request.url.path, **data)
        self.recorder.update(trace, ended=time.time())
        if action == "login":
            self.login_counts[outcome] = self.login_counts.get(outcome, 0) + 1
        return trace


@dataclass(frozen=True)
class Viewer:
    account: Account
    session: Session
    admin: bool          # an admin who passed the second factor (when required)

    @property
    def address(self) -> str:
        return self.account.address


def web_of(request: Request) -> Web:
    return request.app.state.web  # type: ignore[no-any-return]


def session_state(request: Request) -> SessionState:
    return request.scope[SCOPE_KEY]  # type: ignore[no-any-return]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def current_viewer(request: Request) -> Viewer | None:
    web, session = web_of(request), session_state(request).session
    if session is None or session.account_id is None:
        return None
    account = web.store.read_now(lambda c: accounts.get_account_by_id(c, session.account_id))
    if account is None or account.disabled:
        session_state(request).end()
        return None
    admin = account.is_admin and (session.second_factor or not web.settings.admin_totp)
    return Viewer(account, session, admin)


Page = Callable[[Request, Viewer], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def user_page(page: Page) -> Endpoint:
    """Any logged-in account; others are sent to the login page."""
    async def endpoint(request: Request) -> Response:
        viewer = current_viewer(request)
        if viewer is None:
            return to_login(request)
        request.state.viewer = viewer
        return await page(request, viewer)

    endpoint.__name__ = page.__name__
    return endpoint


def admin_page(page: Page) -> Endpoint:
    """Admins with their second factor; admins without one are sent to set it up."""
    async def endpoint(request: Request) -> Response:
        viewer = current_viewer(request)
        if viewer is None:
            return to_login(request)
        request.state.viewer = viewer
        if not viewer.account.is_admin:
            raise HTTPException(403, "This page is for administrators.")
        if not viewer.admin:
            if not web_of(request).totp.enabled(viewer.account.id):
                return RedirectResponse("/account/totp", 303)
            # Enrolled in another session: log in again, this time with the code.
            session_state(request).end()
            return to_login(request)
        return await page(request, viewer)

    endpoint.__name__ = page.__name__
    return endpoint


def to_login(request: Request) -> Response:
    next_path = request.url.path
    if request.url.query:
        next_path += "?" + request.url.query
    return RedirectResponse("/login?" + urllib.parse.urlencode({"next": next_path}), 303)


def safe_next(value: str | None) -> str:
    """Only same-site paths: never an open redirect to another host."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303)


def flash(request: Request, message: str, level: str = "info") -> None:
    session = session_state(request).session
    if session is not None:
        session.flash(message, level)


# -- template filters ------------------------------------------------------------------
def when(ts: float | None) -> str:
    if not ts:
        return "–"
    return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


def ago(ts: float | None) -> str:
    if not ts:
        return "–"
    seconds = max(0, int(time.time() - float(ts)))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def size(n: int | float | None) -> str:
    value = float(n or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
