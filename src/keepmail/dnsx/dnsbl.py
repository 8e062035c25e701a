"""DNS block and allow lists, RFC 5782.

- 2.1 IPv4 lists: the address's octets reversed under the list zone;
- 2.4 IPv6 lists: the 32 nibbles reversed;
- 2.2/2.3 domain lists: the domain itself under the zone;
- 2.1 answers: an A record in 127.0.0.0/8 means "listed", its value is the
  return code (list-specific); a TXT record may give the reason;
- 5 test entries: 127.0.0.2 must be listed and 127.0.0.1 must not; `selftest`
  checks a list before it is trusted.

Answers outside 127.0.0.0/8 are ignored (a hijacked or wildcarded zone must
not list the world); Spamhaus-style 127.255.255.x replies mean the query was
refused and are reported as errors, not listings. Lists are only queried when
the admin enables them (DESIGN.md principle 7).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from keepmail.dnsx.resolver import DnsNameError, DnsTempError, Resolver

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")


@dataclass(frozen=True)
class DnsList:
    zone: str
    kind: str = "block"                 # "block" or "allow"
    codes: frozenset[str] = frozenset()  # return codes that count; empty = any 127/8 code
    domains: bool = False               # a domain list (RHSBL / DBL) instead of an IP list


@dataclass(frozen=True)
class ListResult:
    zone: str
    kind: str
    listed: bool
    codes: tuple[str, ...] = ()
    reason: str = ""
    error: str = ""                     # temporary failure or a refusal code


def reverse_ip(ip: str) -> str:
    """4.3.2.1 for 1.2.3.4; nibble form for IPv6 (RFC 5782 2.1, 2.4)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return ".".join(reversed(str(addr).split(".")))
    return ".".join(reversed(addr.exploded.replace(":", "")))


def query_name(dl: DnsList, subject: str) -> str:
    base = subject.lower().rstrip(".") if dl.domains else reverse_ip(subject)
    return f"{base}.{dl.zone.rstrip('.')}"


async def lookup(resolver: Resolver, dl: DnsList, subject: str, *,
                 want_reason: bool = True) -> ListResult:
    """Query one list for an IP address (or a domain, for domain lists)."""
    try:
        name = query_name(dl, subject)
        addrs = await resolver.a(name)
    except (ValueError, DnsNameError) as exc:
        return ListResult(dl.zone, dl.kind, False, error=f"bad query: {exc}")
    except DnsTempError as exc:
        return ListResult(dl.zone, dl.kind, False, error=str(exc))
    refused = [a for a in addrs if ipaddress.ip_address(a) in ERROR_CODES]
    codes = tuple(a for a in addrs if ipaddress.ip_address(a) in LOOPBACK and a not in refused
                  and (not dl.codes or a in dl.codes))
    if refused and not codes:
        return ListResult(dl.zone, dl.kind, False, error=f"list refused the query ({refused[0]})")
    if not codes:
        return ListResult(dl.zone, dl.kind, False)
    reason = ""
    if want_reason:
        try:
            reason = " ".join(await resolver.txt(name))[:300]
        except DnsTempError:
            reason = ""
    return ListResult(dl.zone, dl.kind, True, codes, reason)


async def check_lists(resolver: Resolver, lists: Sequence[DnsList], subject: str
                      ) -> list[ListResult]:
    """All lists concurrently, results in the order given."""
    return list(await asyncio.gather(*(lookup(resolver, dl, subject) for dl in lists)))


async def selftest(resolver: Resolver, dl: DnsList) -> str | None:
    """RFC 5782 5: None when the list behaves, else what is wrong."""
    if dl.domains:
        pos, neg = await asyncio.gather(lookup(resolver, dl, "test", want_reason=False),
                                        lookup(resolver, dl, "invalid", want_reason=False))
    else:
        pos, neg = await asyncio.gather(lookup(resolver, dl, "127.0.0.2", want_reason=False),
                                        lookup(resolver, dl, "127.0.0.1", want_reason=False))
    if pos.error or neg.error:
        return pos.error or neg.error
    if not pos.listed:
        return "test entry is not listed (list down or gone?)"
    if neg.listed:
        return "lists everything (wildcard?)"
    return None
