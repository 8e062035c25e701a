"""Resolver outcomes (records / NXDOMAIN / no data / temp error), DNS lists and FCrDNS."""

from __future__ import annotations

import asyncio
import time

import pytest

from keepmail.dnsx import dnsbl, fcrdns
from keepmail.dnsx.resolver import DnsNameError, DnsTempError, Resolver, parse_nameserver
from tests.support.dnsserver import DnsServer

ZONE = {
    "example.test": [("MX", "20 b.example.test."), ("MX", "10 a.example.test."),
                     ("TXT", ["v=spf1 ", "-all"]), ("A", "192.0.2.1"), ("AAAA", "2001:db8::1")],
    "_25._tcp.a.example.test": [("TLSA", "3 1 1 " + "ab" * 32)],
    "5.2.0.192.in-addr.arpa": [("PTR", "good.example.test."), ("PTR", "liar.example.test.")],
    "good.example.test": [("A", "192.0.2.5")],
    "liar.example.test": [("A", "192.0.2.99")],
    "6.2.0.192.in-addr.arpa": [("PTR", "liar.example.test.")],
    "2.0.0.127.bl.test": [("A", "127.0.0.2"), ("TXT", "listed: see https://bl.test")],
    "5.2.0.192.bl.test": [("A", "127.0.0.4")],
    "7.2.0.192.bl.test": [("A", "10.0.0.1")],
    "8.2.0.192.bl.test": [("A", "127.255.255.254")],
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test": [("A", "127.0.0.3")],
    "spam.example.dbl.test": [("A", "127.0.1.2")],
    "test.dbl.test": [("A", "127.0.1.2")],
}


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def res(dns_server: DnsServer) -> Resolver:
    dns_server.set_zone(ZONE, secure=["_25._tcp.a.example.test"])
    return Resolver([dns_server.nameserver], timeout=0.2, lifetime=0.5, want_dnssec=True,
                    cache=False)


def test_typed_answers(res: Resolver) -> None:
    assert [(m.preference, m.exchange) for m in run(res.mx("example.test"))] == \
        [(10, "a.example.test"), (20, "b.example.test")]
    assert run(res.txt("example.test")) == ["v=spf1 -all"]
    assert run(res.a("example.test")) == ["192.0.2.1"]
    assert run(res.aaaa("example.test")) == ["2001:db8::1"]
    assert sorted(run(res.ptr("192.0.2.5"))) == ["good.example.test", "liar.example.test"]
    tlsa = run(res.tlsa("_25._tcp.a.example.test"))
    assert tlsa.secure and tlsa[0].usage == 3 and len(tlsa[0].data) == 32
    assert not run(res.a("example.test")).secure


def test_nxdomain_nodata_temp_and_bad_names(dns_server: DnsServer, res: Resolver) -> None:
    nx = run(res.a("missing.example.test"))
    assert nx == [] and nx.nxdomain
    nodata = run(res.txt("good.example.test"))
    assert nodata == [] and not nodata.nxdomain
    dns_server.servfail("example.test")
    with pytest.raises(DnsTempError, match="server failure"):
        run(res.mx("example.test"))
    dns_server.drop("good.example.test")
    start = time.monotonic()
    with pytest.raises(DnsTempError, match="timeout"):
        run(res.a("good.example.test"))
    assert time.monotonic() - start < 4.0
    with pytest.raises(DnsNameError):
        run(res.a("x" * 64 + ".test"))
    with pytest.raises(DnsNameError):
        run(res.ptr("not-an-ip"))


def test_answers_are_cached_for_their_ttl(dns_server: DnsServer) -> None:
    dns_server.set_zone({"short.test": [("TXT", "v=one")]})
    dns_server.replace("short.test", "TXT", "v=one", ttl=1)
    res = Resolver([dns_server.nameserver], timeout=0.2, lifetime=0.5)

    async def go() -> None:
        first = await res.txt("short.test")
        asked = len(dns_server.queries)
        again = await res.txt("SHORT.test.")  # names are case-insensitive
        assert again == ["v=one"] and len(dns_server.queries) == asked
        again.append("changed by a caller")   # callers get their own lists
        assert await res.txt("short.test") == first == ["v=one"]
        assert res.queries == 3               # cache hits are counted as questions
        dns_server.replace("short.test", "TXT", "v=two", ttl=1)
        await asyncio.sleep(1.2)              # past the TTL: asked again
        assert await res.txt("short.test") == ["v=two"]
        assert len(dns_server.queries) > asked

    run(go())


def test_nameserver_specs() -> None:
    assert parse_nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:54") == ("::1", 54)
    assert parse_nameserver("::1") == ("::1", 53)
    with pytest.raises(ValueError):
        Resolver([])
    with pytest.raises(ValueError):
        Resolver(["dns.example:53"])


def test_dnsbl(res: Resolver) -> None:
    bl = dnsbl.DnsList("bl.test")
    hit = run(dnsbl.lookup(res, bl, "192.0.2.5"))
    assert hit.listed and hit.codes == ("127.0.0.4",)
    assert run(dnsbl.lookup(res, bl, "2001:db8::1")).listed
    assert not run(dnsbl.lookup(res, bl, "192.0.2.7")).listed            # outside 127/8
    refused = run(dnsbl.lookup(res, bl, "192.0.2.8"))
    assert not refused.listed and "refused" in refused.error
    assert not run(dnsbl.lookup(res, dnsbl.DnsList("bl.test", codes=frozenset({"127.0.0.2"})),
                                "192.0.2.5")).listed
    assert run(dnsbl.lookup(res, bl, "127.0.0.2")).reason.startswith("listed")
    dbl = dnsbl.DnsList("dbl.test", domains=True)
    assert [r.listed for r in run(dnsbl.check_lists(res, [bl, dbl], "192.0.2.9"))] == [False] * 2
    assert run(dnsbl.lookup(res, dbl, "spam.example")).listed
    assert run(dnsbl.selftest(res, bl)) is None
    assert run(dnsbl.selftest(res, dbl)) is None
    assert "not listed" in (run(dnsbl.selftest(res, dnsbl.DnsList("empty.test"))) or "")


def test_fcrdns(dns_server: DnsServer, res: Resolver) -> None:
    ok = run(fcrdns.check(res, "192.0.2.5"))
    assert (ok.result, ok.name) == ("pass", "good.example.test")
    assert run(fcrdns.check(res, "192.0.2.6")).result == "fail"
    assert run(fcrdns.check(res, "192.0.2.77")).result == "fail"
    assert run(fcrdns.check(res, "nonsense")).result == "permerror"
    dns_server.drop("6.2.0.192.in-addr.arpa")
    assert run(fcrdns.check(res, "192.0.2.6")).result == "temperror"
