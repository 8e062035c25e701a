"""check_message: all checks together, the A-R value, and the overall deadline."""

from __future__ import annotations

import time

from keepmail.mailauth.check import check_message
from keepmail.mailauth.spf import SpfResult
from tests.mailauth.helpers import MESSAGE, key_zone, resolver, run, sign_ed, sign_rsa
from tests.support.dnsserver import DnsServer

ZONE = {**key_zone(), "example.test": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
        "_dmarc.example.test": [("TXT", "v=DMARC1; p=reject")]}


def check(server: DnsServer, raw: bytes, ip: str = "192.0.2.5", deadline: float = 5.0,
          mail_from: str = "bounce@example.test"):
    return run(check_message(raw, client_ip=ip, helo="mta.example.test", mail_from=mail_from,
                             resolver=resolver(server), authserv_id="mx.ours.test",
                             deadline=deadline))


def test_all_pass(dns_server: DnsServer) -> None:
    dns_server.set_zone(ZONE)
    rep = check(dns_server, sign_rsa(sign_ed(MESSAGE)))
    assert (rep.spf.result, rep.dkim_result, rep.dmarc.result, rep.arc.cv) == \
        ("pass", "pass", "pass", "none")
    assert rep.header.startswith("mx.ours.test;")
    for clause in ("spf=pass", "smtp.mailfrom=example.test", "dkim=pass header.d=example.test",
                   "header.a=ed25519-sha256", "dmarc=pass", "header.from=example.test", "arc=none"):
        assert clause in rep.header, rep.header


def test_forged_mail_fails_dmarc_with_reject(dns_server: DnsServer) -> None:
    dns_server.set_zone(ZONE)
    rep = check(dns_server, MESSAGE, ip="198.51.100.9", mail_from="")
    assert (rep.spf.result, rep.spf.identity, rep.dkim_result) == ("none", "helo", "none")
    assert (rep.dmarc.result, rep.dmarc.policy) == ("fail", "reject")
    assert "dmarc=fail" in rep.header and "dkim=none" in rep.header


def test_spf_found_at_mail_from_is_not_asked_again(dns_server: DnsServer) -> None:
    dns_server.set_zone(ZONE)
    known = SpfResult("pass", "matched ip4:192.0.2.0/24", "example.test", "mailfrom")
    rep = run(check_message(sign_rsa(MESSAGE), client_ip="192.0.2.5", helo="mta.example.test",
                            mail_from="bounce@example.test", resolver=resolver(dns_server),
                            authserv_id="mx.ours.test", spf=known))
    assert rep.spf is known and rep.dmarc.result == "pass" and "spf=pass" in rep.header
    asked = [(name, rtype) for name, rtype, _ in dns_server.queries]
    assert ("_dmarc.example.test", "TXT") in asked and ("example.test", "TXT") not in asked


def test_stuck_dns_is_bounded(dns_server: DnsServer) -> None:
    dns_server.set_zone(ZONE)
    for name in ("example.test", "_dmarc.example.test", "r._domainkey.example.test"):
        dns_server.drop(name)
    start = time.monotonic()
    rep = check(dns_server, sign_rsa(MESSAGE), deadline=0.3)
    assert time.monotonic() - start < 4.0
    assert rep.spf.result == "temperror" and rep.dmarc.result == "temperror"
    assert rep.dkim_result == "temperror" and set(rep.timed_out) >= {"spf", "dmarc"}


def test_garbage_message_never_raises(dns_server: DnsServer) -> None:
    dns_server.set_zone(ZONE)
    for raw in (b"", b"\x00\xff" * 50, b"From:\r\n\r\n", b"DKIM-Signature: v=1\r\nARC-Seal: i=1\r\n"):
        rep = check(dns_server, raw, ip="192.0.2.5")
        assert rep.header.startswith("mx.ours.test;")
