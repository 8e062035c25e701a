"""Builds keepmail's services from the config and runs them in one asyncio loop.

Start order: store and recorder first (everything records and stores), then
listeners. Stop order is the reverse, and listeners finish the sessions in
flight before the store closes, so SIGTERM never loses acknowledged mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from dataclasses import dataclass, field
from typing import Any, Protocol

from .abuse.wiring import build_abuse
from .abuse.wiring import install as install_abuse
from .cache import TtlCache
from .config import Config
from .dnsx.resolver import Resolver
from .imap.server import ImapConfig, ImapServer
from .inbound.authchecks import AuthChecks
from .inbound.defenses import Greylister, GreylistPolicy
from .inbound.lists import correspondent_check, sender_list_check
from .inbound.mx import CheckContext, MxHandler, MxPolicy
from .inbound.quarantine import quarantine
from .inbound.verdict import Thresholds
from .mailauth import arc
from .maintenance import Maintenance
from .mxworkers import MxWorkers, share
from .outbound.dkimkeys import DkimKeys
from .outbound.wiring import build_outbound
from .recorder import Recorder
from .smtp.protocol import Limits
from .smtp.server import ListenerConfig, SmtpServer
from .spam.classifier import Classifier
from .spam.learning import Learner, content_check
from .store import Store, accounts
from .store.auth import Authenticator
from .tls import CertFiles, ensure_self_signed, server_context
from .web.wiring import build_web

log = logging.getLogger("keepmail")


class Service(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...


@dataclass
class App:
    config: Config
    port_offset: int = 0
    store: Store = field(init=False)
    recorder: Recorder = field(init=False)
    authenticator: Authenticator = field(init=False)
    tls_context: ssl.SSLContext = field(init=False)
    services: list[tuple[str, int, Service]] = field(default_factory=list)
    auth_guard: Any = None   # keepmail.abuse AuthGuard once built
    outbound_agent: Any = None   # keepmail.outbound DeliveryAgent once built
    forwarder: Any = None        # MX hook for aliases pointing outside
    classifier: Any = None       # keepmail.spam Classifier

    def __post_init__(self) -> None:
        cfg = self.config
        self.store = Store.open(cfg.data_dir, cfg.key_file)
        self.recorder = Recorder(cfg.data_dir / "recorder.db", cfg.recorder.retention_days)
        self.authenticator = Authenticator(self.store)
        self.tls_files = self._tls_files()
        self.tls_context = server_context(self.tls_files)
        self.resolver = Resolver(cfg.dns.nameservers or None, timeout=cfg.dns.timeout)
        self._local_domains: TtlCache[str, bool] = TtlCache()
        self._addresses: TtlCache[int, str | None] = TtlCache()
        self._ensure_domains()

    def _tls_files(self) -> CertFiles:
        tls = self.config.tls
        if tls.cert_file:
            return CertFiles(self.config.resolve(tls.cert_file), self.config.resolve(tls.key_file))
        return ensure_self_signed(self.config.server.hostname, self.config.data_dir / "tls")

    def _ensure_domains(self) -> None:
        for name in self.config.server.domains:
            if self.store.read_now(lambda c, n=name: accounts.get_domain(c, n)) is None:
                self.store.write_sync(lambda c, n=name: accounts.add_domain(c, n))

    # -- building -------------------------------------------------------------
    def smtp_limits(self) -> Limits:
        s = self.config.smtp
        return Limits(max_message_size=s.max_message_size, max_recipients=s.max_recipients,
                      command_timeout=s.command_timeout,
                      max_messages=s.max_messages_per_connection)

    def _listener(self, name: str, port: int, implicit_tls: bool = False) -> ListenerConfig:
        s = self.config.smtp
        return ListenerConfig(name=name, hosts=self.config.server.listen, port=port,
                              implicit_tls=implicit_tls, limits=self.smtp_limits(),
                              max_connections=s.max_connections,
                              max_connections_per_ip=s.max_connections_per_ip)

    def mx_listener(self, port: int) -> ListenerConfig:
        """Port 25's listener; with several MX processes each takes its share of the limits."""
        listener = self._listener("mx", port)
        n = self.config.mx_processes
        if n > 1:
            listener.reuse_port = True
            listener.max_connections = share(listener.max_connections, n)
            listener.max_connections_per_ip = share(listener.max_connections_per_ip, n)
        return listener

    def build(self) -> None:
        """Create every service; the order matters where one hands another a hook."""
        cfg = self.config
        self.add("maintenance", 0, Maintenance(cfg, self.store, self.recorder))
        model_path = cfg.data_dir / "spam" / "model.bin"
        self.classifier = Classifier.open(model_path)  # the starter model on a new install
        learner = Learner(self.store, self.classifier, model_path)
        self.add("spam-learner", 0, learner)
        outbound = build_outbound(self)        # sets self.forwarder for alias forwards
        # Writing to someone vouches for them: their reputation gets a (bounded) ham vote.
        self.submission_handler.on_sent = learner.note_reply
        guards = build_abuse(self, content_score=lambda raw: self.classifier.score(
            raw).probability)                  # sets self.abuse
        install_abuse(self, guards)            # throttles and limits submission
        self.auth_guard = guards.auth
        self.outbound_agent.on_result = guards.outbound.delivery_result
        mx_port = cfg.port("smtp", self.port_offset)
        if mx_port:
            mx = self.mx_handler()
            received_from = guards.outbound.received_from
            mx.on_inbox = lambda account_id, sender: received_from(
                self.address_of(account_id) or account_id, sender)
            self.add("smtp", mx_port, SmtpServer(
                self.mx_listener(mx_port), mx, hostname=cfg.server.hostname,
                recorder=self.recorder, tls_context=self.tls_context))
            if cfg.mx_processes > 1:
                self.add("mx-workers", 0, self._mx_workers(mx.on_inbox))
        for name, port, service in outbound:
            self.add(name, port, service)
        self._build_imap()
        for name, port, service in build_web(self):
            self.add(name, port, service)

    def _mx_workers(self, on_inbox: Any) -> MxWorkers:
        agent = self.outbound_agent

        def queued(msg_id: int) -> None:
            asyncio.get_running_loop().create_task(agent.notify_when_visible(msg_id))

        return MxWorkers(self.config.path.resolve(), self.port_offset,
                         self.config.mx_processes - 1,
                         on_mailboxes=lambda ids: self.store.hub.publish(*ids),
                         on_inbox=on_inbox, on_queued=queued)

    def _build_imap(self) -> None:
        cfg = self.config
        imap_config = ImapConfig(hostname=cfg.server.hostname)
        for name, implicit in (("imap", False), ("imaps", True)):
            port = cfg.port(name, self.port_offset)
            if port:
                server = ImapServer(self.store, self.authenticator, self.tls_context,
                                    cfg.server.listen, port, implicit, recorder=self.recorder,
                                    config=imap_config)
                server.auth_guard = self.auth_guard
                self.add(name, port, server)

    def mx_handler(self) -> MxHandler:
        cfg = self.config
        spam, inbound = cfg.spam, cfg.inbound
        n = cfg.mx_processes
        domains = {d.name for d in self.store.read_now(accounts.list_domains)}
        policy = MxPolicy(
            thresholds=Thresholds(spam.junk_score, spam.quarantine_score, spam.reject_score),
            our_names={cfg.server.hostname.lower(), *domains},
            our_ips={ip for ip in cfg.server.listen if ip not in ("0.0.0.0", "::")},
            greet_delay=inbound.greet_delay,
            connections_per_minute=share(inbound.max_connections_per_minute, n),
            messages_per_minute=share(inbound.max_messages_per_minute, n))
        greylister = Greylister(self.store, GreylistPolicy(
            enabled=inbound.greylisting, min_score=inbound.greylist_min_score,
            delay=inbound.greylist_delay))
        auth = AuthChecks(self.resolver, authserv_id=inbound.authserv_id or cfg.server.hostname,
                          is_local_domain=self.is_local_domain,
                          block_lists=inbound.dnsbl_zones, allow_lists=inbound.dnswl_zones)
        on = inbound.sender_checks
        handler = MxHandler(self.store, policy=policy, greylister=greylister,
                         envelope_checks=[auth.envelope] if on else [],
                         checks=([auth.message] if on else []) + [
                             sender_list_check(self.store),
                             correspondent_check(self.store)] + (
                             [content_check(self.classifier, self.address_of)]
                             if cfg.spam.classifier else []),
                         forwarder=getattr(self, "forwarder", None),
                         quarantiner=lambda ctx: quarantine(self.store, ctx))
        dkim = DkimKeys(self.store)

        def seal_keys(domain: str) -> list[arc.SealKey]:
            return [arc.SealKey(k.domain, k.selector, k.key) for k in dkim.signing_keys(domain)]

        async def seal(raw: bytes, domain: str, ctx: CheckContext) -> bytes:
            return await auth.arc_seal(raw, domain, ctx, seal_keys)

        handler.arc_sealer = seal
        return handler

    def address_of(self, account_id: int) -> str | None:
        return self._addresses.get(account_id, lambda: _address(self.store, account_id))

    def is_local_domain(self, domain: str) -> bool:
        name = domain.lower().rstrip(".")
        return self._local_domains.get(name, lambda: self.store.read_now(
            lambda c: accounts.get_domain(c, name)) is not None)

    def add(self, name: str, port: int, service: Service) -> None:
        self.services.append((name, port, service))

    # -- running ----------------------------------------------------------------
    async def start(self) -> None:
        if not self.services:
            self.build()
        for name, port, service in self.services:
            await service.start()
            if port:
                log.info("%s listening on %s port %d", name,
                         ",".join(self.config.server.listen), port)

    async def stop(self) -> None:
        for _name, _port, service in reversed(self.services):
            with contextlib.suppress(Exception):
                await service.close()
        self.recorder.close()
        self.store.close()

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gently."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("shutting down: finishing sessions in flight")
            await self.stop()


def _address(store: Store, account_id: int) -> str | None:
    account = store.read_now(lambda c: accounts.get_account_by_id(c, account_id))
    return account.address if account else None
