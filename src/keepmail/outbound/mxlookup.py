"""Where mail for a domain goes: MX look-up (RFC 5321 5.1) with null MX (RFC 7505).

MX records are tried in preference order (equal preferences shuffled); a
domain without MX records is its own implicit MX (5.1, A/AAAA fallback); a
lone MX of "." means the domain takes no mail (RFC 7505 3, permanent 5.1.10).
NXDOMAIN is permanent; timeouts and SERVFAIL are temporary. Each answer
carries whether the resolver vouched for it with the AD bit (RFC 4035 3.2.3),
which DANE (RFC 7672 2.1) needs.

The DNS client here is keepmail's shared resolver (keepmail.dnsx.resolver)
asked with the DO and AD bits, behind this module's small interface (`Dns`)
that the MX, MTA-STS and DANE look-ups use; its answers are cached for their
TTL, so a busy queue does not ask the same questions for every connection.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..dnsx.resolver import DEFAULT_TIMEOUT, DnsNameError, DnsTempError, Resolver


class DnsTemporary(Exception):
    """A DNS look-up failed in a way that may succeed later."""


class DnsNoDomain(Exception):
    """NXDOMAIN: the name does not exist."""


@dataclass(frozen=True)
class Answer:
    values: list[str]
    secure: bool   # AD bit set by a validating resolver


class Dns(Protocol):
    async def query(self, name: str, rdtype: str) -> Answer: ...


class DnsClient:
    """The `Dns` interface on a keepmail.dnsx Resolver that asks for DNSSEC status."""

    def __init__(self, nameservers: Sequence[str] | None = None, timeout: float = 5.0, *,
                 resolver: Resolver | None = None) -> None:
        if resolver is None:
            # No nameservers configured: the system's (/etc/resolv.conf).
            resolver = Resolver(list(nameservers) if nameservers else None,
                                timeout=min(timeout, DEFAULT_TIMEOUT), lifetime=timeout,
                                want_dnssec=True)
        elif not resolver.want_dnssec:
            raise ValueError("the delivery agent's resolver must ask for DNSSEC status "
                             "(want_dnssec=True): DANE needs the AD bit")
        self.resolver = resolver

    async def query(self, name: str, rdtype: str) -> Answer:
        try:
            records = await self.resolver.lookup(name, rdtype)
        except DnsNameError:
            raise DnsNoDomain(name) from None     # a name that cannot exist in DNS
        except DnsTempError as exc:
            raise DnsTemporary(str(exc)) from None
        if records.nxdomain:
            raise DnsNoDomain(name)
        return Answer([rd.to_text() for rd in records], records.secure)


@dataclass
class Target:
    host: str                 # MX host name, or the domain for an implicit MX
    preference: int
    ips: list[str] = field(default_factory=list)
    secure: bool = False      # MX and address records DNSSEC-validated
    error: str = ""           # why no address was found


class NoRoute(Exception):
    """The domain cannot receive mail; permanent says whether to bounce now."""

    def __init__(self, message: str, *, permanent: bool, status: str) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


async def lookup(dns_: Dns, domain: str, *, rng: random.Random | None = None) -> list[Target]:
    """MX targets for domain, best first, with their addresses resolved."""
    literal = _address_literal(domain)
    if literal:
        return [Target(domain, 0, [literal], secure=False)]
    try:
        mx = await dns_.query(domain, "MX")
    except DnsNoDomain:
        raise NoRoute(f"domain {domain} does not exist (NXDOMAIN)", permanent=True,
                      status="5.1.2") from None
    except DnsTemporary as exc:
        raise NoRoute(f"MX look-up for {domain} failed: {exc}", permanent=False,
                      status="4.4.3") from None
    targets = _targets(domain, mx, rng or random.Random())
    for target in targets:
        await _resolve_addresses(dns_, target, mx.secure)
    if not any(t.ips for t in targets):
        errors = "; ".join(t.error for t in targets if t.error)
        temporary = any("temporary" in t.error for t in targets)
        raise NoRoute(f"no address for the mail servers of {domain}: {errors}",
                      permanent=not temporary, status="4.4.3" if temporary else "5.1.2")
    return targets


def _targets(domain: str, mx: Answer, rng: random.Random) -> list[Target]:
    records = []
    for value in mx.values:
        pref, _, host = value.partition(" ")
        records.append((int(pref), host.rstrip(".").lower()))
    if not records:
        return [Target(domain, 0)]          # implicit MX (RFC 5321 5.1)
    if any(host == "" for _, host in records):
        raise NoRoute(f"{domain} does not accept mail (null MX, RFC 7505)", permanent=True,
                      status="5.1.10")
    rng.shuffle(records)                    # equal preferences in random order
    records.sort(key=lambda r: r[0])
    return [Target(host, pref) for pref, host in records]


async def _resolve_addresses(dns_: Dns, target: Target, mx_secure: bool) -> None:
    secure = mx_secure
    for rdtype in ("A", "AAAA"):
        try:
            answer = await dns_.query(target.host, rdtype)
        except DnsNoDomain:
            target.error = f"{target.host}: no such host"
            return
        except DnsTemporary as exc:
            target.error = f"{target.host}: temporary DNS failure ({exc})"
            continue
        target.ips += answer.values
        if answer.values:
            secure = secure and answer.secure
    target.secure = secure and bool(target.ips)
    if not target.ips and not target.error:
        target.error = f"{target.host}: no A or AAAA record"


def _address_literal(domain: str) -> str:
    if not (domain.startswith("[") and domain.endswith("]")):
        return ""
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return ""
