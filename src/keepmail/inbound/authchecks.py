"""Sender authentication and reputation lists as verdict rules.

At MAIL FROM: SPF (RFC 7208), forward-confirmed reverse DNS, DNS block and
allow lists (only zones the admin configured), and our own domains used as
sender from outside without SPF authorization (refused: nobody outside may
speak for us). At DATA: DKIM, DMARC and ARC with an Authentication-Results
header (RFC 8601), after removing any such header that claims our authserv-id
(RFC 8601 section 5). The points are deliberately modest: authentication says
who sent a message, not whether it is wanted; DMARC p=reject is the one
authentication result that refuses mail outright, because the domain owner
asked for it.
"""

from __future__ import annotations

from collections.abc import Callable

from ..dnsx import dnsbl, fcrdns
from ..dnsx.resolver import Resolver
from ..mailauth import arc, authresults
from ..mailauth.check import check_message
from ..mailauth.spf import check_spf
from ..smtp.handler import Envelope, Session
from .mx import CheckContext
from .verdict import Action, Rule

SPF_POINTS = {"pass": -0.5, "fail": 3.0, "softfail": 1.0, "neutral": 0.0, "none": 0.5,
              "permerror": 1.0, "temperror": 0.0}


class AuthChecks:
    def __init__(self, resolver: Resolver, *, authserv_id: str,
                 is_local_domain: Callable[[str], bool], block_lists: list[str] | None = None,
                 allow_lists: list[str] | None = None, deadline: float = 10.0) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        self.is_local_domain = is_local_domain
        self.lists = ([dnsbl.DnsList(z, "block") for z in block_lists or []] +
                      [dnsbl.DnsList(z, "allow") for z in allow_lists or []])
        self.deadline = deadline

    # -- MAIL FROM -----------------------------------------------------------------
    async def envelope(self, session: Session, envelope: Envelope) -> list[Rule]:
        rules = await self._connection_rules(session)
        sender = envelope.sender.address
        spf = await check_spf(self.resolver, session.peer_ip, sender, session.helo)
        envelope.notes["spf"] = spf
        session.record("spf", result=spf.result, domain=spf.domain, reason=spf.reason)
        rules.append(Rule(f"spf-{spf.result}", SPF_POINTS.get(spf.result, 0.0),
                          f"SPF {spf.result} for {spf.domain}: {spf.reason}"))
        domain = envelope.sender.domain.lower()
        if sender and self.is_local_domain(domain) and spf.result != "pass":
            rules.append(Rule("own-domain-forged", 0.0, f"{domain} is our domain, and this "
                              "server did not authorize your address to send for it",
                              force=Action.REJECT))
        return rules

    async def _connection_rules(self, session: Session) -> list[Rule]:
        """Once per connection: reverse DNS and DNS lists (cached in the session)."""
        cached = session.notes.get("conn_rules")
        if cached is not None:
            return list(cached)
        rules: list[Rule] = []
        rdns = await fcrdns.check(self.resolver, session.peer_ip)
        session.record("fcrdns", result=rdns.result, name=rdns.name, reason=rdns.reason)
        if rdns.result == "fail":
            rules.append(Rule("no-fcrdns", 1.5, f"no forward-confirmed reverse DNS for "
                              f"{session.peer_ip}: {rdns.reason}"))
        for res in await dnsbl.check_lists(self.resolver, self.lists, session.peer_ip):
            session.record("dnslist", zone=res.zone, listed=res.listed, codes=res.codes,
                           error=res.error or None)
            if res.listed and res.kind == "block":
                rules.append(Rule(f"dnsbl:{res.zone}", 10.0, f"{session.peer_ip} is listed in "
                                  f"{res.zone} {res.reason}".strip()))
            elif res.listed:
                rules.append(Rule(f"dnswl:{res.zone}", -3.0,
                                  f"{session.peer_ip} is on allow list {res.zone}"))
        session.notes["conn_rules"] = rules
        return list(rules)

    # -- DATA ------------------------------------------------------------------------
    async def message(self, ctx: CheckContext) -> None:
        s, env = ctx.session, ctx.envelope
        ctx.message = authresults.remove_ours(ctx.message, self.authserv_id)
        report = await check_message(ctx.message, client_ip=s.peer_ip, helo=s.helo,
                                     mail_from=env.sender.address, resolver=self.resolver,
                                     authserv_id=self.authserv_id, deadline=self.deadline,
                                     spf=env.notes.get("spf"))
        ctx.headers.append(f"Authentication-Results: {report.header}\r\n".encode())
        ctx.auth_results = report.header
        dm = report.dmarc
        ctx.auth.update(spf=report.spf.result, dkim=report.dkim_result, dmarc=dm.result,
                        arc=report.arc.cv)
        s.record("authentication", spf=report.spf.result, dkim=report.dkim_result,
                 dmarc=dm.result, dmarc_policy=dm.policy, arc=report.arc.cv,
                 from_domain=dm.from_domain, timed_out=report.timed_out or None)
        ctx.verdict.add(*self._message_rules(report.dkim_result, dm, ctx))

    def _message_rules(self, dkim: str, dm: object, ctx: CheckContext) -> list[Rule]:
        rules: list[Rule] = []
        if dkim == "pass":
            rules.append(Rule("dkim-pass", -0.5, "a DKIM signature verified"))
        elif dkim in ("fail", "permerror"):
            rules.append(Rule(f"dkim-{dkim}", 1.0, "DKIM signature did not verify"))
        result, policy = getattr(dm, "result", "none"), getattr(dm, "policy", "none")
        from_domain = getattr(dm, "from_domain", "")
        if result == "pass":
            rules.append(Rule("dmarc-pass", -1.0, f"DMARC pass for {from_domain}"))
        elif result == "fail":
            rules += self._dmarc_fail(policy, from_domain)
        if (from_domain and self.is_local_domain(from_domain) and result != "pass"
                and ctx.session.account is None):
            rules.append(Rule("own-domain-from-forged", 0.0, f"From: claims our domain "
                              f"{from_domain} but is not authenticated",
                              force=Action.REJECT))
        return rules

    async def arc_seal(self, raw: bytes, domain: str, ctx: CheckContext,
                       keys: Callable[[str], list[arc.SealKey]]) -> bytes:
        """ARC headers sealing raw for `domain`, or b"" (no key, malformed chain)."""
        usable = [k for k in keys(domain) if k.algorithm == "rsa-sha256"]
        if not usable:
            return b""
        results = ctx.auth_results or f"{self.authserv_id}; none"
        if results.startswith(self.authserv_id):
            results = results[len(self.authserv_id):].lstrip("; ") or "none"
        try:
            return await arc.seal(raw, usable[0], self.resolver, authserv_id=self.authserv_id,
                                  auth_results=results)
        except Exception as exc:  # a forward without ARC beats a lost message
            ctx.session.record("arc-seal-failed", error=repr(exc))
            return b""

    @staticmethod
    def _dmarc_fail(policy: str, domain: str) -> list[Rule]:
        why = f"DMARC fail for {domain} (policy {policy})"
        if policy == "reject":
            return [Rule("dmarc-reject", 0.0, why, force=Action.REJECT)]
        if policy == "quarantine":
            return [Rule("dmarc-quarantine", 6.0, why)]
        return [Rule("dmarc-fail", 1.5, why)]
