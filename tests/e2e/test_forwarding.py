"""An alias forwarding outside keeps the message verifiable downstream.

The original sender signs with DKIM and publishes DMARC p=reject. keepmail
receives it for an alias that points to another organization, rewrites the
envelope sender with SRS, seals an ARC set and delivers. The receiving side
(here: our own verifiers acting as the next hop) must see DKIM, DMARC and the
ARC chain pass.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from keepmail import config as configmod
from keepmail.dnsx.resolver import Resolver
from keepmail.mailauth.check import check_message
from keepmail.mailauth.dkim_sign import SigningKey, public_record, sign
from keepmail.outbound import dkimkeys
from tests.outbound.peers import ScriptedSmtp
from tests.support.server import InProcessServer, add_users, free_port_offset, write_config

WORLD = "127.0.0.91"


def test_alias_forward_keeps_dmarc_pass_via_arc(tmp_path: Path) -> None:
    from tests.support.server import shared_dns

    dns = shared_dns()
    sender_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dns.set_zone({
        "sender.test": [("TXT", "v=spf1 ip4:127.0.0.0/8 -all")],
        "_dmarc.sender.test": [("TXT", "v=DMARC1; p=reject")],
        "s1._domainkey.sender.test": [("TXT", public_record(sender_key))],
        "world.test": [("MX", "10 mx.world.test.")],
        "mx.world.test": [("A", WORLD)],
    })
    sink = ScriptedSmtp(WORLD)
    path = write_config(tmp_path, extra={"outbound": {
        "mta_sts": False, "dane": False, "retry_base": 0.2, "retry_max": 1.0,
        "idle_seconds": 0.2}})
    cfg = configmod.load(path)
    add_users(cfg, "bob@example.test", aliases={"fwd@example.test": ["out@world.test"]})

    srv = InProcessServer(cfg, free_port_offset()).start()
    try:
        srv.call(sink.start())
        srv.app.config.outbound.remote_port = sink.port
        srv.app.outbound_agent.settings.remote_port = sink.port
        for name, rtype, value in dkimkeys.dns_records(srv.store, "example.test"):
            dns.add(name, rtype, value.strip('"'))
        original = (b"From: ceo@sender.test\r\nTo: fwd@example.test\r\nSubject: quarterly\r\n"
                    b"Message-ID: <q@sender.test>\r\n\r\nNumbers attached.\r\n")
        signed = sign(original, [SigningKey("sender.test", "s1", sender_key)]) + original
        with smtplib.SMTP(srv.host, srv.port("smtp"), local_hostname="mx.sender.test") as c:
            c.sendmail("ceo@sender.test", ["fwd@example.test"], signed)
        deadline = time.monotonic() + 20
        while not sink.messages and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.messages, "the forward never reached the other organization"
        got = sink.messages[0]
        assert got.rcpts == ["out@world.test"]
        assert got.sender.lower().startswith("srs0="), got.sender
        assert b"ARC-Seal: i=1" in got.data and signed in got.data

        async def verify() -> object:
            resolver = Resolver([dns.nameserver], cache=False)
            return await check_message(got.data, client_ip="127.0.0.1", helo="mx.example.test",
                                       mail_from=got.sender, resolver=resolver,
                                       authserv_id="mx.world.test")

        report = asyncio.run(verify())
        assert report.dkim_result == "pass"          # the body and signed headers survived
        assert report.arc.cv == "pass", report.arc.reason
        assert report.dmarc.result == "pass", report.dmarc.reason
    finally:
        srv.call(sink.close())
        srv.stop()


def test_replies_from_correspondents_are_trusted(tmp_path: Path) -> None:
    from tests.support.server import PASSWORD, mailbox_messages, shared_dns

    dns = shared_dns()
    dns.set_zone({"partner.test": [("TXT", "v=spf1 ip4:127.0.0.0/8 -all")]})
    sink = ScriptedSmtp(WORLD)
    path = write_config(tmp_path, extra={"outbound": {"mta_sts": False, "dane": False}})
    cfg = configmod.load(path)
    add_users(cfg, "bob@example.test")
    srv = InProcessServer(cfg, free_port_offset()).start()
    try:
        srv.call(sink.start())
        with smtplib.SMTP(srv.host, srv.port("submission")) as c:
            c.starttls(context=__import__("ssl")._create_unverified_context())
            c.login("bob@example.test", PASSWORD)
            c.sendmail("bob@example.test", ["ann@partner.test"],
                       b"From: bob@example.test\r\nSubject: offer\r\n\r\nHello Ann\r\n")
        for sender in ("ann@partner.test", "stranger@partner.test"):
            with smtplib.SMTP(srv.host, srv.port("smtp"),
                              local_hostname="mx.partner.test") as c:
                c.sendmail(sender, ["bob@example.test"],
                           f"From: {sender}\r\nSubject: re\r\n\r\nthanks\r\n".encode())
        inbox = mailbox_messages(srv.store, "bob@example.test")
        reply = next(m for m in inbox if b"From: ann@partner.test" in m)
        other = next(m for m in inbox if b"From: stranger@partner.test" in m)
        assert b"known-correspondent=-3" in reply
        assert b"known-correspondent" not in other
    finally:
        srv.call(sink.close())
        srv.stop()
