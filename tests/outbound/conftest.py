"""Fixtures for the outbound tests: organizations built in-process on loopback.

An `Org` is one keepmail's stores and services (submission listener, delivery
agent, optionally an MX) on its own 127.0.0.x address, built directly from
the modules so the tests do not depend on the CLI wiring.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from keepmail import tls
from keepmail.inbound.mx import MxHandler
from keepmail.outbound.agent import DeliveryAgent
from keepmail.outbound.dkimkeys import DkimKeys
from keepmail.outbound.forwarding import make_forwarder, srs_secret
from keepmail.outbound.mxlookup import DnsClient
from keepmail.outbound.settings import OutboundSection
from keepmail.outbound.submission import SubmissionHandler
from keepmail.recorder import Recorder
from keepmail.recorder.query import events as recorder_events
from keepmail.smtp.server import ListenerConfig, SmtpServer
from keepmail.store import Store, accounts
from keepmail.store import queue as q  # also registers the queue schema
from keepmail.store.auth import Authenticator
from tests.support.server import PASSWORD, mailbox_messages, password_hash

T = TypeVar("T")
FAST = OutboundSection(retry_base=0.2, retry_max=1.0, idle_seconds=0.5, connect_timeout=3.0,
                       command_timeout=10.0, mta_sts=False, dane=False)


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@dataclass
class CA:
    cert: Path
    key: Path

    def issue(self, directory: Path, names: list[str]) -> tls.CertFiles:
        issuer = tls.load_ca(self.cert, self.key)
        return tls.make_certificate(names, directory / "cert.pem", directory / "key.pem",
                                    issuer=issuer)

    def server_context(self, directory: Path, names: list[str]) -> ssl.SSLContext:
        return tls.server_context(self.issue(directory, names))


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    d = tmp_path_factory.mktemp("ca")
    tls.make_certificate(["keepmail test CA"], d / "ca.pem", d / "ca.key", is_ca=True)
    return CA(d / "ca.pem", d / "ca.key")


@dataclass
class Org:
    name: str
    host: str
    domain: str
    directory: Path
    settings: OutboundSection
    nameserver: str
    store: Store = field(init=False)
    recorder: Recorder = field(init=False)
    agent: DeliveryAgent = field(init=False)
    dkim: DkimKeys = field(init=False)
    submission: SmtpServer | None = None
    submissions: SmtpServer | None = None
    mx: SmtpServer | None = None
    tls_context: ssl.SSLContext | None = None

    def open(self, users: list[str], aliases: dict[str, list[str]] | None = None) -> Org:
        self.store = Store.open(self.directory / "data")
        self.recorder = Recorder(self.directory / "recorder.db")

        def setup(c: Any) -> None:
            if accounts.get_domain(c, self.domain) is None:
                accounts.add_domain(c, self.domain)
            for u in users:
                if accounts.get_account(c, u) is None:
                    accounts.add_account(c, u, password_hash())
            for a, targets in (aliases or {}).items():
                accounts.add_alias(c, a, targets)

        self.store.write_sync(setup)
        self.dkim = DkimKeys(self.store)
        self.dkim.ensure(self.domain)
        return self

    async def start(self, ca: CA, *, mx_port: int = 0, agent: bool = True) -> Org:
        hostname = f"mail.{self.domain}"
        files = ca.issue(self.directory / "tls", [hostname, self.host])
        self.tls_context = tls.server_context(files)
        dns = DnsClient([self.nameserver], 2.0)
        self.agent = DeliveryAgent(self.store, self.recorder, self.settings, hostname=hostname,
                                   dns=dns, srs_secret=srs_secret(self.store.data_dir))
        handler = SubmissionHandler(self.store, Authenticator(self.store), self.agent,
                                    dkim=self.dkim)
        self.submission = SmtpServer(ListenerConfig("submission", [self.host], 0), handler,
                                     hostname=hostname, recorder=self.recorder,
                                     tls_context=self.tls_context)
        self.submissions = SmtpServer(ListenerConfig("submissions", [self.host], 0,
                                                     implicit_tls=True), handler,
                                      hostname=hostname, recorder=self.recorder,
                                      tls_context=self.tls_context)
        await self.submission.start()
        await self.submissions.start()
        if mx_port:
            mx = MxHandler(self.store, forwarder=make_forwarder(self.agent,
                                                                self.agent.srs_secret))
            self.mx = SmtpServer(ListenerConfig("mx", [self.host], mx_port), mx,
                                 hostname=hostname, recorder=self.recorder,
                                 tls_context=self.tls_context)
            await self.mx.start()
        if agent:
            await self.agent.start()
        return self

    @property
    def port(self) -> int:
        assert self.submission is not None
        return self.submission.ports[0]

    @property
    def tls_port(self) -> int:
        assert self.submissions is not None
        return self.submissions.ports[0]

    async def stop(self) -> None:
        for server in (self.submission, self.submissions, self.mx):
            if server is not None:
                await server.close(grace=5)
        await self.agent.close(grace=5)
        self.recorder.close()
        self.store.close()

    def inbox(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        return mailbox_messages(self.store, address, mailbox)

    def queue_size(self) -> tuple[int, int]:
        return self.store.read_now(q.count)

    def events(self, kind: str | None = None) -> list[tuple[str, str, str]]:
        self.recorder.flush()
        # Data encoded in json.dumps' layout, so tests can look for '"key": "value"'.
        return [(e["trace_id"], e["kind"], json.dumps(e["data"]))
                for e in recorder_events(self.recorder._conn, kind)]


def make_org(tmp_path: Path, name: str, host: str, domain: str, nameserver: str,
             users: list[str], settings: OutboundSection | None = None,
             aliases: dict[str, list[str]] | None = None) -> Org:
    org = Org(name, host, domain, tmp_path / name, settings or FAST, nameserver)
    return org.open(users, aliases)


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def submit(host: str, port: int, user: str, sender: str, rcpts: list[str], message: bytes,
           password: str = PASSWORD) -> dict[str, Any]:
    """Submit over 587-style STARTTLS + AUTH with smtplib (blocking: run in a thread)."""
    with smtplib.SMTP(host, port, timeout=30) as s:
        s.starttls(context=client_context())
        s.login(user, password)
        return s.sendmail(sender, rcpts, message)


async def asubmit(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return await asyncio.to_thread(submit, *args, **kwargs)


async def wait_for(predicate: Callable[[], bool], limit: float = 20.0,
                   what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def message(sender: str, to: str, subject: str = "hello", body: str = "Hello there.\r\n",
            extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}\r\n{body}").encode()


def with_settings(base: OutboundSection, **changes: Any) -> OutboundSection:
    return replace(base, **changes)
