"""ARC (RFC 8617): seal-then-verify round trips, multi-hop chains, broken chains."""

from __future__ import annotations

import re

import pytest

from keepmail.mailauth.arc import SealKey, seal, verify
from tests.mailauth.helpers import (
    MESSAGE,
    ed_key,
    ed_record,
    resolver,
    rsa_key,
    rsa_record,
    run,
    sign_rsa,
)
from tests.support.dnsserver import DnsServer

RSA_HOP = SealKey("fwd.test", "arc", rsa_key())
ED_HOP = SealKey("list.test", "arc", ed_key())


@pytest.fixture
def arc_dns(dns_server: DnsServer) -> DnsServer:
    dns_server.set_zone({"arc._domainkey.fwd.test": [("TXT", rsa_record())],
                         "arc._domainkey.list.test": [("TXT", ed_record())],
                         "r._domainkey.example.test": [("TXT", rsa_record())]})
    return dns_server


def hop(raw: bytes, key: SealKey, r: object, results: str = "spf=pass") -> bytes:
    return run(seal(raw, key, r, authserv_id=key.domain, auth_results=results)) + raw  # type: ignore[arg-type]


def test_no_chain_is_none(arc_dns: DnsServer) -> None:
    assert run(verify(MESSAGE, resolver(arc_dns))).cv == "none"


def test_roundtrip_one_and_two_hops(arc_dns: DnsServer) -> None:
    r = resolver(arc_dns)
    one = hop(sign_rsa(MESSAGE), RSA_HOP, r)
    res = run(verify(one, r))
    assert (res.cv, res.instances, res.sealers) == ("pass", 1, ("fwd.test",))
    assert b"cv=none" in one.split(b"ARC-Message-Signature")[0]
    two = hop(b"Received: by list.test\r\n" + one, ED_HOP, r, "arc=pass")
    res = run(verify(two, r))
    assert (res.cv, res.instances, res.oldest_pass) == ("pass", 2, 1)
    assert re.search(rb"ARC-Seal: i=2; a=ed25519-sha256; t=\d+; cv=pass", two)


def test_broken_chains_fail(arc_dns: DnsServer) -> None:
    r = resolver(arc_dns)
    two = hop(hop(MESSAGE, RSA_HOP, r), ED_HOP, r)
    assert run(verify(two.replace(b"Bye.", b"Bye!"), r)).reason.startswith("AMS i=2")
    first_seal = two.index(b"ARC-Seal: i=1")
    tampered = two[:first_seal] + two[first_seal:].replace(b"cv=none", b"cv=pass", 1)
    assert run(verify(tampered, r)).cv == "fail"
    no_seal = re.sub(rb"ARC-Seal: i=1;.*?\r\n(?=[^ \t])", b"", two, count=1, flags=re.S)
    res = run(verify(no_seal, r))
    assert (res.cv, res.reason) == ("fail", "incomplete ARC set i=1")
    gap = two.replace(b"i=2;", b"i=3;")
    assert run(verify(gap, r)).cv == "fail"
    aar = re.search(rb"ARC-Authentication-Results: i=1;.*?\r\n(?=[^ \t])", two, re.S)
    assert aar is not None
    changed = two.replace(aar.group(0), aar.group(0).replace(b"spf=pass", b"spf=fail"))
    assert "ARC-Seal" in run(verify(changed, r)).reason


def test_failed_chain_is_sealed_as_fail_and_stays_failed(arc_dns: DnsServer) -> None:
    r = resolver(arc_dns)
    broken = hop(MESSAGE, RSA_HOP, r).replace(b"Bye.", b"Bye!")
    resealed = hop(broken, ED_HOP, r)
    assert b"cv=fail" in resealed.split(b"\r\n\r\n")[0]
    assert run(verify(resealed, r)).reason == "i=2 sealed with cv=fail"


def test_key_trouble_and_garbage(arc_dns: DnsServer) -> None:
    r = resolver(arc_dns)
    one = hop(MESSAGE, RSA_HOP, r)
    arc_dns.drop("arc._domainkey.fwd.test")
    assert run(verify(one, r)).cv == "fail"
    for raw in (b"ARC-Seal: i=1\r\n\r\n", b"ARC-Seal: x\r\n\r\n", b"ARC-Seal: i=99;\r\n\r\n"):
        assert run(verify(raw, r)).cv == "fail"
