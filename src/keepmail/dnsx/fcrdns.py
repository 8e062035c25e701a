"""Forward-confirmed reverse DNS ("iprev", RFC 8601 3 / RFC 5451 method iprev).

The client's address is looked up in PTR (RFC 1035 3.5, RFC 3596 2.5); each
name (at most MAX_NAMES, as RFC 7208 4.6.4 bounds PTR work) is looked up in
A or AAAA; the names whose addresses include the client are confirmed.
Results follow RFC 8601 2.7.3: pass (a name confirms), fail (no PTR, or no
name confirms), temperror (DNS trouble prevented an answer), permerror
(the address is not one).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from keepmail.dnsx.resolver import DnsNameError, DnsTempError, Resolver

MAX_NAMES = 10


@dataclass(frozen=True)
class FcrdnsResult:
    result: str                        # pass, fail, temperror, permerror
    reason: str
    names: tuple[str, ...] = ()        # PTR names
    confirmed: tuple[str, ...] = ()    # names whose A/AAAA include the client

    @property
    def name(self) -> str | None:
        return self.confirmed[0] if self.confirmed else None


async def _confirms(resolver: Resolver, name: str, ip: ipaddress.IPv4Address |
                    ipaddress.IPv6Address) -> bool | None:
    """True/False, or None when the look-up failed temporarily."""
    try:
        addrs = await resolver.addresses(name, ip.version == 6)
    except DnsNameError:
        return False
    except DnsTempError:
        return None
    return any(ipaddress.ip_address(a) == ip for a in addrs)


async def check(resolver: Resolver, ip: str) -> FcrdnsResult:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return FcrdnsResult("permerror", f"not an IP address: {ip!r}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    try:
        names = list(await resolver.ptr(str(addr)))[:MAX_NAMES]
    except DnsTempError as exc:
        return FcrdnsResult("temperror", f"PTR lookup: {exc}")
    if not names:
        return FcrdnsResult("fail", f"no PTR record for {addr}")
    oks = await asyncio.gather(*(_confirms(resolver, n, addr) for n in names))
    confirmed = tuple(n for n, ok in zip(names, oks, strict=True) if ok)
    if confirmed:
        return FcrdnsResult("pass", f"{addr} is {confirmed[0]}", tuple(names), confirmed)
    if any(ok is None for ok in oks):
        return FcrdnsResult("temperror", "forward lookups failed", tuple(names))
    return FcrdnsResult("fail", f"no PTR name of {addr} resolves back to it", tuple(names))
