"""Fixtures: a real keepmail IMAP server on loopback with TLS, in a thread of its own.

Each test gets a fresh store in tmp_path with accounts alice and bob; clients
(imaplib, imapclient, raw sockets, Debian mail programs) connect over real
sockets. The server runs on its own event loop thread so blocking clients can
be used directly in tests.
"""

from __future__ import annotations

import asyncio
import imaplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keepmail import tls
from keepmail.imap.parser import Limits
from keepmail.imap.server import ImapConfig, ImapServer
from keepmail.store import Copy, Store, accounts
from keepmail.store import mail as mailq
from keepmail.store.auth import Authenticator
from tests.support.server import PASSWORD, password_hash

ALICE = "alice@example.test"
BOB = "bob@example.test"


class Recorder:
    """Collects recorder events for assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.n = 0

    def new_trace(self, kind: str, parent: str = "", **summary: Any) -> str:
        self.n += 1
        return f"t{self.n}"

    def event(self, trace_id: str, kind: str, **data: Any) -> None:
        self.events.append((trace_id, kind, data))

    def kinds(self) -> list[str]:
        return [k for _t, k, _d in self.events]


@dataclass
class ImapEnv:
    store: Store
    loop: asyncio.AbstractEventLoop
    host: str
    tls_port: int
    plain_port: int
    client_context: ssl.SSLContext
    recorder: Recorder
    servers: list[ImapServer] = field(default_factory=list)
    ca_file: Path | None = None

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def account_id(self, address: str = ALICE) -> int:
        acct = self.store.read_now(lambda c: accounts.get_account(c, address))
        assert acct is not None
        return acct.id

    def mailbox(self, name: str, address: str = ALICE) -> Any:
        account_id = self.account_id(address)
        return self.store.read_now(lambda c: mailq.get_mailbox(c, account_id, name))

    def deliver(self, raw: bytes, mailbox: str = "INBOX", address: str = ALICE,
                flags: frozenset[str] = frozenset()) -> int:
        """Deliver as the MX would (store.deliver wakes IDLE sessions); returns the UID."""
        box = self.mailbox(mailbox, address)
        copy = Copy(box.account_id, box.id, box.name, flags)
        placed = self.call(self.store.deliver(raw, [copy]))
        return int(placed[0].uid)

    def connect(self, login: bool = True, user: str = ALICE) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(self.host, self.tls_port, ssl_context=self.client_context,
                                   timeout=20)
        if login:
            client.login(user, PASSWORD)
        return client

    def raw(self, tls_on: bool = True) -> RawClient:
        sock = socket.create_connection((self.host, self.tls_port if tls_on else self.plain_port),
                                        timeout=10)
        if tls_on:
            sock = self.client_context.wrap_socket(sock, server_hostname="localhost")
        return RawClient(sock)


class RawClient:
    """A line-level client for exact protocol checks."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_bytes(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged reply; literals are inlined."""
        out = []
        while True:
            line = self.line()
            while line.endswith(b"}") and b"{" in line:
                size = int(line[line.rindex(b"{") + 1:-1].rstrip(b"+"))
                line += b"\r\n" + self.read_bytes(size) + self.line()
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    def cmd(self, text: bytes | str) -> list[bytes]:
        data = text.encode() if isinstance(text, str) else text
        tag = data.split(b" ", 1)[0]
        self.send(data + b"\r\n")
        return self.until_tagged(tag)

    def login(self, user: str = ALICE) -> None:
        reply = self.cmd(f"L1 LOGIN {user} \"{PASSWORD}\"")
        assert reply[-1].startswith(b"L1 OK"), reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_CERTS: dict[str, Any] = {}


def _certs(base: Path) -> Any:
    # One CA and server certificate per test session: key generation is not free.
    if "files" not in _CERTS:
        base.mkdir(parents=True, exist_ok=True)
        _CERTS["files"] = tls.make_certificate(["localhost", "127.0.0.1"], base / "cert.pem",
                                               base / "key.pem")
    return _CERTS["files"]


def make_env(tmp_path: Path, tmp_root: Path, config: ImapConfig | None = None,
             tweak: Callable[[Store], None] | None = None) -> Iterator[ImapEnv]:
    store = Store.open(tmp_path / "data")

    def setup(conn: Any) -> None:
        accounts.add_domain(conn, "example.test")
        accounts.add_account(conn, ALICE, password_hash())
        accounts.add_account(conn, BOB, password_hash())
    store.write_sync(setup)
    if tweak is not None:
        tweak(store)
    files = _certs(tmp_root / "imap-certs")
    server_ctx = tls.server_context(files)
    client_ctx = ssl.create_default_context(cafile=str(files.cert))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    host = "127.0.0.1"
    recorder = Recorder()
    cfg = config or ImapConfig(hostname="imap.example.test", fail_delay=0.0,
                               limits=Limits(max_append=10 * 1024 * 1024))
    auth = Authenticator(store)
    env = ImapEnv(store, loop, host, 0, 0, client_ctx, recorder, ca_file=files.cert)
    for implicit in (True, False):
        srv = ImapServer(store, auth, server_ctx, host, _free_port(host), implicit,
                         recorder=recorder, config=cfg)
        env.call(srv.start())
        env.servers.append(srv)
        if implicit:
            env.tls_port = srv.ports[0]
        else:
            env.plain_port = srv.ports[0]
    try:
        yield env
    finally:
        for srv in env.servers:
            env.call(srv.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        store.close()
        loop.close()


@pytest.fixture
def imap(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapEnv]:
    yield from make_env(tmp_path, tmp_path_factory.getbasetemp())


def message(subject: str = "Hello", body: str = "Hi there.\r\n", sender: str = "bob@example.test",
            to: str = ALICE, extra: str = "", msgid: str | None = None) -> bytes:
    mid = msgid or f"<{abs(hash((subject, body, time.time())))}@example.test>"
    return (f"From: Bob <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: {mid}\r\n{extra}\r\n{body}"
            ).encode()
