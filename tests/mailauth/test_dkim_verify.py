"""DKIM verification of dkimpy-signed messages (rsa-sha256, ed25519-sha256) and bad input."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keepmail.mailauth.dkim_verify import canon_body, verify
from tests.mailauth.helpers import (
    MESSAGE,
    ed_record,
    key_zone,
    resolver,
    rsa_record,
    run,
    sign_ed,
    sign_rsa,
)
from tests.support.dnsserver import DnsServer

# A 512-bit RSA public key (cryptography will not generate one, so build it from numbers).
SHORT_KEY = base64.b64encode(rsa.RSAPublicNumbers(65537, (1 << 511) | 12345).public_key()
                             .public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
                             ).decode()


@pytest.fixture
def keys(dns_server: DnsServer) -> DnsServer:
    dns_server.set_zone(key_zone())
    return dns_server


@pytest.mark.parametrize("canon", [(b"relaxed", b"relaxed"), (b"simple", b"simple"),
                                   (b"relaxed", b"simple"), (b"simple", b"relaxed")])
def test_rsa_pass_each_canonicalization(keys: DnsServer, canon: tuple[bytes, bytes]) -> None:
    [res] = run(verify(sign_rsa(MESSAGE, canonicalize=canon), resolver(keys)))
    assert (res.result, res.domain, res.selector, res.algorithm) == \
        ("pass", "example.test", "r", "rsa-sha256")


def test_several_signatures_each_reported(keys: DnsServer) -> None:
    msg = sign_rsa(sign_ed(MESSAGE))
    results = run(verify(msg, resolver(keys)))
    assert [(r.result, r.algorithm) for r in results] == [("pass", "rsa-sha256"),
                                                           ("pass", "ed25519-sha256")]
    bad = msg.replace(b"Bye.", b"Bye!")
    assert [r.reason for r in run(verify(bad, resolver(keys)))] == ["body hash mismatch"] * 2


def test_header_change_and_missing(keys: DnsServer) -> None:
    msg = sign_rsa(MESSAGE)
    [res] = run(verify(msg.replace(b"hello   there", b"hello there!"), resolver(keys)))
    assert (res.result, res.reason) == ("fail", "signature does not verify")
    assert run(verify(MESSAGE, resolver(keys))) == []


def test_length_tag(keys: DnsServer) -> None:
    msg = sign_rsa(MESSAGE, length=True)
    assert run(verify(msg + b"appended\r\n", resolver(keys)))[0].result == "pass"
    cut = msg[:-12]
    assert run(verify(cut, resolver(keys)))[0].result == "permerror"


@pytest.mark.parametrize(("record", "why"), [
    ("v=DKIM1; k=rsa; p=", "revoked"),
    ("v=DKIM1; k=rsa; p=!!notbase64", "base64"),
    ("v=DKIM1; k=rsa; p=AAAA", "cannot be decoded"),
    ("v=DKIM1; k=ed25519; p=" + rsa_record().split("p=")[1], "does not fit"),
    ("v=DKIM2; p=AAAA", "DKIM1"),
    ("v=DKIM1; k=rsa; h=sha1; " + rsa_record().split("; ", 2)[2], "sha256"),
    ("v=DKIM1; k=rsa; s=other; " + rsa_record().split("; ", 2)[2], "not for email"),
    ("v=DKIM1; k=rsa k=rsa", "no p="),
    (f"v=DKIM1; p={SHORT_KEY}", "too short"),
], ids=lambda value: value if len(value) < 40 else value[:30])  # keys differ per process
def test_bad_keys_are_permerror(dns_server: DnsServer, record: str, why: str) -> None:
    dns_server.set_zone({"r._domainkey.example.test": [("TXT", record)]})
    [res] = run(verify(sign_rsa(MESSAGE), resolver(dns_server)))
    assert res.result == "permerror" and why in res.reason, res


def test_no_key_temp_failure_and_testing_mode(dns_server: DnsServer) -> None:
    msg = sign_rsa(MESSAGE)
    [res] = run(verify(msg, resolver(dns_server)))
    assert res.result == "permerror" and "no key" in res.reason
    dns_server.set_zone({"r._domainkey.example.test": [("TXT", rsa_record(extra="t=y; "))]})
    [res] = run(verify(msg.replace(b"Bye.", b"Bye!"), resolver(dns_server)))
    assert (res.result, res.testing) == ("neutral", True)
    dns_server.drop("r._domainkey.example.test")
    [res] = run(verify(msg, resolver(dns_server)))
    assert res.result == "temperror"


@pytest.mark.parametrize(("edit", "why"), [
    ((b"a=rsa-sha256", b"a=rsa-sha1"), "RFC 8301"),
    ((b"a=rsa-sha256", b"a=rsa-md5"), "unknown algorithm"),
    ((b"v=1", b"v=2"), "version"),
    ((b"d=example.test", b"d=example.test; d=x.test"), "duplicate"),
    ((b"h=from", b"h=to"), "From"),
    ((b" bh=", b" bx="), "lacks bh"),
    ((b"c=relaxed/simple", b"c=weird"), "canonicalization"),
    ((b"i=@example.test", b"i=a@evil.test"), "not under"),
    ((b"s=r", b"s=r; x=1000"), "x= is before t="),
])
def test_bad_signatures_are_permerror(keys: DnsServer, edit: tuple[bytes, bytes],
                                      why: str) -> None:
    msg = sign_rsa(MESSAGE, canonicalize=(b"relaxed", b"simple"))
    assert edit[0] in msg
    [res] = run(verify(msg.replace(edit[0], edit[1], 1), resolver(keys)))
    assert res.result == "permerror" and why in res.reason, res


def test_garbage_never_raises(keys: DnsServer) -> None:
    for raw in (b"", b"\r\n\r\n", b"DKIM-Signature:\r\n\r\n", b"DKIM-Signature: ;;;=\r\n",
                b"DKIM-Signature: v=1; a=rsa-sha256; b=\xff\xfe; bh=; d=; h=from; s=\r\n\r\nx"):
        for res in run(verify(raw, resolver(keys))):
            assert res.result == "permerror"


def test_body_canonicalization() -> None:
    assert canon_body(b"", relaxed=False) == b"\r\n"
    assert canon_body(b"", relaxed=True) == b""
    assert canon_body(b"a  b \t\r\n\r\n \r\n", relaxed=True) == b"a b\r\n"
    assert canon_body(b"a  b \r\n\r\n", relaxed=False) == b"a  b \r\n"


def test_ed25519_alone(dns_server: DnsServer) -> None:
    dns_server.set_zone({"e._domainkey.example.test": [("TXT", ed_record())]})
    [res] = run(verify(sign_ed(MESSAGE), resolver(dns_server)))
    assert (res.result, res.algorithm) == ("pass", "ed25519-sha256")
