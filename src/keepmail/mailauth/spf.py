"""Sender Policy Framework, RFC 7208, evaluated asynchronously.

Implemented:
- 2.3/2.4 HELO and MAIL FROM identities (null sender → postmaster@HELO);
- 4.3 initial processing (domain validity → none), 4.4 record lookup,
  4.5 record selection ("v=spf1", exactly one), 4.6 record evaluation
  with the whole record parsed first (any syntax error → permerror);
- 4.6.4 processing limits: 10 DNS-querying terms (include, a, mx, ptr,
  exists, redirect), 2 void lookups, 10 address look-ups per MX mechanism
  (more → permerror) and 10 names per PTR answer (the rest ignored);
- 4.7 default result (neutral), 4.8 domain-spec expansion and truncation
  to 253 octets;
- 5.1-5.7 mechanisms all, include, a, mx, ptr, ip4, ip6, exists with
  dual CIDR lengths;
- 6.1 redirect (ignored when the record has "all"), 6.2 exp with macro
  expansion of the explanation (c, r, t allowed only there);
- 7 macros: letters s l o d i p h c r t v, uppercase → URL escaping
  (7.3), digit/reverse transformers, delimiters . - + , / _ =, and the
  %%, %_, %- escapes;
- 2.6 results none, neutral, pass, fail, softfail, temperror, permerror.

DNS goes through keepmail.dnsx.resolver: NXDOMAIN and no-data answers are
void lookups, timeouts and server failures are temperror.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from functools import lru_cache

from keepmail.dnsx.resolver import DnsNameError, DnsTempError, Resolver

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DNS_TERMS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_ADDRESS_LOOKUPS = 10
MAX_PTR_NAMES = 10
MAX_DOMAIN_LEN = 253

RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
DNS_MECHANISMS = ("include", "a", "mx", "ptr", "exists")

_VERSION = re.compile(r"^v=spf1(?: |$)", re.IGNORECASE)
_TERM = re.compile(r"^([-+?~]?)([A-Za-z][A-Za-z0-9_.\-]*)(.*)$", re.DOTALL)
_MACRO = re.compile(r"%(?:\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|(.?))", re.IGNORECASE)
_TOPLABEL = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
_QNUM = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)"
_IP4 = re.compile(rf"^{_QNUM}(?:\.{_QNUM}){{3}}$")
_CIDR4 = re.compile(r"^(?:0|[1-9]\d?)$")
_CIDR6 = re.compile(r"^(?:0|[1-9]\d{0,2})$")
_DUAL_CIDR = re.compile(r"^(.*?)(?:/(\d+))?(?://(\d+))?$", re.DOTALL)
_ESCAPE_SAFE = "-._~"   # RFC 3986 unreserved (besides ALPHA / DIGIT)


class PermError(Exception):
    """The record (or an included one) is broken: result permerror."""


class TempError(Exception):
    """A transient DNS problem: result temperror."""


@dataclass(frozen=True)
class SpfResult:
    result: str                   # one of RESULTS
    reason: str                   # human-readable why (for logs and A-R comments)
    domain: str = ""              # the domain whose policy was checked
    identity: str = "mailfrom"    # "mailfrom" or "helo"
    mechanism: str | None = None  # the term that matched
    explanation: str | None = None  # 6.2 explanation (fail only)
    lookups: int = 0              # DNS-querying terms used

    @property
    def sender_domain(self) -> str:
        return self.domain


@dataclass
class Mechanism:
    qualifier: str
    name: str
    domain_spec: str | None = None
    cidr4: int = 32
    cidr6: int = 128
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    text: str = ""


@dataclass
class Record:
    mechanisms: list[Mechanism] = field(default_factory=list)
    redirect: str | None = None
    exp: str | None = None


# -- parsing (4.6.1, 12 ABNF) ------------------------------------------------------------------

def check_macro_string(text: str, *, exp: bool = False) -> None:
    """Raise PermError unless `text` is a valid macro-string (7.1)."""
    for m in _MACRO.finditer(text):
        letter, digits, _, _, other = m.groups()
        if letter is not None:
            if letter.lower() not in "slodiphv" + ("crt" if exp else ""):
                raise PermError(f"macro letter {letter!r} not allowed here")
            if digits and int(digits) == 0:
                raise PermError("macro transformer digit must be nonzero")
        elif other not in ("%", "_", "-"):
            raise PermError(f"invalid macro escape %{other}")
    for ch in _MACRO.sub("", text):
        # explain-string = *( macro-string / SP ) (6.2)
        if not (0x21 <= ord(ch) <= 0x7E or (exp and ch == " ")) or ch == "%":
            raise PermError(f"invalid character {ch!r} in macro-string")


def check_domain_spec(spec: str) -> None:
    """domain-spec = macro-string domain-end (7.1); domain-end ends in a macro or toplabel."""
    if not spec:
        raise PermError("empty domain-spec")
    check_macro_string(spec)
    if spec.endswith("}") and _MACRO.search(spec) and re.search(r"%\{[^}]*\}$", spec):
        return
    labels = spec.rstrip(".").split(".") if spec.endswith(".") else spec.split(".")
    if len(labels) < 2 or not _TOPLABEL.match(labels[-1]):
        raise PermError(f"domain-spec {spec!r} does not end in a valid top label")


def _cidr(text: str | None, pattern: re.Pattern[str], limit: int, default: int) -> int:
    if text is None:
        return default
    if not pattern.match(text) or int(text) > limit:
        raise PermError(f"invalid CIDR length /{text}")
    return int(text)


def _parse_network(name: str, rest: str) -> tuple[ipaddress.IPv4Network |
                                                    ipaddress.IPv6Network, int]:
    if not rest.startswith(":"):
        raise PermError(f"{name} needs an address")
    addr, _, length = rest[1:].partition("/")
    if name == "ip4":
        if not _IP4.match(addr):
            raise PermError(f"invalid ip4 address {addr!r}")
        bits = _cidr(length if "/" in rest else None, _CIDR4, 32, 32)
    else:
        if not re.match(r"^[0-9A-Fa-f:.]+$", addr) or ":" not in addr:
            raise PermError(f"invalid ip6 address {addr!r}")
        bits = _cidr(length if "/" in rest else None, _CIDR6, 128, 128)
    try:
        net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    except ValueError as exc:
        raise PermError(f"invalid {name} network {addr!r}") from exc
    if (name == "ip4") != (net.version == 4):
        raise PermError(f"{name} with wrong address family {addr!r}")
    return net, bits


def parse_mechanism(qualifier: str, name: str, rest: str, text: str) -> Mechanism:
    mech = Mechanism(QUALIFIERS[qualifier or "+"], name.lower(), text=text)
    if mech.name == "all":
        if rest:
            raise PermError(f"unexpected {rest!r} after all")
    elif mech.name in ("include", "exists"):
        if not rest.startswith(":"):
            raise PermError(f"{mech.name} needs a domain")
        mech.domain_spec = rest[1:]
    elif mech.name in ("a", "mx"):
        m = _DUAL_CIDR.match(rest)
        assert m is not None   # the pattern matches every string
        spec, c4, c6 = m.groups()
        if spec and not spec.startswith(":"):
            raise PermError(f"invalid {mech.name} mechanism {text!r}")
        mech.domain_spec = spec[1:] if spec else None
        if spec == ":":
            raise PermError(f"empty domain in {text!r}")
        mech.cidr4 = _cidr(c4, _CIDR4, 32, 32)
        mech.cidr6 = _cidr(c6, _CIDR6, 128, 128)
    elif mech.name == "ptr":
        if rest and not rest.startswith(":"):
            raise PermError(f"invalid ptr mechanism {text!r}")
        mech.domain_spec = rest[1:] if rest else None
    elif mech.name in ("ip4", "ip6"):
        mech.network, _ = _parse_network(mech.name, rest)
    else:
        raise PermError(f"unknown mechanism {name!r}")
    if mech.domain_spec is not None:
        check_domain_spec(mech.domain_spec)
    return mech


def parse_record(text: str) -> Record:
    """Parse a whole "v=spf1 ..." record; PermError on any syntax error (4.6)."""
    record = Record()
    for term in text.split(" ")[1:]:
        if not term:
            continue   # runs of spaces separate terms too
        if any(not (0x21 <= ord(ch) <= 0x7E) for ch in term):
            raise PermError(f"invalid character in term {term!r}")
        m = _TERM.match(term)
        if not m:
            raise PermError(f"invalid term {term!r}")
        qualifier, name, rest = m.groups()
        if rest.startswith("="):
            if qualifier:
                raise PermError(f"qualifier on modifier {term!r}")
            _add_modifier(record, name.lower(), rest[1:])
        elif name.lower() in MECHANISMS:
            record.mechanisms.append(parse_mechanism(qualifier, name, rest, term))
        else:
            raise PermError(f"unknown mechanism {term!r}")
    return record


@lru_cache(maxsize=1024)
def _parsed(text: str) -> Record:
    """parse_record for evaluation: a busy MX sees the same few records again and
    again. Evaluation only reads a Record, so one parse serves them all."""
    return parse_record(text)


def _add_modifier(record: Record, name: str, value: str) -> None:
    if name in ("redirect", "exp"):
        if getattr(record, name) is not None:
            raise PermError(f"{name} given twice")
        check_domain_spec(value)
        setattr(record, name, value)
    else:
        check_macro_string(value)   # unknown modifiers are ignored, but must parse (6)


# -- evaluation ---------------------------------------------------------------------------------

@dataclass
class _State:
    resolver: Resolver
    ip: IP
    sender: str
    helo: str
    receiver: str
    lookups: int = 0
    voids: int = 0
    ptr_cache: list[str] | None = None

    def count_term(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_DNS_TERMS:
            raise PermError(f"more than {MAX_DNS_TERMS} DNS-querying terms")

    def count_void(self) -> None:
        self.voids += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise PermError(f"more than {MAX_VOID_LOOKUPS} void lookups")


def _split_sender(sender: str) -> tuple[str, str]:
    local, _, domain = sender.rpartition("@")
    return (local or "postmaster"), domain


def _ip_macro(ip: IP) -> str:
    if ip.version == 4:
        return str(ip)
    # Nibbles in upper case, as the openspf suite expects (v-macro-ip6); the
    # RFC's 7.4 example is lower case, and DNS does not care.
    return ".".join(ip.exploded.replace(":", "").upper())


async def _expand_letter(letter: str, st: _State, domain: str) -> str:
    local, sender_domain = _split_sender(st.sender)
    values = {
        "s": f"{local}@{sender_domain}", "l": local, "o": sender_domain, "d": domain,
        "i": _ip_macro(st.ip), "h": st.helo, "c": str(st.ip), "r": st.receiver or "unknown",
        "t": str(int(time.time())), "v": "in-addr" if st.ip.version == 4 else "ip6",
    }
    if letter == "p":
        return await _validated_name(st, domain, count=False) or "unknown"
    return values[letter]


def _transform(value: str, digits: str, reverse: str, delimiters: str) -> str:
    parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
    if reverse:
        parts.reverse()
    if digits:
        parts = parts[-int(digits):]
    return ".".join(parts)


async def expand(text: str, st: _State, domain: str, *, exp: bool = False) -> str:
    """Macro expansion (7.3-7.4)."""
    check_macro_string(text, exp=exp)
    out: list[str] = []
    pos = 0
    for m in _MACRO.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        letter, digits, reverse, delimiters, other = m.groups()
        if letter is None:
            out.append({"%": "%", "_": " ", "-": "%20"}[other])
            continue
        value = _transform(await _expand_letter(letter.lower(), st, domain),
                           digits, reverse, delimiters)
        if letter.isupper():
            value = urllib.parse.quote(value, safe=_ESCAPE_SAFE)
        out.append(value)
    out.append(text[pos:])
    return "".join(out)


async def target_name(spec: str | None, st: _State, domain: str) -> str:
    """A mechanism's target domain: expanded, trimmed to 253 octets (4.8, 7.3)."""
    if spec is None:
        return domain
    name = (await expand(spec, st, domain)).rstrip(".")
    while len(name) > MAX_DOMAIN_LEN and "." in name:
        name = name.split(".", 1)[1]
    return name


async def _addresses(st: _State, name: str, *, void_counts: bool = True) -> list[IP] | None:
    """Addresses of `name` in the client's family; None when the name is invalid."""
    try:
        recs = await st.resolver.addresses(name, st.ip.version == 6)
    except DnsNameError:
        return None
    except DnsTempError as exc:
        raise TempError(str(exc)) from exc
    if not recs and void_counts:
        st.count_void()
    return [ipaddress.ip_address(a) for a in recs]


def _in_net(ip: IP, addr: IP, mech: Mechanism) -> bool:
    bits = mech.cidr4 if ip.version == 4 else mech.cidr6
    return ip.version == addr.version and ip in ipaddress.ip_network(f"{addr}/{bits}",
                                                                     strict=False)


async def _validated_name(st: _State, target: str, *, count: bool = True) -> str | None:
    """5.5: a PTR name of the client, confirmed by its A/AAAA, under `target`."""
    names = await _ptr_names(st)
    if names is None:
        return None
    target = target.lower().rstrip(".")
    confirmed: list[str] = []
    for name in names[:MAX_PTR_NAMES]:
        try:
            addrs = await st.resolver.addresses(name, st.ip.version == 6)
        except (DnsTempError, DnsNameError):
            continue   # "that domain name is skipped and the search continues"
        if st.ip in [ipaddress.ip_address(a) for a in addrs]:
            confirmed.append(name)
    for name in confirmed:
        if name == target or name.endswith("." + target):
            return name
    return confirmed[0] if confirmed and not count else None


async def _ptr_names(st: _State) -> list[str] | None:
    if st.ptr_cache is None:
        try:
            st.ptr_cache = list(await st.resolver.ptr(str(st.ip)))
        except (DnsTempError, DnsNameError):
            return None   # 5.5: a DNS error in the PTR lookup → no match
    return st.ptr_cache


async def _match(mech: Mechanism, st: _State, domain: str) -> bool:
    """Whether one mechanism matches; raises TempError / PermError."""
    if mech.name == "all":
        return True
    if mech.name in ("ip4", "ip6"):
        return mech.network is not None and st.ip.version == mech.network.version \
            and st.ip in mech.network
    st.count_term()
    name = await target_name(mech.domain_spec, st, domain)
    if mech.name == "include":
        return await _match_include(name, st)
    if mech.name == "a":
        addrs = await _addresses(st, name)
        return any(_in_net(st.ip, a, mech) for a in addrs or [])
    if mech.name == "mx":
        return await _match_mx(mech, st, name)
    if mech.name == "ptr":
        names = await _ptr_names(st)
        if names is not None and not names:
            st.count_void()
        return await _validated_name(st, name) is not None
    return await _match_exists(st, name)


async def _match_include(name: str, st: _State) -> bool:
    inner = await _check(st, name, nested=True)
    if inner.result == "pass":
        return True
    if inner.result == "temperror":
        raise TempError(f"include:{name}: {inner.reason}")
    if inner.result in ("permerror", "none"):
        raise PermError(f"include:{name}: {inner.result} ({inner.reason})")
    return False


async def _match_mx(mech: Mechanism, st: _State, name: str) -> bool:
    try:
        mxs = await st.resolver.mx(name)
    except DnsNameError:
        return False
    except DnsTempError as exc:
        raise TempError(str(exc)) from exc
    if not mxs:
        st.count_void()
    hosts = [m.exchange for m in mxs if m.exchange]
    if len(hosts) > MAX_MX_ADDRESS_LOOKUPS:
        raise PermError(f"mx:{name} has more than {MAX_MX_ADDRESS_LOOKUPS} MX records")
    for host in hosts:
        addrs = await _addresses(st, host, void_counts=False)
        if any(_in_net(st.ip, a, mech) for a in addrs or []):
            return True
    return False


async def _match_exists(st: _State, name: str) -> bool:
    try:
        recs = await st.resolver.a(name)   # 5.7: always an A query, whatever the client
    except DnsNameError:
        return False
    except DnsTempError as exc:
        raise TempError(str(exc)) from exc
    if not recs:
        st.count_void()
    return bool(recs)


def valid_domain(domain: str) -> bool:
    """4.3: a syntactically valid, fully qualified domain (else result none)."""
    if not domain or domain.startswith("[") or len(domain.rstrip(".")) > MAX_DOMAIN_LEN:
        return False
    labels = domain.rstrip(".").split(".")
    return len(labels) >= 2 and all(0 < len(lbl) <= 63 for lbl in labels)


async def _fetch_record(st: _State, domain: str) -> str | None:
    """4.4-4.5: the one v=spf1 TXT record, None if there is none."""
    try:
        txts = await st.resolver.txt_bytes(domain)
    except DnsNameError:
        return None
    except DnsTempError as exc:
        raise TempError(f"SPF record lookup for {domain}: {exc}") from exc
    found = [t for t in txts if _VERSION.match(t.decode("latin-1"))]
    if len(found) > 1:
        raise PermError(f"{domain} has {len(found)} SPF records")
    if not found:
        return None
    try:
        return found[0].decode("ascii")
    except UnicodeDecodeError as exc:
        raise PermError(f"non-ASCII SPF record at {domain}") from exc


async def _check(st: _State, domain: str, *, nested: bool = False) -> SpfResult:
    """check_host() (4): evaluate the record of `domain` for the client."""
    try:
        text = await _fetch_record(st, domain)
        if text is None:
            return SpfResult("none", f"no SPF record at {domain}", domain)
        record = _parsed(text)
        return await _evaluate(record, st, domain)
    except TempError as exc:
        return SpfResult("temperror", str(exc), domain, lookups=st.lookups)
    except PermError as exc:
        return SpfResult("permerror", str(exc), domain, lookups=st.lookups)


async def _evaluate(record: Record, st: _State, domain: str) -> SpfResult:
    for mech in record.mechanisms:
        if await _match(mech, st, domain):
            reason = f"matched {mech.text} in {domain}"
            explanation = None
            if mech.qualifier == "fail":
                explanation = await _explanation(record, st, domain)
            return SpfResult(mech.qualifier, reason, domain, mechanism=mech.text,
                             explanation=explanation, lookups=st.lookups)
    if record.redirect is not None and not any(m.name == "all" for m in record.mechanisms):
        st.count_term()
        target = await target_name(record.redirect, st, domain)
        inner = await _check(st, target)
        if inner.result == "none":
            raise PermError(f"redirect={target}: no SPF record")
        return inner
    return SpfResult("neutral", f"no mechanism matched in {domain}", domain,
                     lookups=st.lookups)


async def _explanation(record: Record, st: _State, domain: str) -> str | None:
    """6.2: fetch and expand the exp= text; any problem → no explanation."""
    if record.exp is None:
        return None
    try:
        name = await target_name(record.exp, st, domain)
        txts = await st.resolver.txt_bytes(name)
        if len(txts) != 1:
            return None
        return await expand(txts[0].decode("ascii"), st, domain, exp=True)
    except (PermError, TempError, DnsTempError, DnsNameError, UnicodeDecodeError):
        return None


def parse_ip(ip: str) -> IP:
    """The client address; IPv4-mapped IPv6 addresses are treated as IPv4 (5)."""
    addr = ipaddress.ip_address(ip.strip("[]"))
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


async def check_host(resolver: Resolver, ip: str, domain: str, sender: str, *,
                     helo: str = "", receiver: str = "") -> SpfResult:
    """RFC 7208 check_host(<ip>, <domain>, <sender>)."""
    st = _State(resolver, parse_ip(ip), sender, helo, receiver)
    domain = domain.rstrip(".").lower()
    if not valid_domain(domain):
        return SpfResult("none", f"not a valid domain: {domain!r}", domain)
    return await _check(st, domain)


async def check_spf(resolver: Resolver, ip: str, mail_from: str, helo: str, *,
                    receiver: str = "") -> SpfResult:
    """Check the MAIL FROM identity, or the HELO identity for a null sender (2.4)."""
    mail_from = mail_from.strip("<>")
    if mail_from:
        local, _, domain = mail_from.rpartition("@")
        sender = f"{local or 'postmaster'}@{domain}"
        identity = "mailfrom"
    else:
        domain, sender, identity = helo, f"postmaster@{helo}", "helo"
    res = await check_host(resolver, ip, domain, sender, helo=helo, receiver=receiver)
    return SpfResult(res.result, res.reason, res.domain, identity, res.mechanism,
                     res.explanation, res.lookups)
