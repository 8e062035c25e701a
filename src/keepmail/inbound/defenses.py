"""Cheap inbound defenses that run before content is looked at.

Connection rate limits per IP, HELO sanity, greylisting of suspicious first
contacts, and the interface content scorers (the spam classifier) implement.
Each produces named Rules with points and a reason (DESIGN.md, principle 4);
MxHandler combines them.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ..store import Store
from ..store import greylist as greylist_store
from .verdict import Action, Rule

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                       r"[A-Za-z0-9-]{2,63}\.?$")


class RateLimiter:
    """Sliding-window counters per key (an IP), kept in memory."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float | None = None) -> bool:
        """Count one event; False when the key is over its limit."""
        if self.limit <= 0:
            return True
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] > self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self._hits) > 100_000:  # bound memory under a wide scan
            self._hits = {k: v for k, v in self._hits.items() if v and now - v[-1] < self.window}
        return True


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) a client belongs to: senders rotate within these."""
    addr = ipaddress.ip_address(ip)
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def helo_rules(name: str, peer_ip: str, our_names: set[str], our_ips: set[str]) -> list[Rule]:
    """Points for an implausible EHLO/HELO name (RFC 5321 4.1.4 says: don't refuse on it)."""
    lowered = name.lower().rstrip(".")
    literal = lowered.strip("[]").removeprefix("ipv6:") if lowered.startswith("[") else ""
    if literal == peer_ip:
        return []  # honest: the client names its own address (also us, when local)
    if lowered in our_names or literal in our_ips:
        return [Rule("helo-is-us", 8.0, f"client greeted as {name}, which is this server")]
    if literal:
        if literal != peer_ip:
            return [Rule("helo-literal-mismatch", 2.0,
                         f"address literal {name} is not the client's address {peer_ip}")]
        return []
    if "." not in lowered and _LABEL.match(lowered):
        return [Rule("helo-not-fqdn", 1.0, f"EHLO name {name[:60]!r} is not fully qualified")]
    if not _HOSTNAME.match(name):
        return [Rule("helo-malformed", 2.5, f"EHLO name {name[:60]!r} is not a hostname")]
    return []


@dataclass(frozen=True)
class GreylistPolicy:
    enabled: bool = True
    min_score: float = 2.0     # only suspicious first contacts are delayed
    delay: float = 300.0
    window: float = 86400.0
    remember: float = 35 * 86400.0


class Greylister:
    def __init__(self, store: Store, policy: GreylistPolicy) -> None:
        self.store = store
        self.policy = policy

    async def check(self, peer_ip: str, sender: str, rcpt: str, score: float) -> Rule | None:
        """A TEMPFAIL rule when this attempt must come back later, else None."""
        p = self.policy
        if not p.enabled or score < p.min_score:
            return None
        network = network_of(peer_ip)
        passed, wait = await self.store.write(lambda c: greylist_store.check(
            c, network, sender.lower(), rcpt.lower(), delay=p.delay, window=p.window,
            remember=p.remember))
        if passed:
            return None
        return Rule("greylisted", 0.0, f"greylisted: first contact from {network} looks "
                    f"suspicious (score {score:g}); retry in {int(wait) + 1} s",
                    force=Action.TEMPFAIL)

    async def passed(self, peer_ip: str) -> None:
        """Remember a network whose mail was accepted as clean."""
        network = network_of(peer_ip)
        await self.store.write(lambda c: greylist_store.remember_network(c, network))


class ContentScorer(Protocol):
    """What a content classifier provides to the pipeline (the spam package fills it)."""

    def score(self, raw: bytes, *, user: str | None, auth: dict[str, str] | None,
              sender: str | None, client_ip: str | None) -> tuple[float, list[tuple[str, float]]]:
        """(probability of spam 0..1, top reasons as (feature, weight))."""
        ...


def content_rules(probability: float, reasons: list[tuple[str, float]]) -> list[Rule]:
    """Map a classifier probability onto verdict points (0 → -1, 0.5 → +2.5, 1 → +12)."""
    if probability < 0.1:
        points = -1.0
    elif probability < 0.5:
        points = round(7.0 * (probability - 0.1), 2)
    else:
        points = round(2.5 + 19.0 * (probability - 0.5), 2)
    why = ", ".join(f"{name}" for name, _ in reasons[:5])
    top = " ".join(f"{name}" for name, _ in reasons[:3])
    return [Rule("content", points, f"classifier spam probability {probability:.3f}"
                 + (f" ({why})" if why else ""), note=f"p={probability:.3f} {top}".strip())]
