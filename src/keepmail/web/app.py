"""The console's Starlette application, built around a keepmail App.

`create_app(kapp)` wires the pieces: security headers, server-side sessions,
CSRF checking of every unsafe request, the routes of each concern (auth,
dashboard, trace, admin, quarantine, dns, selfservice, wellknown, metrics),
static CSS and Jinja2 templates with autoescaping always on.
"""

from __future__ import annotations

from typing import Any

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..store import blobs
from . import (
    admin,
    auth,
    dashboard,
    dns,
    features,
    metrics,
    quarantine,
    selfservice,
    trace,
    wellknown,
)
from .context import HERE, Web, ago, size, web_of, when
from .sessions import ASGIApp, CsrfMiddleware, Receive, Scope, Send, SessionMiddleware, SessionStore
from .settings import WebSection, settings_of
from .throttle import LoginThrottle, Throttle
from .totp import TotpStore

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self' data:; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_field(token: str) -> Markup:
    """The hidden form field CsrfMiddleware checks (a global: every template has it)."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(token)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, ago=ago, size=size)
    env.globals["csrf"] = csrf_field
    return Jinja2Templates(env=env)


def _register_optional_tables(kapp: Any) -> None:
    # Modules that own tables register their migrations on import; the store
    # was opened before, so bring its schema up to date once, here.
    from ..store import senderlists  # noqa: F401
    features.queue()
    features.quarantine()
    features.abuse_store()
    features.module("keepmail.outbound.dkimkeys")
    kapp.store.ensure_schema()


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/static/"):
        return HTMLResponse("not found", status_code=exc.status_code)
    return web_of(request).render(request, "error.html", {
        "status": exc.status_code, "message": exc.detail}, status=exc.status_code)


async def csrf_refused(scope: Scope, receive: Receive, send: Send) -> None:
    response = HTMLResponse(
        "<!doctype html><title>Form refused</title><h1>Form refused</h1><p>This form "
        "was not sent from your current session (it may have expired, or another site "
        "sent it). <a href=\"/\">Go back</a>, reload the page and try again.</p>",
        status_code=403, headers={"Cache-Control": "no-store"})
    await response(scope, receive, send)


def create_app(kapp: Any, *, throttle: Throttle | None = None,
               settings: WebSection | None = None) -> Starlette:
    """The ASGI app serving the console for keepmail App `kapp`."""
    settings = settings or settings_of(kapp.config)
    _register_optional_tables(kapp)
    sessions = SessionStore(settings.session_idle_minutes * 60,
                            settings.session_max_hours * 3600)
    key = blobs.load_or_create_key(kapp.config.key_file)
    web = Web(kapp, settings, sessions, throttle or LoginThrottle(),
              TotpStore(kapp.store, key), templates())
    web.metrics_registry, _ = metrics.make_registry(web)
    routes = [*auth.routes, *dashboard.routes, *trace.routes, *admin.routes,
              *quarantine.routes, *dns.routes, *selfservice.routes, *wellknown.routes,
              *metrics.routes,
              Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, store=sessions),
        Middleware(CsrfMiddleware, exempt=set(wellknown.AUTODISCOVER_PATHS),
                   on_refuse=csrf_refused),
    ]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: http_error})
    app.state.web = web
    return app
