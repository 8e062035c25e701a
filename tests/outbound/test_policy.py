"""MX look-up (RFC 5321 5.1, RFC 7505), DANE (RFC 7672) and MTA-STS parsing (RFC 8461)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keepmail import tls
from keepmail.outbound import mtasts, mxlookup

from .conftest import CA, FAST, asubmit, message, run, wait_for, with_settings
from .peers import LocalDns
from .test_delivery import HOST, PEER, ZONE, setup

_SERVERS: dict[str, LocalDns] = {}


def lookup(zone: str, domain: str) -> list[mxlookup.Target]:
    dns = _SERVERS.get(zone)
    if dns is None:
        dns = _SERVERS[zone] = LocalDns(zone).start()
    return run(mxlookup.lookup(mxlookup.DnsClient([dns.nameserver], 2.0), domain))


def test_mx_order_implicit_null_and_missing() -> None:
    zone = """
    pref.test. 60 IN MX 20 b.pref.test.
    pref.test. 60 IN MX 10 a.pref.test.
    a.pref.test. 60 IN A 127.0.0.91
    b.pref.test. 60 IN A 127.0.0.92
    implicit.test. 60 IN A 127.0.0.93
    null.test. 60 IN MX 0 .
    noaddr.test. 60 IN MX 10 gone.noaddr.test.
    """
    targets = lookup(zone, "pref.test")
    assert [(t.host, t.ips) for t in targets] == [("a.pref.test", ["127.0.0.91"]),
                                                  ("b.pref.test", ["127.0.0.92"])]
    assert [(t.host, t.ips) for t in lookup(zone, "implicit.test")] == [
        ("implicit.test", ["127.0.0.93"])]
    with pytest.raises(mxlookup.NoRoute) as null:
        lookup(zone, "null.test")
    assert null.value.permanent and null.value.status == "5.1.10"
    with pytest.raises(mxlookup.NoRoute) as nx:
        lookup(zone, "nowhere.test")
    assert nx.value.permanent and nx.value.status == "5.1.2"
    with pytest.raises(mxlookup.NoRoute) as noaddr:
        lookup(zone, "noaddr.test")
    assert noaddr.value.permanent
    _SERVERS.pop(zone).stop()


def test_mx_temporary_failure_when_dns_is_down() -> None:
    client = mxlookup.DnsClient(["127.0.0.1:9"], 0.5)
    with pytest.raises(mxlookup.NoRoute) as exc:
        run(mxlookup.lookup(client, "example.test"))
    assert not exc.value.permanent


def test_mta_sts_policy_parsing_and_matching() -> None:
    policy = mtasts.parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\n"
                                 "mx: *.example.net\r\nmax_age: 604800\r\n", "id1", 0.0)
    assert policy.allows("mail.example.test") and policy.allows("MX1.example.net.")
    assert not policy.allows("a.b.example.net") and not policy.allows("example.net")
    assert not policy.expired(1000.0) and policy.expired(604800.0)
    with pytest.raises(mtasts.PolicyError):
        mtasts.parse_policy("version: STSv1\nmode: enforce\nmax_age: 1\n", "x", 0)
    assert mtasts.parse_txt(['"v=STSv1; id=20190429T010101;"']) == "20190429T010101"
    assert mtasts.parse_txt(['"v=STSv1; id=a"', '"v=STSv1; id=b"']) is None


def spki_sha256(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@pytest.mark.parametrize("matching", [True, False])
def test_dane_ee(tmp_path: Path, ca: CA, matching: bool) -> None:
    # A self-signed certificate, authenticated only by DANE-EE (3 1 1).
    files = tls.make_certificate(["mx.b.test"], tmp_path / "mx.pem", tmp_path / "mx.key")
    digest = spki_sha256(files.cert) if matching else "00" * 32

    async def go() -> None:
        org, peer, dns = await setup(tmp_path, ca, peer_tls=tls.server_context(files),
                                     settings=with_settings(FAST, dane=True))
        zone = ZONE + f"_{peer.port}._tcp.mx.b.test. 60 IN TLSA 3 1 1 {digest}\n"
        dns.set_zone(zone, secure={"b.test", "mx.b.test", f"_{peer.port}._tcp.mx.b.test"})
        try:
            await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["bob@b.test"],
                          message("alice@a.test", "bob@b.test"))
            if matching:
                await wait_for(lambda: len(peer.messages) == 1, what="DANE delivery")
                assert peer.messages[0].tls
                conns = [e[2] for e in org.events("connection")]
                assert any('"policy": "dane"' in c and '"verified": true' in c for c in conns)
            else:
                await wait_for(lambda: bool(org.events("result")), what="attempt")
                assert peer.messages == []
                assert not any(c.startswith("MAIL") for c in peer.commands)
                assert "no TLSA record matches" in org.events("result")[0][2]
        finally:
            await org.stop()
            await peer.close()
            dns.stop()

    run(go())


def test_dane_ignored_without_ad_bit(tmp_path: Path, ca: CA) -> None:
    files = tls.make_certificate(["mx.b.test"], tmp_path / "mx.pem", tmp_path / "mx.key")

    async def go() -> None:
        org, peer, dns = await setup(tmp_path, ca, peer_tls=tls.server_context(files),
                                     settings=with_settings(FAST, dane=True))
        dns.set_zone(ZONE + f"_{peer.port}._tcp.mx.b.test. 60 IN TLSA 3 1 1 {'00' * 32}\n",
                     secure=set())
        try:
            await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["bob@b.test"],
                          message("alice@a.test", "bob@b.test"))
            await wait_for(lambda: len(peer.messages) == 1, what="opportunistic delivery")
        finally:
            await org.stop()
            await peer.close()
            dns.stop()

    run(go())


_ = PEER
