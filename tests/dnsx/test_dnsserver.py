"""The test DNS server answers like an authoritative server (dnspython as client)."""

from __future__ import annotations

import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.dnsserver import DnsServer

ZONE = {
    "example.test.": [("MX", "10 mx.example.test."), ("TXT", "v=spf1 mx -all")],
    "mx.example.test": [("A", "127.0.0.10"), ("AAAA", "::1")],
    "alias.example.test": [("CNAME", "mx.example.test.")],
    "*.wild.example.test": [("A", "127.0.0.99")],
    "a.b.deep.example.test": [("A", "127.0.0.1")],
}


def ask(server: DnsServer, name: str, rtype: str, *, tcp: bool = False,
        payload: int | None = None, timeout: float = 2.0) -> dns.message.Message:
    q = dns.message.make_query(name, rtype, use_edns=payload is not None,
                               payload=payload or 512)
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, server.host, port=server.port, timeout=timeout)


def test_answers_nxdomain_nodata_cname_wildcard(dns_server: DnsServer) -> None:
    dns_server.set_zone(ZONE)
    r = ask(dns_server, "example.test", "MX")
    assert [str(rr) for rr in r.answer[0]] == ["10 mx.example.test."]
    assert ask(dns_server, "nope.example.test", "A").rcode() == dns.rcode.NXDOMAIN
    nodata = ask(dns_server, "mx.example.test", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    ent = ask(dns_server, "b.deep.example.test", "A")
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer
    chased = ask(dns_server, "alias.example.test", "A")
    assert [rrset.rdtype for rrset in chased.answer] == [5, 1]
    wild = ask(dns_server, "x.wild.example.test", "A")
    assert str(wild.answer[0].name) == "x.wild.example.test." and wild.answer[0][0].address == "127.0.0.99"
    assert ask(dns_server, "example.test", "TXT", tcp=True).answer


def test_live_changes_servfail_ad_and_drop(dns_server: DnsServer) -> None:
    dns_server.set_zone(ZONE)
    dns_server.replace("example.test", "TXT", "v=spf1 -all")
    dns_server.add("example.test", "TXT", ["part one ", "part two"])
    texts = sorted(b"".join(rd.strings) for rd in ask(dns_server, "example.test", "TXT").answer[0])
    assert texts == [b"part one part two", b"v=spf1 -all"]
    dns_server.servfail("example.test", "MX")
    assert ask(dns_server, "example.test", "MX").rcode() == dns.rcode.SERVFAIL
    assert ask(dns_server, "example.test", "TXT").rcode() == dns.rcode.NOERROR
    dns_server.secure("mx.example.test")
    assert ask(dns_server, "mx.example.test", "A").flags & dns.flags.AD
    assert not ask(dns_server, "example.test", "TXT").flags & dns.flags.AD
    dns_server.drop("mx.example.test")
    start = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, "mx.example.test", "A", timeout=0.3)
    assert time.monotonic() - start < 4
    dns_server.remove("mx.example.test")
    dns_server.drop("mx.example.test", on=False)
    assert ask(dns_server, "mx.example.test", "A").rcode() == dns.rcode.NXDOMAIN


def test_huge_txt_truncates_over_udp(dns_server: DnsServer) -> None:
    dns_server.set_zone({"big.test": [("TXT", "x" * 3000)]})
    udp = ask(dns_server, "big.test", "TXT")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(dns_server, "big.test", "TXT", tcp=True)
    assert len(b"".join(tcp.answer[0][0].strings)) == 3000
    edns = ask(dns_server, "big.test", "TXT", payload=4096)
    assert not edns.flags & dns.flags.TC
    assert ("big.test", "TXT", "tcp") in dns_server.queries


def test_zone_text_and_context_manager() -> None:
    with DnsServer("a.test. 60 IN A 127.0.0.5\n  a.test. 60 IN TXT \"hi\"") as server:
        assert ask(server, "a.test", "A").answer[0][0].address == "127.0.0.5"
        assert server.nameserver == f"127.0.0.1:{server.port}"
