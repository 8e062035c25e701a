"""The delivery agent against scripted SMTP peers and a DNS server on loopback:
retries, bounces (RFC 3464 DSN), MTA-STS (RFC 8461), 8BITMIME, many recipients."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from keepmail import tls
from keepmail.outbound.settings import OutboundSection

from .conftest import CA, FAST, Org, asubmit, make_org, message, run, wait_for, with_settings
from .peers import LocalDns, PeerSession, ScriptedSmtp

HOST, PEER = "127.0.0.51", "127.0.0.52"
ZONE = f"""
b.test. 60 IN MX 10 mx.b.test.
mx.b.test. 60 IN A {PEER}
"""


async def setup(tmp_path: Path, ca: CA, *, script: Callable[[PeerSession, str], str | None]
                | None = None, peer_tls: ssl.SSLContext | None = None,
                extensions: tuple[str, ...] | None = None, zone: str = ZONE,
                settings: OutboundSection = FAST) -> tuple[Org, ScriptedSmtp, LocalDns]:
    kwargs: dict[str, Any] = {"script": script, "tls": peer_tls}
    if extensions is not None:
        kwargs["extensions"] = extensions
    peer = await ScriptedSmtp(PEER, **kwargs).start()
    dns = LocalDns(zone).start()
    org = make_org(tmp_path, "a", HOST, "a.test", dns.nameserver, ["alice@a.test"],
                   settings=with_settings(settings, remote_port=peer.port))
    await org.start(ca)
    return org, peer, dns


def scenario(tmp_path: Path, ca: CA, body: Callable[[Org, ScriptedSmtp, LocalDns],
                                                     Awaitable[None]], **kw: Any) -> None:
    async def go() -> None:
        org, peer, dns = await setup(tmp_path, ca, **kw)
        try:
            await body(org, peer, dns)
        finally:
            await org.stop()
            await peer.close()
            dns.stop()
    run(go())


def test_temporary_failure_then_success(tmp_path: Path, ca: CA) -> None:
    tries = {"n": 0}

    def greylist(session: PeerSession, command: str) -> str | None:
        if command.startswith("RCPT"):
            tries["n"] += 1
            if tries["n"] == 1:
                return "451 4.7.1 Greylisted, come back later"
        return None

    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["bob@b.test"],
                      message("alice@a.test", "bob@b.test", subject="retry me"))
        await wait_for(lambda: len(peer.messages) == 1, what="delivery after retry")
        await wait_for(lambda: org.queue_size() == (0, 0), what="empty queue")
        assert peer.messages[0].rcpts == ["bob@b.test"]
        assert b"Subject: retry me" in peer.messages[0].data
        results = [e for e in org.events("result")]
        assert '"outcome": "deferred"' in results[0][2] and "Greylisted" in results[0][2]
        assert '"outcome": "delivered"' in results[-1][2]
        assert org.inbox("alice@a.test") == []   # no delay notice, no bounce

    scenario(tmp_path, ca, body, script=greylist)


def test_permanent_failure_dsn_has_remote_reply(tmp_path: Path, ca: CA) -> None:
    def refuse(session: PeerSession, command: str) -> str | None:
        if command.startswith("RCPT") and "nobody" in command:
            return "550 5.1.1 <nobody@b.test>: Recipient address rejected: User unknown"
        return None

    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        await asubmit(HOST, org.port, "alice@a.test", "alice@a.test",
                      ["nobody@b.test", "bob@b.test"],
                      message("alice@a.test", "nobody@b.test", subject="to the void"))
        await wait_for(lambda: len(org.inbox("alice@a.test")) == 1, what="DSN in the inbox")
        [dsn] = org.inbox("alice@a.test")
        assert b"multipart/report; report-type=delivery-status" in dsn
        assert b"Final-Recipient: rfc822; nobody@b.test" in dsn
        assert b"Action: failed" in dsn and b"Status: 5.1.1" in dsn
        assert b"Recipient address rejected: User unknown" in dsn
        assert b"Remote-MTA: dns; mx.b.test" in dsn
        assert b"Subject: to the void" in dsn          # original headers enclosed
        assert b"bob@b.test" not in dsn.split(b"text/rfc822-headers")[0]
        assert [m.rcpts for m in peer.messages] == [["bob@b.test"]]
        await wait_for(lambda: org.queue_size() == (0, 0), what="empty queue")

    scenario(tmp_path, ca, body, script=refuse)


def test_lifetime_expiry_bounces_and_delay_notice(tmp_path: Path, ca: CA) -> None:
    def always_later(session: PeerSession, command: str) -> str | None:
        return "451 4.3.0 Try again later" if command.startswith("MAIL") else None

    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["bob@b.test"],
                      message("alice@a.test", "bob@b.test", subject="slow"))
        await wait_for(lambda: len(org.inbox("alice@a.test")) == 2, what="delay + failure")
        delayed, failed = org.inbox("alice@a.test")
        assert b"Action: delayed" in delayed and b"Will-Retry-Until" in delayed
        assert b"Action: failed" in failed and b"Status: 4.4.7" in failed
        assert b"451 4.3.0 Try again later" in failed
        await wait_for(lambda: org.queue_size() == (0, 0), what="empty queue")

    settings = with_settings(FAST, lifetime_hours=1.5 / 3600, delay_notice_hours=0.3 / 3600)
    scenario(tmp_path, ca, body, script=always_later, settings=settings)


def test_null_sender_dsn_never_bounced(tmp_path: Path, ca: CA) -> None:
    """A DSN that cannot be delivered is dropped (and recorded), never bounced."""
    from keepmail.store import queue as q

    def refuse(session: PeerSession, command: str) -> str | None:
        return "550 5.1.1 no" if command.startswith("RCPT") else None

    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        raw = b"From: MAILER-DAEMON@mail.a.test\r\nSubject: bounce\r\n\r\nx\r\n"

        def enqueue(c: Any, blob_id: int) -> int:
            return q.enqueue(c, blob_id, len(raw), "", ["gone@b.test"], kind="dsn")

        msg_id = await org.store.store_blob(raw, 0, enqueue)
        await org.agent.notify(msg_id)
        await wait_for(lambda: org.queue_size() == (0, 0), what="dropped DSN")
        assert org.events("no-dsn")
        assert org.inbox("alice@a.test") == []

    scenario(tmp_path, ca, body, script=refuse)


def test_no_8bitmime_bounces(tmp_path: Path, ca: CA) -> None:
    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        raw = "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: café\r\n\r\nçà\r\n".encode()
        await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["bob@b.test"], raw)
        await wait_for(lambda: len(org.inbox("alice@a.test")) == 1, what="DSN")
        assert b"Status: 5.6.3" in org.inbox("alice@a.test")[0]
        assert peer.messages == []

    scenario(tmp_path, ca, body, extensions=("PIPELINING",))


def test_smtputf8_needed_but_not_offered_bounces(tmp_path: Path, ca: CA) -> None:
    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        import smtplib

        from tests.support.server import PASSWORD

        from .conftest import client_context

        def send() -> None:
            with smtplib.SMTP(HOST, org.port) as s:
                s.starttls(context=client_context())
                s.login("alice@a.test", PASSWORD)
                s.sendmail("alice@a.test", ["josé@b.test"],
                           message("alice@a.test", "josé@b.test").replace(
                               "é".encode(), b"\xc3\xa9"), mail_options=["SMTPUTF8"])

        await asyncio.to_thread(send)
        await wait_for(lambda: len(org.inbox("alice@a.test")) == 1, what="DSN")
        assert b"Status: 5.6.7" in org.inbox("alice@a.test")[0]
        assert peer.messages == []

    scenario(tmp_path, ca, body, extensions=("PIPELINING", "8BITMIME"))


def test_thousand_recipients_reuse_connections(tmp_path: Path, ca: CA) -> None:
    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        rcpts = [f"user{i}@b.test" for i in range(1000)]
        await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", rcpts,
                      message("alice@a.test", "undisclosed-recipients:;", subject="all hands"))
        await wait_for(lambda: sum(len(m.rcpts) for m in peer.messages) == 1000, limit=40,
                       what="1000 recipients")
        assert len(peer.messages) == 10                  # 100 per transaction
        assert sorted(r for m in peer.messages for r in m.rcpts) == sorted(rcpts)
        assert peer.connections <= FAST.max_per_domain    # connections were reused
        await wait_for(lambda: org.queue_size() == (0, 0), what="empty queue")

    scenario(tmp_path, ca, body)


# -- MTA-STS ------------------------------------------------------------------------
async def policy_server(host: str, ctx: ssl.SSLContext, policy: str) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = policy.encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                     str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()
    return await asyncio.start_server(serve, host, 0, ssl=ctx)


def test_mta_sts_enforce_untrusted_certificate_defers(tmp_path: Path, ca: CA) -> None:
    # The MX presents a self-signed certificate: not valid under the policy.
    rogue = tls.make_certificate(["mx.b.test"], tmp_path / "rogue.pem", tmp_path / "rogue.key")
    rogue_ctx = tls.server_context(rogue)
    good_ctx = ca.server_context(tmp_path / "good", ["mx.b.test"])
    zone = ZONE + '_mta-sts.b.test. 60 IN TXT "v=STSv1; id=20260101"\n'

    async def go() -> None:
        https = await policy_server("127.0.0.53", ca.server_context(
            tmp_path / "sts", ["mta-sts.b.test"]),
            "version: STSv1\nmode: enforce\nmx: *.b.test\nmax_age: 86400\n")
        port = https.sockets[0].getsockname()[1]
        settings = with_settings(FAST, mta_sts=True, ca_file=str(ca.cert),
                                 mta_sts_address=f"127.0.0.53:{port}")
        org, peer, dns = await setup(tmp_path, ca, peer_tls=rogue_ctx, zone=zone,
                                     settings=settings)
        try:
            await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["bob@b.test"],
                          message("alice@a.test", "bob@b.test", subject="secret"))
            await wait_for(lambda: any('"outcome": "deferred"' in e[2]
                                       for e in org.events("result")), what="deferral")
            assert peer.messages == []
            assert not any(c.startswith("MAIL") for c in peer.commands), "sent in clear!"
            [result] = [e for e in org.events("result")][:1]
            assert "MTA-STS requires a valid TLS session" in result[2]
            # With a certificate from the trusted CA the same MX is accepted.
            peer.tls = good_ctx
            await wait_for(lambda: len(peer.messages) == 1, what="delivery over valid TLS")
            assert peer.messages[0].tls
            connections = [e[2] for e in org.events("connection")]
            assert any('"policy": "mta-sts"' in c and '"verified": true' in c
                       for c in connections)
        finally:
            await org.stop()
            await peer.close()
            dns.stop()
            https.close()

    run(go())
