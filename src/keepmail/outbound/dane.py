"""DANE for SMTP (RFC 7672): TLSA look-up and certificate matching.

TLSA records at _<port>._tcp.<mx host> apply only when both the address
records of the host and the TLSA RRset come back DNSSEC-validated (AD bit
from the configured validating resolver, RFC 7672 2.2). Usable records are
DANE-TA(2) and DANE-EE(3) (3.1; PKIX usages 0 and 1 are not used for SMTP),
selector 0 (full certificate) or 1 (SubjectPublicKeyInfo), matching type 0,
1 (SHA-256) or 2 (SHA-512) (RFC 6698 2.1). With DANE-EE the names in the
certificate are not checked (3.1.1); with DANE-TA the MX host name must be
in the certificate (3.2.3). When TLSA records exist but none is usable,
TLS is still mandatory but unauthenticated (2.2).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .mxlookup import Dns, DnsNoDomain, DnsTemporary

DANE_TA, DANE_EE = 2, 3


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        return self.usage in (DANE_TA, DANE_EE) and self.selector in (0, 1) and \
            self.mtype in (0, 1, 2)


@dataclass(frozen=True)
class DaneState:
    records: tuple[Tlsa, ...]      # empty: DANE does not apply
    error: str = ""                # temporary failure looking up TLSA (defer delivery)

    @property
    def applies(self) -> bool:
        return bool(self.records)

    @property
    def usable(self) -> list[Tlsa]:
        return [r for r in self.records if r.usable]


def parse_tlsa(text: str) -> Tlsa:
    usage, selector, mtype, *data = text.split()
    return Tlsa(int(usage), int(selector), int(mtype), bytes.fromhex("".join(data)))


async def lookup(dns: Dns, host: str, port: int, host_secure: bool) -> DaneState:
    """TLSA records for host (empty unless the host and the records are DNSSEC-secure)."""
    if not host_secure:
        return DaneState(())
    name = f"_{port}._tcp.{host}"
    try:
        answer = await dns.query(name, "TLSA")
    except DnsNoDomain:
        return DaneState(())
    except DnsTemporary as exc:
        # RFC 7672 2.2: a failed TLSA look-up of a secure host must not fall back.
        return DaneState((), error=f"TLSA look-up for {name} failed: {exc}")
    if not answer.secure or not answer.values:
        return DaneState(())
    return DaneState(tuple(parse_tlsa(v) for v in answer.values))


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == 0:
        return der
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def _matches(record: Tlsa, der: bytes) -> bool:
    cert = x509.load_der_x509_certificate(der)
    return _digest(_selected(cert, der, record.selector), record.mtype) == record.data


def _names(der: bytes) -> list[str]:
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return []


def _name_ok(host: str, names: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for name in names:
        if name == host or (name.startswith("*.") and host.partition(".")[2] == name[2:]):
            return True
    return False


def _anchored(record: Tlsa, chain: list[bytes]) -> bool:
    """The leaf chains by valid signatures up to a certificate matching record."""
    certs = [x509.load_der_x509_certificate(der) for der in chain]
    for i, der in enumerate(chain):
        if _matches(record, der):
            return True
        if i + 1 >= len(certs):
            return False
        try:
            certs[i].verify_directly_issued_by(certs[i + 1])
        except (ValueError, TypeError, Exception):
            return False
    return False


def verify(state: DaneState, chain: list[bytes], host: str) -> tuple[bool, str]:
    """Whether the server's chain (leaf first) satisfies a usable TLSA record."""
    usable = state.usable
    if not usable:
        return True, "TLSA records present but none usable: encrypted, not authenticated"
    if not chain:
        return False, "server sent no certificate"
    for record in usable:
        if record.usage == DANE_EE and _matches(record, chain[0]):
            return True, f"DANE-EE {record.selector} {record.mtype} matched"
        if record.usage == DANE_TA and _anchored(record, chain):
            if _name_ok(host, _names(chain[0])):
                return True, f"DANE-TA {record.selector} {record.mtype} matched"
            return False, f"DANE-TA matched but the certificate does not name {host}"
    return False, "no TLSA record matches the server's certificate"
