"""Building the web service from the app: `build_web(app)`, called by App.build.

The login throttle is the abuse guard's AuthGuard when `app.abuse` exists
(same interface as web.throttle.LoginThrottle), so console, SMTP and IMAP
logins share one picture of an attacker; otherwise the console's own
LoginThrottle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .app import create_app
from .service import WebService
from .throttle import LoginThrottle, Throttle

if TYPE_CHECKING:
    from ..app import App, Service


def choose_throttle(app: Any) -> Throttle:
    guards = getattr(app, "abuse", None)
    auth = getattr(guards, "auth", None)
    if auth is not None and all(hasattr(auth, m) for m in
                                ("before_attempt", "failure", "success")):
        return auth  # type: ignore[no-any-return]
    return LoginThrottle()


def build_web(app: App, *, throttle: Throttle | None = None) -> list[tuple[str, int, Service]]:
    port = app.config.port("web", app.port_offset)
    if not port:
        return []
    asgi = create_app(app, throttle=throttle or choose_throttle(app))
    return [("web", port, WebService(app, port, asgi_app=asgi))]
