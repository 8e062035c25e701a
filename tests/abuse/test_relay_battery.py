"""No open relay, provably: a battery of relay tricks from an outside address.

The world is a sink SMTP server on 127.0.0.77; a loopback DNS server points
every outside domain (and lookalikes of ours) at it. keepmail runs its MX and
submission listeners on 127.0.0.65; the attacker connects from 127.0.0.66.
After every trick: the outbound queue is empty and the sink saw no
connection. A positive control at the end (an authenticated user sending
outside) proves the harness would notice a relay.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from keepmail import config as configmod
from keepmail.store import queue as q
from tests.smtp.rawclient import Raw
from tests.support.server import (
    PASSWORD,
    InProcessServer,
    add_users,
    free_port_offset,
    port_free,
    write_config,
)

try:
    from tests.support.dns_fixture import LocalDns  # type: ignore[import-not-found]
except ImportError:
    from tests.outbound.peers import LocalDns

HOST, ATTACKER, WORLD = "127.0.0.65", "127.0.0.66", "127.0.0.77"
# Outside domains, including lookalikes of ours (Cyrillic "а" in A-label form).
OUTSIDE = ["evil.test", "example.test.evil.test", "sub.example.test", "xn--exmple-4nf.test",
           "exаmple.test".encode("idna").decode(), "localhost.evil.test"]


class Sink:
    """Stands in for the rest of the Internet: counts every connection and message."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.messages: list[bytes] = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        f.write(b"220 world ESMTP\r\n")
        f.flush()
        data = None
        for line in f:
            verb = line[:4].upper()
            if data is not None:
                if line == b".\r\n":
                    self.messages.append(b"".join(data))
                    data = None
                    f.write(b"250 ok\r\n")
                else:
                    data.append(line)
            elif verb == b"EHLO":
                f.write(b"250-world\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                data = []
                f.write(b"354 go\r\n")
            elif verb == b"QUIT":
                f.write(b"221 bye\r\n")
                f.flush()
                break
            else:
                f.write(b"250 ok\r\n")
            f.flush()
        conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def zone(domains: list[str]) -> str:
    lines = [f"mx.world.test. 60 IN A {WORLD}"]
    for d in dict.fromkeys(domains):
        lines += [f"{d}. 60 IN MX 10 mx.world.test.", f"{d}. 60 IN A {WORLD}"]
    return "\n".join(lines)


@dataclass
class World:
    server: InProcessServer
    sink: Sink
    dns: Any
    log: list[str] = field(default_factory=list)

    def queue(self) -> tuple[int, int]:
        return self.server.store.read_now(q.count)

    def client(self, port: int, implicit_tls: bool = False) -> Raw:
        raw = Raw.__new__(Raw)
        sock = socket.create_connection((HOST, port), 10, source_address=(ATTACKER, 0))
        raw.sock = _tls(sock) if implicit_tls else sock
        raw.buf = b""
        return raw

    def assert_nothing_relayed(self, what: str) -> None:
        time.sleep(0.05)
        assert self.queue() == (0, 0), f"{what}: something was queued for delivery"
        assert self.sink.connections == 0, f"{what}: the world was contacted"


def _tls(sock: socket.socket) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for ip in (HOST, ATTACKER, WORLD):
        if not port_free(ip, 0):
            pytest.skip(f"cannot bind {ip}")
    sink = Sink(WORLD)
    dns = LocalDns(zone([*OUTSIDE, "world.test"]), host="127.0.0.1").start()
    tmp = tmp_path_factory.mktemp("relay")
    outbound = {"remote_port": sink.port, "mta_sts": False, "dane": False, "retry_base": 0.2,
                "retry_max": 1.0, "idle_seconds": 0.2, "connect_timeout": 3.0,
                "command_timeout": 10.0}
    path = write_config(tmp, host=HOST, domains=["example.test"],
                        extra={"dns": {"nameservers": [dns.nameserver], "timeout": 2.0},
                               "outbound": outbound})
    cfg = configmod.load(path)
    add_users(cfg, "alice@example.test", "bob@example.test")
    # App.build wires submission, the queue and the abuse guards itself.
    server = InProcessServer(cfg, free_port_offset(HOST)).start()
    yield World(server, sink, dns)
    server.stop()
    dns.stop()
    sink.close()


# (MAIL FROM path, RCPT TO argument, HELO name) — every one must not relay.
MX_TRICKS: list[tuple[str, str, str]] = [
    ("<x@evil.test>", "<user@evil.test>", "evil.test"),
    ("<x@evil.test>", "<user%evil.test@example.test>", "evil.test"),
    ("<x@evil.test>", "<user%evil.test%example.test@example.test>", "evil.test"),
    ("<x@evil.test>", "<@example.test:user@evil.test>", "evil.test"),
    ("<x@evil.test>", "<@mx.example.test,@example.test:user@evil.test>", "evil.test"),
    ("<x@evil.test>", "<evil.test!user@example.test>", "evil.test"),
    ("<x@evil.test>", "<evil.test!user>", "evil.test"),
    ("<x@evil.test>", '<"user@evil.test"@example.test>', "evil.test"),
    ("<x@evil.test>", '<"user%evil.test"@example.test>', "evil.test"),
    ("<x@evil.test>", '<"user@evil.test">', "evil.test"),
    ("<x@evil.test>", "<user\\@evil.test@example.test>", "evil.test"),
    ("<x@evil.test>", f"<user@[{WORLD}]>", "evil.test"),
    ("<x@evil.test>", f"<user@[{HOST}]>", "evil.test"),
    ("<x@evil.test>", "<user@[IPv6:::1]>", "evil.test"),
    ("<x@evil.test>", "<user@[evil.test]>", "evil.test"),
    ("<x@evil.test>", "<user@evil.test.>", "evil.test"),
    ("<x@evil.test>", "<user@EVIL.TEST>", "evil.test"),
    ("<x@evil.test>", "<USER@Evil.Test.>", "evil.test"),
    ("<x@evil.test>", "<user@example.test.evil.test>", "evil.test"),
    ("<x@evil.test>", "<user@sub.example.test>", "evil.test"),
    ("<x@evil.test>", "<user@evil.test@example.test>", "evil.test"),
    ("<x@evil.test>", "<alice@example.test@evil.test>", "evil.test"),
    ("<x@evil.test>", "<user@@evil.test>", "evil.test"),
    ("<x@evil.test>", "<user@%evil.test>", "evil.test"),
    ("<x@evil.test>", "< user@evil.test >", "evil.test"),
    ("<x@evil.test>", " <user@evil.test>", "evil.test"),
    ("<x@evil.test>", "<user@evil.test", "evil.test"),
    ("<x@evil.test>", "user@evil.test", "evil.test"),
    ("<x@evil.test>", "<user@localhost>", "evil.test"),
    ("<x@evil.test>", "<postmaster@evil.test>", "evil.test"),
    ("<x@evil.test>", "<user@xn--exmple-4nf.test>", "evil.test"),
    ("<x@evil.test> SMTPUTF8", "<user@exаmple.test>", "evil.test"),
    ("<x@evil.test> SMTPUTF8", "<usér@evil.test>", "evil.test"),
    ("<x@evil.test>", "<user@evil.test> NOTIFY=SUCCESS ORCPT=rfc822;a@example.test",
     "evil.test"),
    ("<alice@example.test>", "<user@evil.test>", "evil.test"),
    ("<alice@example.test>", "<user@evil.test>", "example.test"),
    ("<alice@example.test>", "<user@evil.test>", "mx.example.test"),
    ("<alice@example.test>", "<user@evil.test>", f"[{HOST}]"),
    ("<alice@example.test>", "<user@evil.test>", "localhost"),
    ("<>", "<user@evil.test>", "evil.test"),
    ("<>", "<user%evil.test@example.test>", "evil.test"),
    ("<user@evil.test>", "<user@evil.test>", "evil.test"),
]


def _mx_trick(w: World, sender: str, rcpt: str, helo: str) -> tuple[int, int]:
    c = w.client(w.server.port("smtp"))
    try:
        assert c.reply()[0] == 220
        c.cmd(f"EHLO {helo}".encode())
        mail = c.cmd(f"MAIL FROM:{sender}".encode())
        code = c.cmd(f"RCPT TO:{rcpt}".encode())[0]
        # Accepted: it must then be local mail only, which the checks below prove.
        if mail[0] == 250 and code == 250 and c.cmd(b"DATA")[0] == 354:
            c.send(b"From: x@evil.test\r\nSubject: relay?\r\n\r\nrelay test\r\n.\r\n")
            c.reply()
        c.cmd(b"QUIT")
        return mail[0], code
    finally:
        c.close()


@pytest.mark.parametrize("sender,rcpt,helo", MX_TRICKS)
def test_mx_does_not_relay(world: World, sender: str, rcpt: str, helo: str) -> None:
    _mail, code = _mx_trick(world, sender, rcpt, helo)
    assert code >= 500 or code < 200, f"RCPT TO:{rcpt} got {code}"
    world.assert_nothing_relayed(f"MX {sender} -> {rcpt} (HELO {helo})")


def test_mx_protocol_games(world: World) -> None:
    """Pipelined, bare-CR, lower-case, XCLIENT and BDAT variants."""
    games = [
        b"EHLO evil.test\r\nMAIL FROM:<x@evil.test>\r\nRCPT TO:<user@evil.test>\r\n"
        b"DATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n",
        b"EHLO evil.test\r\nMAIL FROM:<x@evil.test>\r\n"
        b"RCPT TO:<alice@example.test>\rRCPT TO:<user@evil.test>\r\nQUIT\r\n",
        b"ehlo evil.test\r\nmail from:<x@evil.test>\r\nrcpt to:<user@evil.test>\r\nquit\r\n",
        b"EHLO evil.test\r\nXCLIENT ADDR=127.0.0.1 LOGIN=alice@example.test\r\n"
        b"XFORWARD ADDR=127.0.0.1\r\nMAIL FROM:<x@evil.test>\r\nRCPT TO:<user@evil.test>\r\n"
        b"QUIT\r\n",
        b"EHLO evil.test\r\nMAIL FROM:<x@evil.test>\r\nRCPT TO:<user@evil.test>\r\n"
        b"BDAT 12 LAST\r\nSubject: x\r\n\r\nQUIT\r\n",
        b"HELO evil.test\r\nMAIL FROM:<x@evil.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"RCPT TO:<user@evil.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n",
    ]
    for game in games:
        c = world.client(world.server.port("smtp"))
        try:
            c.reply()
            c.send(game)
            c.quiet(1.0)
        finally:
            c.close()
        world.assert_nothing_relayed(f"MX game {game[:60]!r}")


def _submission(w: World, port: str, steps: list[bytes], *, starttls: bool = True,
                implicit: bool = False) -> list[int]:
    c = w.client(w.server.port(port), implicit_tls=implicit)
    codes = []
    try:
        c.reply()
        c.cmd(b"EHLO evil.test")
        if starttls and not implicit:
            assert c.cmd(b"STARTTLS")[0] == 220
            c.sock = _tls(c.sock)  # type: ignore[arg-type]
            c.cmd(b"EHLO evil.test")
        for step in steps:
            code, _ = c.cmd(step)
            codes.append(code)
            if code == 354:
                codes.append(c.cmd(b"From: <alice@example.test>\r\nSubject: x\r\n\r\nx\r\n.")[0])
        c.cmd(b"QUIT")
    except ConnectionError:
        pass
    finally:
        c.close()
    return codes


def _plain(user: str, password: str, authz: str = "") -> bytes:
    token = base64.b64encode(f"{authz}\0{user}\0{password}".encode()).decode()
    return f"AUTH PLAIN {token}".encode()


SEND = [b"MAIL FROM:<alice@example.test>", b"RCPT TO:<user@evil.test>", b"DATA"]
SUBMISSION_TRICKS: list[tuple[str, str, list[bytes], bool]] = [
    ("no auth", "submission", SEND, True),
    ("no auth, no TLS", "submission", SEND, False),
    ("auth before TLS", "submission", [_plain("alice@example.test", PASSWORD), *SEND], False),
    ("wrong password", "submission", [_plain("alice@example.test", "wrong"), *SEND], True),
    ("unknown user", "submission", [_plain("nobody@example.test", "x"), *SEND], True),
    ("empty password", "submission", [_plain("alice@example.test", ""), *SEND], True),
    ("authzid impersonation", "submission",
     [_plain("nobody@evil.test", "x", "alice@example.test"), *SEND], True),
    ("auth login cancelled", "submission",
     [b"AUTH LOGIN", base64.b64encode(b"alice@example.test"), b"*", *SEND], True),
    ("null sender", "submission", [b"MAIL FROM:<>", b"RCPT TO:<user@evil.test>", b"DATA"],
     True),
    ("percent hack unauthenticated", "submission",
     [b"MAIL FROM:<x@evil.test>", b"RCPT TO:<user%evil.test@example.test>", b"DATA"], True),
    ("implicit TLS no auth", "submissions", SEND, False),
    ("implicit TLS wrong password", "submissions",
     [_plain("alice@example.test", "wrong"), *SEND], False),
]


@pytest.mark.parametrize("what,port,steps,starttls", SUBMISSION_TRICKS,
                         ids=[t[0] for t in SUBMISSION_TRICKS])
def test_submission_does_not_relay(world: World, what: str, port: str, steps: list[bytes],
                                   starttls: bool) -> None:
    codes = _submission(world, port, steps, starttls=starttls, implicit=port == "submissions")
    assert 354 not in codes, f"{what}: DATA was accepted: {codes}"
    world.assert_nothing_relayed(f"submission: {what} {codes}")


def test_zz_positive_control_authenticated_user_relays(world: World) -> None:
    """The harness can see a relay: alice, logged in, sends outside and it arrives."""
    c = _submission(world, "submission", [
        _plain("alice@example.test", PASSWORD), b"MAIL FROM:<alice@example.test>",
        b"RCPT TO:<friend@evil.test>", b"DATA"])
    assert c[:4] == [235, 250, 250, 354], c
    deadline = time.monotonic() + 15
    while not world.sink.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.sink.messages, "the control message never reached the sink"


def test_loop_still_alive(world: World) -> None:
    assert world.server.call(asyncio.sleep(0, result=True))
