"""An account's sending behaviour: the baseline the hacked-account detector compares to.

Kept per account: hourly and daily volumes for four weeks, the networks
(/24, /48) and mail programs it used with when they were first and last seen,
a 24-hour window of recent submissions, logins and delivery results, and its
correspondents (addresses it wrote to or received mail from). It serializes to
JSON for the `abuse_profiles` table; correspondents have their own table
because they can number in the thousands.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

DAY = 86400.0
HOUR = 3600.0
HISTORY_DAYS = 28
# A network or program counts as the user's own once first seen this long ago
# and used a few times (an attacker who logs in and waits a day still meets
# "new network" on the first use).
ESTABLISHED_AFTER = DAY
ESTABLISHED_USES = 3
FORGET_AFTER = 90 * DAY


@dataclass
class Sent:
    """One submission in the recent window."""

    t: float
    remote: int          # outside recipients
    new: int             # of which first-time
    weight: float        # novelty weight of the message (1: all new, 0.1: all known)
    unusual: bool        # from a new network or program
    held: bool = False


@dataclass
class Profile:
    account: str
    first_seen: float
    account_id: int | None = None
    messages: int = 0
    hours: dict[int, list[float]] = field(default_factory=dict)   # hour -> [weight, new]
    days: dict[int, float] = field(default_factory=dict)          # day -> new recipients
    networks: dict[str, list[float]] = field(default_factory=dict)  # net -> [first, last, n]
    clients: dict[str, list[float]] = field(default_factory=dict)
    recent: deque[Sent] = field(default_factory=deque)
    logins: deque[tuple[float, str]] = field(default_factory=deque)
    results: deque[tuple[float, bool]] = field(default_factory=deque)
    correspondents: set[str] = field(default_factory=set)
    _peaks: tuple[int, float, float, float] | None = None

    # -- learning ---------------------------------------------------------------------
    def see(self, table: dict[str, list[float]], key: str, now: float) -> None:
        entry = table.get(key)
        if entry is None:
            table[key] = [now, now, 1.0]
        else:
            entry[1], entry[2] = now, entry[2] + 1

    def established(self, table: dict[str, list[float]], key: str, now: float) -> bool:
        entry = table.get(key)
        return entry is not None and now - entry[0] >= ESTABLISHED_AFTER and \
            entry[2] >= ESTABLISHED_USES and now - entry[1] < FORGET_AFTER

    def add(self, sent: Sent) -> None:
        self.recent.append(sent)
        self.messages += 1
        if sent.held:
            return  # held mail never teaches the baseline what is normal
        hour, day = int(sent.t // HOUR), int(sent.t // DAY)
        bucket = self.hours.setdefault(hour, [0.0, 0.0])
        bucket[0] += sent.weight
        bucket[1] += sent.new
        self.days[day] = self.days.get(day, 0.0) + sent.new

    def trim(self, now: float) -> None:
        while self.recent and now - self.recent[0].t > DAY:
            self.recent.popleft()
        while self.logins and now - self.logins[0][0] > DAY:
            self.logins.popleft()
        while self.results and now - self.results[0][0] > DAY:
            self.results.popleft()
        oldest = int((now - HISTORY_DAYS * DAY) // HOUR)
        if self.hours and min(self.hours) < oldest:
            self.hours = {h: v for h, v in self.hours.items() if h >= oldest}
            self.days = {d: v for d, v in self.days.items() if d * 24 >= oldest}

    # -- baseline ---------------------------------------------------------------------
    def peaks(self, now: float) -> tuple[float, float, float]:
        """Busiest hour (weighted messages, new recipients) and day (new recipients)
        in the history, not counting the last two hours (an attack in progress must
        not become its own baseline). Cached per hour."""
        hour = int(now // HOUR)
        if self._peaks is not None and self._peaks[0] == hour:
            return self._peaks[1:]
        old = {h: v for h, v in self.hours.items() if h < hour - 1}
        weight = max((v[0] for v in old.values()), default=0.0)
        new = max((v[1] for v in old.values()), default=0.0)
        today = int(now // DAY)
        day_new = max((v for d, v in self.days.items() if d < today), default=0.0)
        self._peaks = (hour, weight, new, day_new)
        return weight, new, day_new

    def window(self, now: float, seconds: float, unusual_only: bool) -> tuple[float, float]:
        """(novelty-weighted messages, new recipients) in the last `seconds`."""
        weight = new = 0.0
        for s in self.recent:
            if now - s.t <= seconds and (s.unusual or not unusual_only):
                weight += s.weight
                new += s.new
        return weight, new

    def count(self, now: float, seconds: float) -> tuple[int, int]:
        """(messages with outside recipients, new recipients) in the last `seconds`."""
        msgs = new = 0
        for s in self.recent:
            if now - s.t <= seconds and s.remote:
                msgs += 1
                new += s.new
        return msgs, new

    # -- persistence ------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"first_seen": self.first_seen, "account_id": self.account_id,
                "messages": self.messages, "hours": self.hours, "days": self.days,
                "networks": self.networks, "clients": self.clients,
                "recent": [[s.t, s.remote, s.new, s.weight, s.unusual, s.held]
                           for s in self.recent],
                "logins": list(self.logins), "results": list(self.results)}

    @classmethod
    def from_json(cls, account: str, data: dict[str, Any]) -> Profile:
        p = cls(account, data["first_seen"], data.get("account_id"), data.get("messages", 0))
        p.hours = {int(k): list(v) for k, v in data.get("hours", {}).items()}
        p.days = {int(k): float(v) for k, v in data.get("days", {}).items()}
        p.networks = {k: list(v) for k, v in data.get("networks", {}).items()}
        p.clients = {k: list(v) for k, v in data.get("clients", {}).items()}
        p.recent = deque(Sent(*r) for r in data.get("recent", []))
        p.logins = deque((float(t), str(n)) for t, n in data.get("logins", []))
        p.results = deque((float(t), bool(f)) for t, f in data.get("results", []))
        return p


_VERSION = re.compile(r"[\d._]+")


def client_identity(software: str) -> str:
    """A mail program's name without version numbers ('Thunderbird/115.3' and
    'Thunderbird/128.1' are the same program; updates are not suspicious)."""
    text = _VERSION.sub("", software.lower())
    text = re.sub(r"[^a-z]+", " ", text).strip()
    return " ".join(text.split()[:4]) or "unknown"
