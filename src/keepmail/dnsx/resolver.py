"""Async DNS resolver wrapper for keepmail (dnspython's asyncresolver).

Every DNS question keepmail asks goes through `Resolver`, built from the
configured nameservers ("ip[:port]" strings; None or "system" reads
/etc/resolv.conf), so tests point it at a loopback server (DESIGN.md,
principle 8).

Answers are typed and keep the three outcomes callers must tell apart
(RFC 7208 5 and 4.4, RFC 7489 6.6.3, RFC 7672 2.1):
- records found: a `Records` list (a plain list with `.nxdomain` and
  `.secure` attributes);
- NXDOMAIN (RFC 1035 4.1.1 rcode 3) or no data (NOERROR, empty answer,
  RFC 2308 2.2): an empty `Records`, with `.nxdomain` telling which;
- anything else (timeout, SERVFAIL, REFUSED, network error): `DnsTempError`.
Names that cannot be put on the wire (label over 63 octets, name over 255,
empty label; RFC 1035 2.3.4) raise `DnsNameError`.

With `want_dnssec`, queries carry the DO bit (RFC 4035 3.2.1) and the AD
bit (RFC 6840 5.7); `.secure` is the AD flag of the answer, which is only
meaningful behind a validating resolver on a trusted path (RFC 7672 1.3).
Truncated UDP answers are retried over TCP by dnspython (RFC 7766 5).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0     # seconds per try
DEFAULT_LIFETIME = 5.0    # seconds per question, tries and TCP retry included
EDNS_PAYLOAD = 1232       # DNS flag day 2020: avoids IP fragmentation
ANSWER_CACHE_SIZE = 4096  # answers kept in front of dnspython's cache


class DnsError(Exception):
    """Base of the resolver's errors."""


class DnsTempError(DnsError):
    """Timeout, SERVFAIL, REFUSED or network trouble: trying later may work."""


class DnsNameError(DnsError, ValueError):
    """The name cannot be looked up at all (bad label or length)."""


class Records(list[T], Generic[T]):
    """A list of typed records plus how the answer came."""

    nxdomain: bool = False
    secure: bool = False
    expires = 0.0   # time.time() when a looked-up answer goes stale (0: not cacheable)

    def __init__(self, items: Sequence[T] = (), *, nxdomain: bool = False,
                 secure: bool = False) -> None:
        super().__init__(items)
        self.nxdomain = nxdomain
        self.secure = secure


@dataclass(frozen=True)
class MX:
    preference: int
    exchange: str          # lower case, no trailing dot; "" for a null MX (RFC 7505)


@dataclass(frozen=True)
class TLSA:
    usage: int
    selector: int
    mtype: int
    data: bytes


def parse_nameserver(spec: str) -> tuple[str, int]:
    """ "ip", "ip:port", "[v6]:port" or "v6" → (ip, port)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = int(port_text)
    else:
        host, port = spec, 53
    ipaddress.ip_address(host)   # raises ValueError naming the bad address
    return host, port


def to_name(name: str) -> dns.name.Name:
    """An absolute DNS name, or DnsNameError (no search list is ever applied)."""
    try:
        return dns.name.from_text(name.rstrip(".") + "." if name not in ("", ".") else ".")
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise DnsNameError(f"invalid DNS name {name!r}: {exc}") from exc


def _text(name: Any) -> str:
    return name.to_text(omit_final_dot=True).lower() if name is not None else ""


class Resolver:
    """keepmail's async resolver: typed answers, explicit error classes."""

    def __init__(self, nameservers: Sequence[str] | str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, lifetime: float = DEFAULT_LIFETIME,
                 edns: bool = True, want_dnssec: bool = False, cache: bool = True) -> None:
        system = nameservers is None or nameservers == "system"
        self._res = dns.asyncresolver.Resolver(configure=system)
        if not system:
            specs = [nameservers] if isinstance(nameservers, str) else list(nameservers or [])
            if not specs:
                raise ValueError("no nameservers configured")
            self._res.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(s))
                                     for s in specs]
        self._res.timeout = timeout
        self._res.lifetime = lifetime
        self.want_dnssec = want_dnssec
        if want_dnssec:
            self._res.use_edns(0, dns.flags.DO, EDNS_PAYLOAD)
            self._res.flags = dns.flags.RD | dns.flags.AD
        elif edns:
            self._res.use_edns(0, 0, EDNS_PAYLOAD)
        else:
            self._res.use_edns(-1)
        if cache:
            self._res.cache = dns.resolver.LRUCache(4096)
        # In front of dnspython's cache: a hit there still builds a Name and a
        # resolution (about 60 % of an MX's DNS time with every check on, where a
        # message asks the same few questions as the last one). Same expiry as
        # dnspython's cache: the answer's TTL.
        self._answers: OrderedDict[tuple[str, str], tuple[float, Records[Any]]] | None = (
            OrderedDict() if cache else None)
        self.queries = 0   # questions asked (cache hits included), for tests and metrics

    @property
    def lifetime(self) -> float:
        return float(self._res.lifetime)

    async def lookup(self, name: str, rdtype: str) -> Records[Any]:
        """Raw rdata objects of one type at a name (CNAMEs followed)."""
        self.queries += 1
        answers = self._answers
        if answers is not None:
            key = (name.lower(), rdtype)
            hit = answers.get(key)
            if hit is not None and hit[0] > time.time():
                cached = hit[1]
                return Records(cached, nxdomain=cached.nxdomain, secure=cached.secure)
        records = await self._ask(name, rdtype)
        if answers is not None and records.expires:
            answers[key] = (records.expires, records)
            answers.move_to_end(key)
            if len(answers) > ANSWER_CACHE_SIZE:
                answers.popitem(last=False)
        return Records(records, nxdomain=records.nxdomain, secure=records.secure)

    async def _ask(self, name: str, rdtype: str) -> Records[Any]:
        qname = to_name(name)
        try:
            answer = await self._res.resolve(qname, rdtype, search=False,
                                             raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Records(nxdomain=True)
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel) as exc:
            raise DnsNameError(f"invalid DNS name {name!r}: {exc}") from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsTempError(f"{name} {rdtype}: server failure") from exc
        except dns.exception.Timeout as exc:
            raise DnsTempError(f"{name} {rdtype}: timeout") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTempError(f"{name} {rdtype}: {exc.__class__.__name__}: {exc}") from exc
        secure = bool(answer.response.flags & dns.flags.AD)
        records = Records(list(answer.rrset or []), secure=secure)
        records.expires = float(answer.expiration)
        return records

    async def txt_bytes(self, name: str) -> Records[bytes]:
        """Each TXT record's character-strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        recs = await self.lookup(name, "TXT")
        return Records([b"".join(r.strings) for r in recs], nxdomain=recs.nxdomain,
                       secure=recs.secure)

    async def txt(self, name: str) -> Records[str]:
        """TXT records as text; bytes that are not UTF-8 become U+FFFD."""
        recs = await self.txt_bytes(name)
        return Records([r.decode("utf-8", "replace") for r in recs], nxdomain=recs.nxdomain,
                       secure=recs.secure)

    async def mx(self, name: str) -> Records[MX]:
        """MX records, sorted by preference (RFC 5321 5.1)."""
        recs = await self.lookup(name, "MX")
        items = sorted((MX(r.preference, _text(r.exchange)) for r in recs),
                       key=lambda m: (m.preference, m.exchange))
        return Records(items, nxdomain=recs.nxdomain, secure=recs.secure)

    async def a(self, name: str) -> Records[str]:
        recs = await self.lookup(name, "A")
        return Records([r.address for r in recs], nxdomain=recs.nxdomain, secure=recs.secure)

    async def aaaa(self, name: str) -> Records[str]:
        recs = await self.lookup(name, "AAAA")
        return Records([r.address for r in recs], nxdomain=recs.nxdomain, secure=recs.secure)

    async def addresses(self, name: str, ipv6: bool) -> Records[str]:
        return await (self.aaaa(name) if ipv6 else self.a(name))

    async def ptr(self, ip: str) -> Records[str]:
        """Names of an address (in-addr.arpa / ip6.arpa, RFC 1035 3.5, RFC 3596 2.5)."""
        try:
            rev = dns.reversename.from_address(ip).to_text()
        except (dns.exception.SyntaxError, ValueError) as exc:
            raise DnsNameError(f"not an IP address: {ip!r}") from exc
        recs = await self.lookup(rev, "PTR")
        return Records([_text(r.target) for r in recs], nxdomain=recs.nxdomain,
                       secure=recs.secure)

    async def tlsa(self, name: str) -> Records[TLSA]:
        """TLSA records (RFC 6698 2.1); check `.secure` before trusting them."""
        recs = await self.lookup(name, "TLSA")
        items = [TLSA(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in recs]
        return Records(items, nxdomain=recs.nxdomain, secure=recs.secure)
