"""The MX forwarder: an alias pointing outside is queued inside the MX's delivery
transaction with an SRS sender, delivered by the agent, and a bounce for it goes
to the original sender."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

from keepmail.outbound import forwarding
from tests.support.postfix import free_port

from .conftest import CA, FAST, Org, make_org, message, run, wait_for, with_settings
from .peers import LocalDns, PeerSession, ScriptedSmtp

HOST, PEER = "127.0.0.101", "127.0.0.102"


def test_alias_forwarded_outside(tmp_path: Path, ca: CA) -> None:
    async def go() -> None:
        def script(session: PeerSession, command: str) -> str | None:
            if command.startswith("RCPT") and "gone@" in command:
                return "550 5.1.1 gone"
            return None

        peer = await ScriptedSmtp(PEER, script=script).start()
        dns = LocalDns(f"c.test. 60 IN MX 10 mx.c.test.\nmx.c.test. 60 IN A {PEER}\n").start()
        org = make_org(tmp_path, "b", HOST, "b.test", dns.nameserver, ["bob@b.test"],
                       settings=with_settings(FAST, remote_port=peer.port),
                       aliases={"fwd@b.test": ["bob@b.test", "far@c.test"],
                                "old@b.test": ["gone@c.test"]})
        await org.start(ca, mx_port=free_port(HOST))
        try:
            assert org.mx is not None

            def send(rcpt: str = "fwd@b.test") -> None:
                with smtplib.SMTP(HOST, org.mx.ports[0]) as s:
                    s.sendmail("someone@elsewhere.test", [rcpt],
                               message("someone@elsewhere.test", rcpt, subject="pass it on"))

            await asyncio.to_thread(send)
            await wait_for(lambda: len(peer.messages) == 1, what="forwarded copy")
            assert peer.messages[0].rcpts == ["far@c.test"]
            sender = peer.messages[0].sender
            assert sender.startswith("SRS0=") and sender.endswith("=elsewhere.test=someone@b.test")
            assert forwarding.reverse(org.agent.srs_secret or b"", sender) == \
                "someone@elsewhere.test"
            assert b"Subject: pass it on" in peer.messages[0].data
            assert len(org.inbox("bob@b.test")) == 1
            await wait_for(lambda: org.queue_size() == (0, 0), what="empty queue")
            # A forward the target refuses: the DSN goes to the original sender.
            await asyncio.to_thread(send, "old@b.test")
            await wait_for(lambda: bool(dsn_rcpts(org)), what="DSN trace")
            assert dsn_rcpts(org) == ["someone@elsewhere.test"]
        finally:
            await org.stop()
            await peer.close()
            dns.stop()

    run(go())


def dsn_rcpts(org: Org) -> list[str]:
    org.recorder.flush()
    return [r[0] for r in org.recorder._conn.execute(
        "SELECT rcpts FROM traces WHERE kind = 'dsn'")]
