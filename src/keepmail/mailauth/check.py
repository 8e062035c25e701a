"""One entry point for the inbound authentication checks: SPF, DKIM, DMARC, ARC.

`check_message` runs SPF (RFC 7208, MAIL FROM or HELO for a null sender),
DKIM (RFC 6376), ARC (RFC 8617) and DMARC policy discovery (RFC 7489)
concurrently, then evaluates DMARC from the SPF and DKIM results, and builds
the Authentication-Results value (RFC 8601) with our authserv-id.

Every check is bounded by one overall deadline: a check still running when
it expires is cancelled and reported as temperror ("timed out"), so a stuck
DNS server cannot hang an SMTP session. Nothing here raises for bad input.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from keepmail.dnsx.resolver import Resolver
from keepmail.mailauth import arc, dkim_verify, dmarc
from keepmail.mailauth.arc import ArcResult
from keepmail.mailauth.authresults import MethodResult, header_value
from keepmail.mailauth.dkim_verify import DkimResult
from keepmail.mailauth.dmarc import DmarcResult
from keepmail.mailauth.spf import SpfResult, check_spf

DEFAULT_DEADLINE = 10.0   # seconds for all checks together
T = TypeVar("T")


@dataclass
class AuthReport:
    spf: SpfResult
    dkim: list[DkimResult]
    dmarc: DmarcResult
    arc: ArcResult
    header: str                        # Authentication-Results value (after the colon)
    elapsed: float = 0.0
    timed_out: list[str] = field(default_factory=list)

    @property
    def dkim_result(self) -> str:
        """One word for all signatures: pass if any passes, else the first result, else none."""
        if any(d.result == "pass" for d in self.dkim):
            return "pass"
        return self.dkim[0].result if self.dkim else "none"


async def _bounded(name: str, coro: Awaitable[T], deadline: float, fallback: T,
                   timed_out: list[str]) -> T:
    """Await `coro` until the absolute loop time `deadline`; `fallback` after it."""
    try:
        # timeout_at, not wait_for: wait_for wraps the check in a task of its own,
        # and gather has made one already.
        async with asyncio.timeout_at(deadline):
            return await coro
    except TimeoutError:
        timed_out.append(name)
        return fallback
    except Exception as exc:   # a bug in one check must not lose the others' verdicts
        timed_out.append(f"{name}: {exc.__class__.__name__}")
        return _error_like(fallback, f"internal error: {exc.__class__.__name__}: {exc}")


def _error_like(fallback: Any, reason: str) -> Any:
    if isinstance(fallback, SpfResult):
        return SpfResult("temperror", reason, fallback.domain, fallback.identity)
    if isinstance(fallback, ArcResult):
        return ArcResult("fail", reason)
    if isinstance(fallback, list):
        return [DkimResult("temperror", reason)]
    if isinstance(fallback, dmarc.Policy):
        return dmarc.Policy("", None, "", reason, DmarcResult("temperror", reason))
    return fallback


async def _known(result: SpfResult) -> SpfResult:
    return result


def _spf_identity(mail_from: str, helo: str) -> tuple[str, str]:
    addr = mail_from.strip("<>")
    return ("mailfrom", addr.rpartition("@")[2]) if addr else ("helo", helo)


async def check_message(raw: bytes, *, client_ip: str, helo: str, mail_from: str,
                        resolver: Resolver, authserv_id: str,
                        deadline: float = DEFAULT_DEADLINE, receiver: str = "",
                        rng: random.Random | None = None,
                        spf: SpfResult | None = None) -> AuthReport:
    """Run all checks for one message; never raises, never outlives `deadline` seconds.

    `spf`: the result already found for this client, MAIL FROM and HELO (the MX
    checks SPF at MAIL FROM), used instead of evaluating it again.
    """
    start = time.monotonic()
    until = asyncio.get_running_loop().time() + deadline
    identity, spf_domain = _spf_identity(mail_from, helo)
    late = f"timed out after {deadline:.1f}s"
    timed_out: list[str] = []
    spf_check = (_known(spf) if spf is not None
                 else check_spf(resolver, client_ip, mail_from, helo, receiver=receiver))
    spf_res, dkim_res, arc_res, policy = await asyncio.gather(
        _bounded("spf", spf_check, until, SpfResult("temperror", late, spf_domain, identity),
                 timed_out),
        _bounded("dkim", dkim_verify.verify(raw, resolver), until,
                 [DkimResult("temperror", late)], timed_out),
        _bounded("arc", arc.verify(raw, resolver), until, ArcResult("fail", late), timed_out),
        _bounded("dmarc", dmarc.lookup_policy(raw, resolver), until,
                 dmarc.Policy("", None, "", late, DmarcResult("temperror", late)), timed_out),
    )
    dmarc_res = dmarc.evaluate(policy, spf_res, dkim_res, rng=rng)
    header = header_value(authserv_id, method_results(spf_res, dkim_res, dmarc_res, arc_res,
                                                      client_ip))
    return AuthReport(spf_res, dkim_res, dmarc_res, arc_res, header,
                      time.monotonic() - start, timed_out)


def method_results(spf: SpfResult, dkim: list[DkimResult], dm: DmarcResult, ar: ArcResult,
                   client_ip: str) -> list[MethodResult]:
    """The RFC 8601 clauses (2.7.1 dkim, 2.7.2 spf, RFC 7489 11.2 dmarc, RFC 8617 arc)."""
    prop = "smtp.mailfrom" if spf.identity == "mailfrom" else "smtp.helo"
    out = [MethodResult("spf", spf.result, None, [(prop, spf.domain)],
                        comment=_spf_comment(spf, client_ip))]
    if not dkim:
        out.append(MethodResult("dkim", "none"))
    for d in dkim:
        props = [("header.d", d.domain), ("header.s", d.selector), ("header.a", d.algorithm),
                 ("header.b", d.header_b)]
        out.append(MethodResult("dkim", d.result, None if d.result == "pass" else d.reason,
                                props))
    out.append(MethodResult("dmarc", dm.result, None if dm.result == "pass" else dm.reason,
                            [("header.from", dm.from_domain)],
                            comment=f"p={dm.requested_policy} dis={dm.policy}"
                            if dm.record else None))
    out.append(MethodResult("arc", ar.cv, None if ar.cv != "fail" else ar.reason,
                            [("smtp.remote-ip", client_ip)] if ar.cv != "none" else []))
    return out


def _spf_comment(spf: SpfResult, client_ip: str) -> str:
    return f"{spf.domain}: {client_ip} {spf.reason}"[:200]
