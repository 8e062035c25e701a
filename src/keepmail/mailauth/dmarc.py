"""DMARC evaluation, RFC 7489.

Implemented:
- 3.2 organizational domain through the Public Suffix List (publicsuffixlist);
- 6.6.1 the RFC5322.From domain (exactly one From field with one address,
  else no DMARC evaluation and a reason);
- 6.6.3 policy discovery: _dmarc.<From domain>, then _dmarc.<org domain>;
  records not starting with "v=DMARC1" are ignored, several records mean
  no policy; DNS failure is temperror;
- 6.3 record tags v p sp pct adkim aspf (fo rf ri rua ruf kept as text);
  p missing or invalid with a rua present → p=none (6.6.3 step 6); any
  other malformed record → treated as no record, with the reason kept;
- 3.1.1/3.1.2 relaxed and strict alignment of the SPF and DKIM
  identifiers; DMARC passes when either aligns with a pass;
- 6.6.4 policy to apply: sp for subdomains when discovered at the org
  domain, pct sampling with the next less strict policy for unsampled mail
  (reject → quarantine → none). Randomness is injectable for tests.

Reports (rua/ruf) are not sent: keepmail does not contact third parties by
default (DESIGN.md principle 7).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from keepmail.dnsx.resolver import DnsNameError, DnsTempError, Resolver
from keepmail.mailauth.dkim_verify import DkimResult, field_name, split_message
from keepmail.mailauth.spf import SpfResult

POLICIES = ("none", "quarantine", "reject")
_VERSION = re.compile(r"^v\s*=\s*DMARC1\s*(;|$)")


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=4096)  # three calls a message, for a few thousand domains at most
def organizational_domain(domain: str) -> str:
    """3.2: the registrable domain (public suffix + one label); the name itself if none."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


@dataclass(frozen=True)
class DmarcRecord:
    p: str
    sp: str
    pct: int
    adkim: str
    aspf: str
    tags: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class DmarcResult:
    result: str                     # pass, fail, none, temperror, permerror
    reason: str
    from_domain: str = ""
    policy_domain: str = ""         # where the record was found
    record: DmarcRecord | None = None
    policy: str = "none"            # the policy to apply: none / quarantine / reject
    requested_policy: str = "none"  # p= or sp= before pct sampling
    spf_aligned: bool = False
    dkim_aligned: bool = False
    sampled: bool = True


class DmarcRecordError(ValueError):
    """The record cannot be used (it is treated as absent)."""


def parse_record(text: str) -> DmarcRecord:
    """A DMARC record (6.3, 6.4); DmarcRecordError when it cannot be used."""
    if not _VERSION.match(text):
        raise DmarcRecordError("does not start with v=DMARC1")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not part.strip():
            continue
        if not eq:
            raise DmarcRecordError(f"bad tag {part.strip()[:30]!r}")
        tags.setdefault(name.strip().lower(), value.strip())
    warnings: list[str] = []
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        if "rua" not in tags:
            raise DmarcRecordError(f"p={tags.get('p')!r} missing or invalid")
        warnings.append("p missing or invalid, rua present: p=none")
        p = "none"
    sp = tags.get("sp", p).lower()
    if sp not in POLICIES:
        warnings.append(f"invalid sp={sp}: using p")
        sp = p
    return DmarcRecord(p, sp, _pct(tags.get("pct"), warnings), _align(tags, "adkim", warnings),
                       _align(tags, "aspf", warnings), tags, tuple(warnings))


def _pct(value: str | None, warnings: list[str]) -> int:
    if value is None:
        return 100
    if re.fullmatch(r"\d{1,3}", value) and int(value) <= 100:
        return int(value)
    warnings.append(f"invalid pct={value}: using 100")
    return 100


def _align(tags: dict[str, str], name: str, warnings: list[str]) -> str:
    mode = tags.get(name, "r").lower()
    if mode not in ("r", "s"):
        warnings.append(f"invalid {name}={mode}: using r")
        return "r"
    return mode


def from_domains(raw: bytes) -> list[str]:
    """Domains of the RFC5322.From addresses (all From fields)."""
    fields, _ = split_message(raw)
    values = []
    for f in fields:
        if field_name(f) == "from":
            text = f.split(b":", 1)[1].decode("utf-8", "replace")
            if "=?" in text:  # RFC 2047 encoded words (a display name, mostly)
                try:
                    text = str(make_header(decode_header(text)))
                except (ValueError, LookupError):
                    pass
            values.append(text.replace("\r\n", " ").replace("\n", " "))
    return [addr.rpartition("@")[2].lower().rstrip(".")
            for _, addr in getaddresses(values) if addr]


def aligned(a: str, b: str, mode: str) -> bool:
    """3.1: strict = same name; relaxed = same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if mode == "s" else organizational_domain(a) == organizational_domain(b)


async def discover(resolver: Resolver, from_domain: str) -> tuple[DmarcRecord | None, str, str]:
    """6.6.3: (record, where found, reason); DnsTempError propagates."""
    org = organizational_domain(from_domain)
    reasons = []
    for domain in dict.fromkeys([from_domain, org]):
        record, why = await _fetch(resolver, domain)
        if record is not None:
            return record, domain, why
        reasons.append(why)
    return None, "", "; ".join(reasons)


async def _fetch(resolver: Resolver, domain: str) -> tuple[DmarcRecord | None, str]:
    try:
        texts = await resolver.txt(f"_dmarc.{domain}")
    except DnsNameError:
        return None, f"invalid domain {domain}"
    candidates = [t for t in texts if t.startswith("v=DMARC1")]
    if not candidates:
        return None, f"no DMARC record at _dmarc.{domain}"
    if len(candidates) > 1:
        return None, f"{len(candidates)} DMARC records at _dmarc.{domain}"
    try:
        record = parse_record(candidates[0])
    except DmarcRecordError as exc:
        return None, f"malformed DMARC record at _dmarc.{domain}: {exc}"
    why = f"record at _dmarc.{domain}"
    return record, why + ("; " + "; ".join(record.warnings) if record.warnings else "")


def _downgrade(policy: str) -> str:
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


@dataclass(frozen=True)
class Policy:
    """What policy discovery found for a message (before SPF/DKIM are known)."""

    from_domain: str
    record: DmarcRecord | None
    where: str
    why: str
    early: DmarcResult | None = None   # a final result (none / temperror) already


async def lookup_policy(raw: bytes, resolver: Resolver) -> Policy:
    """6.6.1 + 6.6.3: the From domain and its DMARC record."""
    domains = set(from_domains(raw))
    if len(domains) != 1:
        why = "no From domain" if not domains else "several From domains"
        return Policy("", None, "", why, DmarcResult("none", why + ": DMARC not applied"))
    from_domain = domains.pop()
    try:
        record, where, why = await discover(resolver, from_domain)
    except DnsTempError as exc:
        return Policy(from_domain, None, "", str(exc),
                      DmarcResult("temperror", f"policy lookup: {exc}", from_domain))
    if record is None:
        return Policy(from_domain, None, "", why, DmarcResult("none", why, from_domain))
    return Policy(from_domain, record, where, why)


def evaluate(policy: Policy, spf: SpfResult | None, dkim: Sequence[DkimResult], *,
             rng: random.Random | None = None) -> DmarcResult:
    """3.1 alignment and 6.6.4 policy selection for a discovered policy."""
    if policy.early is not None or policy.record is None:
        return policy.early or DmarcResult("none", policy.why, policy.from_domain)
    record, from_domain, where, why = policy.record, policy.from_domain, policy.where, policy.why
    spf_ok = spf is not None and spf.result == "pass" and \
        aligned(spf.domain, from_domain, record.aspf)
    dkim_ok = any(d.result == "pass" and aligned(d.domain, from_domain, record.adkim)
                  for d in dkim)
    common = {"from_domain": from_domain, "policy_domain": where, "record": record,
              "spf_aligned": spf_ok, "dkim_aligned": dkim_ok}
    if spf_ok or dkim_ok:
        how = " and ".join(n for n, ok in (("SPF", spf_ok), ("DKIM", dkim_ok)) if ok)
        return DmarcResult("pass", f"{how} aligned ({why})", requested_policy=record.p,
                           **common)
    requested = record.sp if where != from_domain else record.p
    sampled = record.pct >= 100 or (rng or random).randrange(100) < record.pct
    applied = requested if sampled else _downgrade(requested)
    reason = f"no aligned SPF or DKIM pass ({why}); policy {requested}"
    if not sampled:
        reason += f", not sampled at pct={record.pct}: {applied}"
    return DmarcResult("fail", reason, policy=applied, requested_policy=requested,
                       sampled=sampled, **common)


async def check_dmarc(raw: bytes, spf: SpfResult | None, dkim: Sequence[DkimResult],
                      resolver: Resolver, *, rng: random.Random | None = None) -> DmarcResult:
    """Evaluate DMARC for a message given its SPF and DKIM results."""
    return evaluate(await lookup_policy(raw, resolver), spf, dkim, rng=rng)
