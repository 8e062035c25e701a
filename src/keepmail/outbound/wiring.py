"""Building the outbound services from the app: submission listeners, queue, forwarder.

`build_outbound(app)` returns the services for App to start (submission on
587 and 465, the delivery agent) and sets `app.forwarder`, which the MX
handler takes for aliases that point outside (inbound/mx.py `Forwarder`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..smtp.server import SmtpServer
from ..store.store import migrate
from .agent import DeliveryAgent
from .dkimkeys import DkimKeys
from .forwarding import make_forwarder, srs_secret
from .mxlookup import DnsClient
from .settings import OutboundSection
from .submission import SubmissionHandler

if TYPE_CHECKING:
    from ..app import App, Service

__all__ = ["build_agent", "build_outbound", "make_forwarder", "settings_of"]


def settings_of(config: Any) -> OutboundSection:
    """The [outbound] section (defaults until the lead adds it to Config)."""
    return getattr(config, "outbound", None) or OutboundSection()


def build_agent(app: App) -> DeliveryAgent:
    cfg = app.config
    settings = settings_of(cfg)
    dns = DnsClient(cfg.dns.nameservers, cfg.dns.timeout)
    return DeliveryAgent(app.store, app.recorder, settings, hostname=cfg.server.hostname,
                         dns=dns, srs_secret=srs_secret(app.store.data_dir))


def build_outbound(app: App) -> list[tuple[str, int, Service]]:
    cfg = app.config
    settings = settings_of(cfg)
    # The queue, DKIM and MTA-STS tables register on import of their modules,
    # which may come after App opened the store: bring the schema up to date.
    migrate(app.store.db_path)
    dkim = DkimKeys(app.store, activate_after=settings.dkim_activate_hours * 3600)
    if settings.dkim_sign:
        for domain in cfg.server.domains:
            dkim.ensure(domain)
    agent = build_agent(app)
    handler = SubmissionHandler(app.store, app.authenticator, agent,
                                dkim=dkim if settings.dkim_sign else None)
    services: list[tuple[str, int, Service]] = []
    for name, implicit in (("submission", False), ("submissions", True)):
        port = cfg.port(name, app.port_offset)
        if port:
            services.append((name, port, SmtpServer(
                app._listener(name, port, implicit), handler, hostname=cfg.server.hostname,
                recorder=app.recorder, tls_context=app.tls_context)))
    services.append(("outbound-queue", 0, agent))
    app.outbound_agent = agent            # type: ignore[attr-defined]
    app.submission_handler = handler      # type: ignore[attr-defined]
    app.forwarder = make_forwarder(agent, agent.srs_secret)  # type: ignore[attr-defined]
    return services
