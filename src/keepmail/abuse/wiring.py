"""Building the abuse guards from the app, and adapters for the listeners.

`build_abuse(app)` makes one AuthGuard, one OutboundGuard and one Alerter
sharing the store, recorder and clock, and sets `app.abuse`. The adapters
turn the guards into what the listeners take:

* `smtp_auth(guard, inner)`: wraps a Handler.auth (submission) with throttling;
* `submission_check(guards)`: a `SubmissionCheck` for SubmissionHandler(checks=...);
  a hold is signalled by `envelope.notes["hold"] = True` (the handler must
  then enqueue with `held=True` and not notify the agent);
* `install(app)`: wires both into a built App whose handlers do not take the
  guards yet (used by tests until the lead wires them for real).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..smtp.reply import Reply, r
from ..store import abuse as _schema  # noqa: F401  (registers the abuse tables)
from ..store.store import migrate
from .alerts import Alerter
from .authguard import AuthGuard
from .outguard import OutboundGuard
from .settings import AbuseSection

if TYPE_CHECKING:
    from ..app import App
    from ..smtp.handler import Envelope, Session
    from ..store.models import Account

SmtpAuth = Callable[["Session", str, str], Awaitable["Account | Reply"]]
# Most a failed SMTP AUTH reply is delayed (a tarpit, not the penalty itself).
MAX_TARPIT = 2.0


@dataclass
class Guards:
    auth: AuthGuard
    outbound: OutboundGuard
    alerter: Alerter


def settings_of(config: Any) -> AbuseSection:
    """The [abuse] section (defaults until the lead adds it to Config)."""
    return getattr(config, "abuse", None) or AbuseSection()


def build_abuse(app: App, *, content_score: Callable[[bytes], float] | None = None) -> Guards:
    cfg = app.config
    settings = settings_of(cfg)
    migrate(app.store.db_path)   # the abuse tables may register after the store opened
    alerter = Alerter(app.store, app.recorder, admin_inbox=settings.alert_admin_inbox,
                      user_inbox=settings.alert_user_inbox, hostname=cfg.server.hostname)
    domains = {d.lower() for d in cfg.server.domains}

    def is_local(address: str) -> bool:
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if domain in domains:
            return True
        return app.is_local_domain(domain)  # cached look-up

    outbound = OutboundGuard(settings, store=app.store, recorder=app.recorder, alerter=alerter,
                             is_local=is_local, content_score=content_score)
    auth = AuthGuard(settings, store=app.store, recorder=app.recorder, on_login=outbound.login,
                     alert=lambda kind, acct, ip, text, detail: alerter(kind, acct, ip, text,
                                                                       detail))
    guards = Guards(auth, outbound, alerter)
    app.abuse = guards  # type: ignore[attr-defined]
    return guards


def smtp_auth(guard: AuthGuard, inner: SmtpAuth) -> SmtpAuth:
    """Throttle an SMTP Handler.auth: 454 4.7.0 while throttled (RFC 4954 6)."""
    async def auth(session: Session, username: str, password: str) -> Account | Reply:
        wait = await guard.before_attempt(session.peer_ip, username)
        if wait is not None:
            session.record("auth-throttled", user=username, retry_after=wait)
            return r(454, "4.7.0", f"Too many failed logins; try again in {int(wait)} "
                     "seconds")
        result = await inner(session, username, password)
        if isinstance(result, Reply):
            pause = guard.failure(session.peer_ip, username)
            await asyncio.sleep(min(pause, MAX_TARPIT))
            return result
        guard.success(session.peer_ip, username)
        return result

    return auth


def submission_check(guards: Guards) -> Callable[[Session, Envelope, bytes],
                                                 Awaitable[Reply | None]]:
    """A SubmissionCheck: limits and detection for each submitted message."""
    async def check(session: Session, envelope: Envelope, message: bytes) -> Reply | None:
        account = session.account
        if account is None:
            return None
        rcpts = [p.address for p in envelope.rcpts]
        decision = await guards.outbound.check_submission(
            account, rcpts, message, session.peer_ip, software_hint(session, message))
        session.record("abuse-check", action=decision.action, score=round(decision.score, 2),
                       reasons=list(decision.reasons))
        refusal = decision.smtp()
        if refusal is not None:
            return r(*refusal)
        if decision.held:
            envelope.notes["hold"] = True
        return None

    return check


def software_hint(session: Session, message: bytes) -> str:
    """The mail program: its User-Agent/X-Mailer, else what it said at EHLO."""
    from .outguard import software_of
    return software_of(message) or f"ehlo {session.helo}"


def install(app: App, guards: Guards | None = None) -> Guards:
    """Wire the guards into an App built without them (temporary, for tests)."""
    guards = guards or build_abuse(app)
    handler = getattr(app, "submission_handler", None)
    if handler is not None:
        handler.auth = smtp_auth(guards.auth, handler.auth)
        handler.checks.append(submission_check(guards))
    return guards
