"""SPF (RFC 7208) against the loopback DNS server: every result, limits and bad input."""

from __future__ import annotations

import time

import pytest

from keepmail.mailauth.spf import check_spf, parse_record
from tests.mailauth.helpers import resolver, run
from tests.support.dnsserver import DnsServer

ZONE = {
    "pass.test": [("TXT", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"),
                  ("TXT", "unrelated text")],
    "fail.test": [("TXT", "v=spf1 -all")],
    "soft.test": [("TXT", "v=spf1 ~all")],
    "neutral.test": [("TXT", "v=spf1 ?all")],
    "default.test": [("TXT", "v=spf1 ip4:10.0.0.1")],
    "none.test": [("TXT", "just text")],
    "mx.test": [("TXT", "v=spf1 mx a:host.mx.test -all"), ("MX", "10 mail.mx.test.")],
    "mail.mx.test": [("A", "192.0.2.25")],
    "host.mx.test": [("A", "198.51.100.7")],
    "inc.test": [("TXT", "v=spf1 include:pass.test -all")],
    "redir.test": [("TXT", "v=spf1 redirect=fail.test")],
    "bad.test": [("TXT", "v=spf1 ip4:300.1.1.1 -all")],
    "unknown.test": [("TXT", "v=spf1 foo:bar -all")],
    "two.test": [("TXT", "v=spf1 -all"), ("TXT", "v=spf1 +all")],
    "slow.test": [("TXT", "v=spf1 a:stuck.slow.test -all")],
    "stuck.slow.test": [("A", "192.0.2.1")],
    "voids.test": [("TXT", "v=spf1 a:n1.voids.test a:n2.voids.test a:n3.voids.test +all")],
    "loop.test": [("TXT", "v=spf1 include:loop.test")],
    "many.test": [("TXT", "v=spf1 " + " ".join(f"a:h{i}.pass.test" for i in range(11))
                   + " +all")],
    "big.test": [("TXT", "v=spf1 " + " ".join(f"ip4:198.18.{i // 250}.{i % 250}"
                                              for i in range(200)) + " ip4:192.0.2.9 -all")],
    "exp.test": [("TXT", "v=spf1 -all exp=why.exp.test")],
    "why.exp.test": [("TXT", "%{i} is not one of %{d}'s senders")],
    "macro.test": [("TXT", "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all")],
    "1.2.0.192.bob._spf.macro.test": [("A", "127.0.0.2")],
    "helo.test": [("TXT", "v=spf1 ip4:192.0.2.44 -all")],
}
for i in range(11):
    ZONE[f"h{i}.pass.test"] = [("A", "203.0.113.1")]


@pytest.fixture
def spf_dns(dns_server: DnsServer) -> DnsServer:
    dns_server.set_zone(ZONE)
    dns_server.drop("stuck.slow.test")
    return dns_server


@pytest.mark.parametrize(("ip", "sender", "result"), [
    ("192.0.2.10", "a@pass.test", "pass"),
    ("2001:db8::5", "a@pass.test", "pass"),
    ("::ffff:192.0.2.10", "a@pass.test", "pass"),
    ("198.51.100.1", "a@pass.test", "fail"),
    ("198.51.100.1", "a@fail.test", "fail"),
    ("198.51.100.1", "a@soft.test", "softfail"),
    ("198.51.100.1", "a@neutral.test", "neutral"),
    ("198.51.100.1", "a@default.test", "neutral"),
    ("198.51.100.1", "a@none.test", "none"),
    ("198.51.100.1", "a@nxdomain.test", "none"),
    ("192.0.2.25", "a@mx.test", "pass"),
    ("198.51.100.7", "a@mx.test", "pass"),
    ("192.0.2.26", "a@mx.test", "fail"),
    ("192.0.2.10", "a@inc.test", "pass"),
    ("192.0.2.10", "a@redir.test", "fail"),
    ("192.0.2.10", "a@bad.test", "permerror"),
    ("192.0.2.10", "a@unknown.test", "permerror"),
    ("192.0.2.10", "a@two.test", "permerror"),
    ("192.0.2.10", "a@voids.test", "permerror"),
    ("192.0.2.10", "a@loop.test", "permerror"),
    ("192.0.2.10", "a@many.test", "permerror"),
    ("192.0.2.9", "a@big.test", "pass"),
    ("192.0.2.1", "bob@macro.test", "pass"),
    ("192.0.2.44", "", "pass"),     # null sender: HELO identity
])
def test_results(spf_dns: DnsServer, ip: str, sender: str, result: str) -> None:
    res = run(check_spf(resolver(spf_dns), ip, sender, "helo.test"))
    assert res.result == result, res
    assert res.reason


def test_helo_identity_and_explanation(spf_dns: DnsServer) -> None:
    res = run(check_spf(resolver(spf_dns), "192.0.2.44", "<>", "helo.test"))
    assert (res.identity, res.domain) == ("helo", "helo.test")
    exp = run(check_spf(resolver(spf_dns), "192.0.2.7", "x@exp.test", "h.test"))
    assert exp.result == "fail" and exp.explanation == "192.0.2.7 is not one of exp.test's senders"


def test_timeouts_and_servfail_are_temperror_quickly(spf_dns: DnsServer) -> None:
    start = time.monotonic()
    res = run(check_spf(resolver(spf_dns), "192.0.2.10", "a@slow.test", "h.test"))
    assert res.result == "temperror" and "timeout" in res.reason
    assert time.monotonic() - start < 5
    spf_dns.servfail("fail.test")
    assert run(check_spf(resolver(spf_dns), "192.0.2.10", "a@fail.test", "h")).result \
        == "temperror"


def test_huge_txt_answer_comes_over_tcp(spf_dns: DnsServer) -> None:
    run(check_spf(resolver(spf_dns), "192.0.2.9", "a@big.test", "h.test"))
    assert ("big.test", "TXT", "tcp") in spf_dns.queries


@pytest.mark.parametrize("record", [
    "v=spf1 ip4:1.2.3.4/33", "v=spf1 a:", "v=spf1 mx//200", "v=spf1 redirect=a.test redirect=b.test",
    "v=spf1 include", "v=spf1 exists:%{z}.test", "v=spf1 a:%{d0}.test", "v=spf1 -exp=x.test",
    "v=spf1 ip6:1.2.3.4", "v=spf1 a:foo.123", "v=spf1 ptr/24", "v=spf1 all:x", "v=spf1 ~\x01all",
])
def test_malformed_records_are_permerror(dns_server: DnsServer, record: str) -> None:
    dns_server.set_zone({"m.test": [("TXT", record)]})
    res = run(check_spf(resolver(dns_server), "192.0.2.1", "a@m.test", "h.test"))
    assert res.result == "permerror", (record, res)


def test_parse_keeps_unknown_modifiers() -> None:
    rec = parse_record("v=spf1 moo=%{d}.x a -all")
    assert [m.name for m in rec.mechanisms] == ["a", "all"]
