"""The DNS assistant's brain: the records a domain needs, and what is really published.

`expected_records` lists every record to publish (the base list from
keepmail.setup.dns_records plus MTA-STS, TLS-RPT, autoconfig/autodiscover
and SRV records, RFC 8461, RFC 8460, RFC 6186). `check_domain` asks the
configured resolver what is published and returns one Finding per record
with a plain-language diagnosis and the exact fix.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from ..dnsx.resolver import DnsError, Resolver
from ..setup import dns_records
from .wellknown import mta_sts_policy

OK, WARN, ERROR, INFO, UNKNOWN = "ok", "warn", "error", "info", "unknown"


@dataclass(frozen=True)
class Expected:
    name: str
    rtype: str
    value: str
    purpose: str
    required: bool = True


@dataclass(frozen=True)
class Finding:
    record: str
    status: str
    message: str
    found: tuple[str, ...] = ()
    fix: str = ""


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def line(name: str, rtype: str, value: str) -> str:
    """A record as it would appear in a zone file."""
    return f"{name} IN {rtype} {value}"


PURPOSES = {"MX": "Where other servers deliver mail for the domain.",
            "DKIM": "The public key receivers use to verify this server's signatures.",
            "SPF": "Which servers may send mail from the domain.",
            "DMARC": "What receivers do with mail failing SPF and DKIM, and where to report."}


def expected_records(kapp: Any, domain: str, settings: Any) -> list[Expected]:
    cfg, host = kapp.config, kapp.config.server.hostname
    out: list[Expected] = []
    for name, rtype, value in dns_records(cfg, kapp.store, domain):
        kind = "DKIM" if "._domainkey." in name else "DMARC" if name.startswith("_dmarc.") \
            else "SPF" if rtype == "TXT" else rtype
        value = value if value.startswith('"') or rtype != "TXT" else f'"{value}"'
        out.append(Expected(name if name.endswith(".") else name + ".", rtype, value,
                            PURPOSES.get(kind, "")))
    _, policy_id = mta_sts_policy(cfg, settings)
    out += [
        Expected(f"_mta-sts.{domain}.", "TXT", f'"v=STSv1; id={policy_id}"',
                 "Tells senders an MTA-STS policy exists (TLS required to reach you).", False),
        Expected(f"mta-sts.{domain}.", "CNAME", f"{host}.",
                 "Where senders fetch the MTA-STS policy (HTTPS on port 443).", False),
        Expected(f"_smtp._tls.{domain}.", "TXT",
                 f'"v=TLSRPTv1; rua=mailto:postmaster@{domain}"',
                 "Where senders report TLS problems reaching you.", False),
        Expected(f"autoconfig.{domain}.", "CNAME", f"{host}.",
                 "Thunderbird and others set themselves up from the address alone.", False),
        Expected(f"autodiscover.{domain}.", "CNAME", f"{host}.",
                 "Outlook sets itself up from the address alone.", False),
        Expected(f"_submissions._tcp.{domain}.", "SRV",
                 f"0 1 {cfg.ports.submissions or 465} {host}.",
                 "Mail programs find the submission server (RFC 6186).", False),
        Expected(f"_imaps._tcp.{domain}.", "SRV", f"0 1 {cfg.ports.imaps or 993} {host}.",
                 "Mail programs find the IMAP server (RFC 6186).", False),
    ]
    return out


def resolver_for(cfg: Any) -> Resolver:
    # No cache: after fixing a record, the next check must see the change.
    return Resolver(cfg.dns.nameservers or None, timeout=min(2.0, cfg.dns.timeout),
                    lifetime=cfg.dns.timeout, cache=False)


async def server_ips(kapp: Any, res: Resolver) -> list[str]:
    """The addresses this server sends from: bind_address, the listen addresses, or the
    host name's addresses when keepmail listens on every interface."""
    bind = getattr(getattr(kapp.config, "outbound", None), "bind_address", "")
    if bind:
        return [bind]
    ips = [ip for ip in kapp.config.server.listen if ip not in ("0.0.0.0", "::")]
    if ips:
        return ips
    host = kapp.config.server.hostname
    try:
        return [*await res.a(host), *await res.aaaa(host)]
    except DnsError:
        return []


async def check_domain(kapp: Any, domain: str, settings: Any) -> list[Finding]:
    res = resolver_for(kapp.config)
    host = kapp.config.server.hostname.lower().rstrip(".")
    ips = await server_ips(kapp, res)
    expected = expected_records(kapp, domain, settings)
    dkim = [e for e in expected if "._domainkey." in e.name]
    mta_sts = next(e for e in expected if e.name.startswith("_mta-sts."))
    tlsrpt = next(e for e in expected if e.name.startswith("_smtp._tls."))
    checks: list[Awaitable[Finding]] = [
        check_mx(res, domain, host), check_host(res, host, ips), check_spf(res, domain, ips),
        *[check_dkim(res, e) for e in dkim], check_dmarc(res, domain),
        check_mta_sts(res, domain, host, mta_sts),
        check_tlsrpt(res, domain, tlsrpt),
        check_alias(res, f"autoconfig.{domain}", host, "Autoconfig (Thunderbird)"),
        check_alias(res, f"autodiscover.{domain}", host, "Autodiscover (Outlook)"),
        *[check_ptr(res, ip, host) for ip in ips]]
    return list(await asyncio.gather(*(_guarded(c) for c in checks)))


async def _guarded(check: Awaitable[Finding]) -> Finding:
    try:
        return await check
    except DnsError as exc:
        return Finding("DNS", UNKNOWN, f"Could not ask DNS ({exc}). Check that [dns] "
                       "nameservers points at a working resolver, then check again.")


async def check_mx(res: Resolver, domain: str, host: str) -> Finding:
    records = await res.mx(domain)
    fix = line(f"{domain}.", "MX", f"10 {host}.")
    found = tuple(f"{m.preference} {m.exchange}." for m in records)
    if records.nxdomain:
        return Finding("MX", ERROR, f"The domain {domain} does not exist in DNS yet. Register "
                       "it (or create its zone) at your DNS provider, then add:", found, fix)
    if not records:
        return Finding("MX", ERROR, f"No MX record: other servers cannot find where to deliver "
                       f"mail for {domain}. Add:", found, fix)
    hosts = [m.exchange for m in records]
    if host not in hosts:
        return Finding("MX", ERROR, f"The MX record points to {', '.join(hosts)}, not to this "
                       f"server ({host}): mail for {domain} goes there. Replace it with:",
                       found, fix)
    best = min(m.preference for m in records)
    ours = min(m.preference for m in records if m.exchange == host)
    if ours > best:
        return Finding("MX", WARN, "Another MX host has a better (lower) preference and "
                       "receives the mail first; make this server the lowest number.", found, fix)
    return Finding("MX", OK, f"Mail for {domain} is delivered to {host}.", found)


async def check_host(res: Resolver, host: str, ips: list[str]) -> Finding:
    addresses = [*await res.a(host), *await res.aaaa(host)]
    label = f"Address of {host}"
    if not addresses:
        value = ips[0] if ips else "YOUR.PUBLIC.IP"
        rtype = "AAAA" if ":" in value else "A"
        return Finding(label, ERROR, f"{host} has no address: nobody can connect to it. Add:",
                       (), line(f"{host}.", rtype, value))
    if ips and not set(ips) & set(addresses):
        return Finding(label, WARN, f"{host} points to {', '.join(addresses)}, but this server "
                       f"is configured on {', '.join(ips)}. Check the address is this "
                       "machine's (or its NAT's) public address.", tuple(addresses))
    return Finding(label, OK, f"{host} resolves to {', '.join(addresses)}.", tuple(addresses))


async def check_spf(res: Resolver, domain: str, ips: list[str]) -> Finding:
    texts = await res.txt(domain)
    spf = [t for t in texts if t.lower().startswith("v=spf1")]
    found = tuple(spf)
    suggestion = line(f"{domain}.", "TXT", '"v=spf1 mx -all"')
    if not spf:
        return Finding("SPF", ERROR, "No SPF record: receivers cannot tell which servers may "
                       f"send mail from {domain}, and more of it lands in spam. Add:",
                       found, suggestion)
    if len(spf) > 1:
        return Finding("SPF", ERROR, f"{len(spf)} SPF records: receivers treat that as an "
                       "error (RFC 7208 4.5). Merge them into one.", found, suggestion)
    terms = spf[0].lower().split()
    if "+all" in terms or "all" in terms:
        return Finding("SPF", ERROR, "The SPF record ends in +all: it lets every server on the "
                       "Internet send as you. End it with -all instead.", found, suggestion)
    for ip in ips:
        result = await _spf_result(res, ip, domain)
        if result not in ("pass", None):
            mech = f"ip6:{ip}" if ":" in ip else f"ip4:{ip}"
            fixed = _with_mechanism(spf[0], mech)
            return Finding("SPF", ERROR, f"The SPF record does not include this server's IP "
                           f"{ip} (the check gives {result}): mail sent from here may be "
                           f"refused or junked. Add {mech} (or mx) before the all:",
                           found, line(f"{domain}.", "TXT", f'"{fixed}"'))
    if not ips:
        return Finding("SPF", INFO, "An SPF record is published. This server's public IP is "
                       "unknown here (set [outbound] bind_address) so it was not checked.",
                       found)
    if not any(t.endswith("all") for t in terms):
        return Finding("SPF", WARN, "The SPF record has no final -all or ~all, so it does not "
                       "say what to do with other servers. Add -all at the end.", found)
    return Finding("SPF", OK, f"SPF authorizes this server ({', '.join(ips)}).", found)


async def _spf_result(res: Resolver, ip: str, domain: str) -> str | None:
    try:
        from ..mailauth.spf import check_host as spf_check_host
    except ImportError:   # no SPF evaluator in this build: nothing to say about the IP
        return None
    result = await spf_check_host(res, ip, domain, f"postmaster@{domain}")
    return result.result


def _with_mechanism(record: str, mechanism: str) -> str:
    terms = record.split()
    position = next((i for i, t in enumerate(terms) if t.lower().endswith("all")
                     or t.lower().startswith("redirect=")), len(terms))
    return " ".join([*terms[:position], mechanism, *terms[position:]])


def _tags(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            out[key.strip().lower()] = "".join(value.split())
    return out


async def check_dkim(res: Resolver, expected: Expected) -> Finding:
    name = expected.name.rstrip(".")
    label = f"DKIM {name.split('.')[0]}"
    texts = await res.txt(name)
    fix = line(expected.name, "TXT", expected.value)
    if not texts:
        return Finding(label, ERROR, "This DKIM key is not published: receivers cannot check "
                       "the signatures on your mail. Add:", (), fix)
    want = _tags(unquote(expected.value)).get("p", "")
    if not any(_tags(t).get("p", "") == want for t in texts):
        return Finding(label, ERROR, "The published DKIM key differs from this server's key: "
                       "signatures fail. Replace the record with:", tuple(texts), fix)
    return Finding(label, OK, "The DKIM key matches.", tuple(texts))


async def check_dmarc(res: Resolver, domain: str) -> Finding:
    texts = [t for t in await res.txt(f"_dmarc.{domain}") if t.lower().startswith("v=dmarc1")]
    fix = line(f"_dmarc.{domain}.", "TXT",
               f'"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"')
    if not texts:
        return Finding("DMARC", WARN, "No DMARC record: anyone can forge your domain and "
                       "receivers will not know to refuse it. Add:", (), fix)
    if len(texts) > 1:
        return Finding("DMARC", ERROR, "More than one DMARC record: receivers ignore them "
                       "all. Keep one:", tuple(texts), fix)
    policy = _tags(texts[0]).get("p", "")
    if policy not in ("none", "quarantine", "reject"):
        return Finding("DMARC", ERROR, "The DMARC record has no valid p= policy.",
                       tuple(texts), fix)
    if policy == "none":
        return Finding("DMARC", WARN, "DMARC only monitors (p=none): forged mail is still "
                       "delivered. Once the reports look right, change it to:",
                       tuple(texts), fix)
    return Finding("DMARC", OK, f"DMARC policy is {policy}.", tuple(texts))


async def check_mta_sts(res: Resolver, domain: str, host: str, expected: Expected) -> Finding:
    texts = [t for t in await res.txt(f"_mta-sts.{domain}") if t.startswith("v=STSv1")]
    fix = line(expected.name, "TXT", expected.value)
    if not texts:
        return Finding("MTA-STS", INFO, "Optional: MTA-STS makes senders insist on TLS when "
                       "they deliver to you. Add this record and the mta-sts CNAME, and make "
                       f"https://mta-sts.{domain}/.well-known/mta-sts.txt reach keepmail's "
                       "web port (443 must forward to it):", (), fix)
    want = _tags(unquote(expected.value)).get("id")
    if _tags(texts[0]).get("id") != want:
        return Finding("MTA-STS", WARN, "The policy id differs from the current policy's: "
                       "senders keep an old copy until the id changes. Update it to:",
                       tuple(texts), fix)
    if not [*await res.a(f"mta-sts.{domain}"), *await res.aaaa(f"mta-sts.{domain}")]:
        return Finding("MTA-STS", WARN, f"mta-sts.{domain} has no address: senders cannot "
                       "fetch the policy. Add:", tuple(texts),
                       line(f"mta-sts.{domain}.", "CNAME", f"{host}."))
    return Finding("MTA-STS", OK, "MTA-STS is published.", tuple(texts))


async def check_tlsrpt(res: Resolver, domain: str, expected: Expected) -> Finding:
    texts = [t for t in await res.txt(f"_smtp._tls.{domain}") if t.startswith("v=TLSRPTv1")]
    if not texts:
        return Finding("TLS-RPT", INFO, "Optional: ask senders to report TLS failures to you. "
                       "Add:", (), line(expected.name, "TXT", expected.value))
    return Finding("TLS-RPT", OK, "TLS reports are requested.", tuple(texts))


async def check_alias(res: Resolver, name: str, host: str, label: str) -> Finding:
    records = await res.lookup(name, "CNAME")
    targets = tuple(r.target.to_text(omit_final_dot=True).lower() for r in records)
    fix = line(f"{name}.", "CNAME", f"{host}.")
    if host in targets:
        return Finding(label, OK, f"{name} points to this server.", targets)
    addresses = [*await res.a(name), *await res.aaaa(name)]
    if targets or addresses:
        return Finding(label, WARN, f"{name} exists but does not point to {host}; mail "
                       "programs may be set up wrongly. Make it:", targets or tuple(addresses),
                       fix)
    return Finding(label, INFO, "Optional: lets mail programs set themselves up from the "
                   "address alone. Add:", (), fix)


async def check_ptr(res: Resolver, ip: str, host: str) -> Finding:
    label = f"Reverse DNS of {ip}"
    if ipaddress.ip_address(ip).is_loopback:
        return Finding(label, INFO, "A loopback address has no public reverse DNS (fine for "
                       "a test machine).")
    names = await res.ptr(ip)
    if host in names:
        return Finding(label, OK, f"{ip} points back to {host}.", tuple(names))
    return Finding(label, WARN, f"{ip} does not point back to {host}: many receivers refuse "
                   "mail from servers without matching reverse DNS. Ask your hosting provider "
                   f"to set the PTR record of {ip} to {host}.", tuple(names))
