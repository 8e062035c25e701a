"""Fixtures: one real keepmail (MX + web console) on loopback for the whole web suite.

The server runs in-process (tests.support.server.InProcessServer) with the
console added through its `tweak` hook, and its resolver pointed at a test
DNS server serving example.test with a wrong SPF record. Tests that change
shared state use their own accounts; the login-throttling tests come from
their own loopback source address so they never throttle the others.

The admin's TOTP codes come from a virtual clock the tests advance (the
console accepts each 30-second code only once, which real time would make
slow or flaky).
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from argon2 import PasswordHasher

from keepmail import config as configmod
from keepmail.store import accounts
from keepmail.web.wiring import build_web
from tests.support.dnsserver import DnsServer
from tests.support.server import (
    PASSWORD,
    InProcessServer,
    add_users,
    free_port_offset,
    write_config,
)

ADMIN = "alice@example.test"
USERS = (ADMIN, "bob@example.test", "carol@example.test", "dave@example.test",
         "tess@example.test", "uma@example.test")
WRONG_SPF = "v=spf1 ip4:192.0.2.1 -all"
ZONE = {
    "example.test": [("MX", "10 mx.example.test."), ("TXT", WRONG_SPF)],
    "mx.example.test": [("A", "127.0.0.1")],
    "_dmarc.example.test": [("TXT", "v=DMARC1; p=none")],
}


@dataclass
class Console:
    """The running server and what tests need to talk to its console."""

    server: InProcessServer
    dns: DnsServer
    base_url: str
    ca_file: Path
    totp_secret: str = ""
    _virtual_time: float = field(default_factory=lambda: time.time() + 3600)

    @property
    def web(self) -> Any:
        return self.server.app.web_asgi.state.web

    @property
    def mx(self) -> tuple[str, int]:
        return self.server.host, self.server.port("smtp")

    def account(self, address: str) -> Any:
        return self.server.store.read_now(lambda c: accounts.get_account(c, address))

    def next_totp(self) -> str:
        """A fresh code: moves the console's TOTP clock one step forward."""
        self._virtual_time += 30
        when = self._virtual_time
        self.web.totp.clock = lambda: when
        return pyotp.TOTP(self.totp_secret).at(when)

    def client(self, source: str | None = None) -> httpx.Client:
        transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=self.ca_file),
                                        local_address=source)
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=20)

    def login(self, address: str, password: str = PASSWORD, *,
              source: str | None = None) -> httpx.Client:
        client = self.client(source)
        token = csrf_of(client.get("/login").text)
        r = client.post("/login", data={"address": address, "password": password,
                                        "csrf_token": token, "next": "/"})
        assert r.status_code == 303, r.text[:500]
        if r.headers["location"].startswith("/login/totp"):
            token = csrf_of(client.get(r.headers["location"]).text)
            r = client.post("/login/totp", data={"code": self.next_totp(), "csrf_token": token,
                                                 "next": "/"})
            assert r.status_code == 303, r.text[:500]
        return client

    def send(self, sender: str, rcpt: str, subject: str, body: str = "Hello.",
             message_id: str | None = None) -> str:
        # Raw bytes: the email package refuses the hostile header values tests need.
        message_id = message_id or f"<{time.time_ns()}@sender.test>"
        raw = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
               f"Message-ID: {message_id}\r\n\r\n{body}\r\n").encode()
        with smtplib.SMTP(*self.mx, local_hostname="sender.test") as smtp:
            smtp.sendmail(sender, [rcpt], raw)
        return message_id

    def wait_trace(self, client: httpx.Client, **params: str) -> str:
        """The id of the newest trace matching params, once the recorder has written it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page = client.get("/trace", params=params).text
            found = re.findall(r'href="/trace/([0-9a-f]+)"', page)
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no trace for {params}")


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def _add_web(app: Any) -> None:
    if any(name == "web" for name, _port, _svc in app.services):
        return   # App.build already wires the console
    services = build_web(app)
    for name, port, service in services:
        app.add(name, port, service)
    app.web_asgi = services[0][2].asgi_app


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    directory = tmp_path_factory.mktemp("web")
    dns = DnsServer(ZONE, host="127.0.0.53").start()
    path = write_config(directory, extra={"dns": {"nameservers": [dns.nameserver],
                                                  "timeout": 3.0}})
    cfg = configmod.load(path)
    add_users(cfg, *USERS)
    server = InProcessServer(cfg, free_port_offset(), tweak=_add_web).start()
    if not hasattr(server.app, "web_asgi"):
        server.app.web_asgi = next(s for n, _p, s in server.app.services if n == "web").asgi_app
    server.store.write_sync(lambda c: accounts.set_admin(c, ADMIN, True))
    # Logins verify against the hash's own parameters: a light argon2 keeps the suite fast.
    light = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    for address in USERS:
        server.store.write_sync(lambda c, a=address: accounts.set_password(c, a, light))
    c = Console(server, dns, f"https://127.0.0.1:{server.port('web')}",
                server.app.tls_files.cert)
    alice = c.account(ADMIN)
    c.totp_secret = server.call(c.web.totp.begin(alice.id))
    assert server.call(c.web.totp.verify(alice.id, c.next_totp(), enrolling=True))
    try:
        yield c
    finally:
        server.stop()
        dns.stop()


@pytest.fixture(scope="session")
def admin(console: Console) -> Iterator[httpx.Client]:
    client = console.login(ADMIN)
    yield client
    client.close()
