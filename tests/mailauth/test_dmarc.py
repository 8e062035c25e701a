"""DMARC (RFC 7489): discovery, alignment, policies, pct, malformed records."""

from __future__ import annotations

import random

import pytest

from keepmail.mailauth.dkim_verify import DkimResult
from keepmail.mailauth.dmarc import check_dmarc, organizational_domain, parse_record
from keepmail.mailauth.spf import SpfResult
from tests.mailauth.helpers import resolver, run
from tests.support.dnsserver import DnsServer


def msg(from_addr: str) -> bytes:
    return f"From: Someone <{from_addr}>\r\nSubject: x\r\n\r\nbody\r\n".encode()


SPF_PASS = SpfResult("pass", "ok", "bounces.example.co.uk")
SPF_FAIL = SpfResult("fail", "no", "example.co.uk")
DKIM_PASS = [DkimResult("pass", "ok", "mail.example.co.uk")]


def zone(record: str, sub: str | None = None) -> dict[str, list[tuple[str, str]]]:
    z = {"_dmarc.example.co.uk": [("TXT", record)]}
    if sub:
        z["_dmarc.sub.example.co.uk"] = [("TXT", sub)]
    return z


def test_org_domain_uses_public_suffix_list() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("example.com") == "example.com"


@pytest.mark.parametrize("policy", ["none", "quarantine", "reject"])
def test_fail_under_each_policy(dns_server: DnsServer, policy: str) -> None:
    dns_server.set_zone(zone(f"v=DMARC1; p={policy}"))
    res = run(check_dmarc(msg("a@example.co.uk"), SPF_FAIL, [], resolver(dns_server)))
    assert (res.result, res.policy, res.policy_domain) == ("fail", policy, "example.co.uk")


def test_pass_by_relaxed_spf_or_dkim_and_strict_modes(dns_server: DnsServer) -> None:
    dns_server.set_zone(zone("v=DMARC1; p=reject"))
    r = resolver(dns_server)
    by_spf = run(check_dmarc(msg("a@example.co.uk"), SPF_PASS, [], r))
    assert (by_spf.result, by_spf.spf_aligned, by_spf.policy) == ("pass", True, "none")
    by_dkim = run(check_dmarc(msg("a@example.co.uk"), SPF_FAIL, DKIM_PASS, r))
    assert (by_dkim.result, by_dkim.dkim_aligned) == ("pass", True)
    dns_server.set_zone(zone("v=DMARC1; p=reject; adkim=s; aspf=s"))
    strict = run(check_dmarc(msg("a@example.co.uk"), SPF_PASS, DKIM_PASS, r))
    assert (strict.result, strict.policy) == ("fail", "reject")
    unrelated = [DkimResult("pass", "ok", "other.test")]
    assert run(check_dmarc(msg("a@example.co.uk"), None, unrelated, r)).result == "fail"


def test_subdomain_policy_and_own_record(dns_server: DnsServer) -> None:
    dns_server.set_zone(zone("v=DMARC1; p=reject; sp=quarantine"))
    r = resolver(dns_server)
    res = run(check_dmarc(msg("a@deep.sub.example.co.uk"), SPF_FAIL, [], r))
    assert (res.result, res.policy, res.policy_domain) == ("fail", "quarantine", "example.co.uk")
    dns_server.set_zone(zone("v=DMARC1; p=reject; sp=quarantine", sub="v=DMARC1; p=none"))
    res = run(check_dmarc(msg("a@sub.example.co.uk"), SPF_FAIL, [], r))
    assert (res.policy, res.policy_domain) == ("none", "sub.example.co.uk")


def test_pct_sampling_downgrades(dns_server: DnsServer) -> None:
    dns_server.set_zone(zone("v=DMARC1; p=reject; pct=30"))
    r, rng = resolver(dns_server), random.Random(7)
    policies = [run(check_dmarc(msg("a@example.co.uk"), SPF_FAIL, [], r, rng=rng)).policy
                for _ in range(40)]
    assert set(policies) == {"reject", "quarantine"}
    assert 4 <= policies.count("reject") <= 20


@pytest.mark.parametrize(("records", "why"), [
    ([], "no DMARC record"),
    (["v=DMARC1; p=bogus"], "malformed"),
    (["v=DMARC1 p=reject"], "malformed"),
    (["v=DMARC1; p=reject", "v=DMARC1; p=none"], "2 DMARC records"),
    (["p=reject; v=DMARC1"], "no DMARC record"),
])
def test_malformed_or_missing_is_none(dns_server: DnsServer, records: list[str],
                                      why: str) -> None:
    dns_server.set_zone({"_dmarc.example.co.uk": [("TXT", t) for t in records]}
                        if records else {"x.test": [("A", "127.0.0.1")]})
    res = run(check_dmarc(msg("a@example.co.uk"), SPF_FAIL, [], resolver(dns_server)))
    assert res.result == "none" and why in res.reason, res


def test_lenient_parsing_and_temp_errors(dns_server: DnsServer) -> None:
    rec = parse_record("v=DMARC1; rua=mailto:r@x.test; pct=500; adkim=q")
    assert (rec.p, rec.pct, rec.adkim) == ("none", 100, "r") and rec.warnings
    dns_server.set_zone(zone("v=DMARC1; p=reject"))
    dns_server.drop("_dmarc.example.co.uk")
    res = run(check_dmarc(msg("a@example.co.uk"), SPF_FAIL, [], resolver(dns_server)))
    assert res.result == "temperror"
    two_froms = b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n"
    assert run(check_dmarc(two_froms, None, [], resolver(dns_server))).result == "none"
