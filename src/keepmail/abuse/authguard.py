"""Authentication throttling for SMTP AUTH, IMAP LOGIN/AUTHENTICATE and the console.

Three counters watch wrong passwords:

* per (account, IP): a few free mistakes, then each try must wait 1 s, 2 s,
  4 s, ... and after `auth_block_failures_pair` the pair is blocked for 15 min,
  doubling at each repeat — a single guessing IP gets a handful of tries a day;
* per IP (all accounts): the same shape with higher numbers, against one IP
  spraying many accounts;
* per account, from IPs its user never logged in from: a leaky bucket
  (`auth_account_burst` at once, then `auth_account_per_hour`), against a
  botnet spreading its guesses over many IPs. Any hour sees at most
  burst + per_hour guesses, however many IPs join in.

An IP (or its /24, /48 network) the user logged in from successfully before is
"usual": it skips the per-IP and per-account counters, so an attacker can
slow their own guesses but cannot lock the real user out of their account.

`before_attempt` reserves the try (concurrent connections cannot all slip
through before the first failure is counted); `failure`/`success` settle it.
State is written behind to the `abuse_throttle` table, so a restart keeps an
attacker's penalty; `keepmail abuse unblock` leaves a marker the guard honours
at the next refused attempt.
"""

from __future__ import annotations

import ipaddress
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..store import abuse as db
from .base import (
    Clock,
    NullRecorder,
    Persistence,
    RecorderLike,
    network_of,
    normalize_user,
    wall_clock,
)
from .settings import AbuseSection

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..store import Store

PAIR, IP, ACCOUNT, UNBLOCK = "pair", "ip", "account", "unblock"
# A reservation not settled by failure()/success() within this time (the
# client hung up mid-check) stops counting.
RESERVATION_SECONDS = 60.0
# Half-life of the exponential counters: an hour after an attack stops its
# weight has halved, a day later it is forgotten.
HALF_LIFE = 3600.0
MAX_DELAY = 300.0


@dataclass
class Bucket:
    kind: str
    key: str
    score: float = 0.0       # decayed failures (exponential) or level (leaky bucket)
    updated: float = 0.0
    next_ok: float = 0.0
    strikes: int = 0         # blocks so far, for doubling
    inflight: list[float] = field(default_factory=list)

    def pending(self, now: float) -> int:
        self.inflight = [t for t in self.inflight if now - t < RESERVATION_SECONDS]
        return len(self.inflight)

    def settle(self) -> None:
        if self.inflight:
            self.inflight.pop(0)

    def row(self) -> db.ThrottleRow:
        return db.ThrottleRow(self.kind, self.key, self.score, self.updated, self.next_ok,
                              self.strikes)


@dataclass(frozen=True)
class Shape:
    """How one exponential counter turns failures into waits and blocks."""

    free: int
    block_after: int
    block_seconds: float
    max_block: float

    def decayed(self, b: Bucket, now: float) -> float:
        return b.score * 0.5 ** (max(0.0, now - b.updated) / HALF_LIFE)

    def fail(self, b: Bucket, now: float) -> bool:
        """Count one failure; True if it started a block."""
        b.score = self.decayed(b, now) + 1.0
        b.updated = now
        if b.score < self.free:
            b.strikes = 0
        if b.score >= self.block_after:
            b.strikes += 1
            length = min(self.block_seconds * 2 ** (b.strikes - 1), self.max_block)
            b.next_ok = max(b.next_ok, now + length)
            return True
        if b.score > self.free:
            b.next_ok = max(b.next_ok, now + min(2 ** (b.score - self.free - 1), MAX_DELAY))
        return False

    def wait(self, b: Bucket, now: float) -> float:
        if b.next_ok > now:
            return b.next_ok - now
        if self.decayed(b, now) + b.pending(now) >= self.free:
            return 1.0 if b.pending(now) else 0.0
        return 0.0


@dataclass(frozen=True)
class Leaky:
    """The per-account bucket: `burst` at once, then `per_hour` an hour."""

    burst: int
    per_hour: float

    def level(self, b: Bucket, now: float) -> float:
        return max(0.0, b.score - max(0.0, now - b.updated) * self.per_hour / 3600.0)

    def fail(self, b: Bucket, now: float) -> bool:
        b.score = self.level(b, now) + 1.0
        b.updated = now
        return b.score >= self.burst

    def wait(self, b: Bucket, now: float) -> float:
        excess = self.level(b, now) + b.pending(now) + 1.0 - self.burst
        return excess * 3600.0 / self.per_hour if excess > 0 else 0.0


class AuthGuard:
    """Decides whether a login attempt may check a password now."""

    def __init__(self, settings: AbuseSection | None = None, *, store: Store | None = None,
                 recorder: RecorderLike | None = None, clock: Clock = wall_clock,
                 on_login: Callable[[str, str, float], None] | None = None,
                 alert: Callable[[str, str, str, str, dict[str, object]], None] | None = None
                 ) -> None:
        s = self.settings = settings or AbuseSection()
        block, max_block = s.auth_block_minutes * 60, s.auth_max_block_hours * 3600
        self.pair_shape = Shape(s.auth_free_failures_pair, s.auth_block_failures_pair, block,
                                max_block)
        self.ip_shape = Shape(s.auth_free_failures_ip, s.auth_block_failures_ip, block,
                              max_block)
        self.account_shape = Leaky(max(1, s.auth_account_burst),
                                   max(1.0, float(s.auth_account_per_hour)))
        self.persist = Persistence(store)
        self.recorder = recorder or NullRecorder()
        self.clock = clock
        self.on_login = on_login
        self.alert = alert
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.known: dict[str, dict[str, float]] = defaultdict(dict)  # user -> ip/net -> seen
        self._alerted: dict[str, float] = {}
        self._load()

    # -- the interface the listeners call ---------------------------------------------
    async def before_attempt(self, ip: str, username: str) -> float | None:
        """None: go ahead and check the password. A number: refuse (tempfail) now;
        the client may try again after that many seconds."""
        return self.check(ip, username)

    def check(self, ip: str, username: str) -> float | None:
        now, user = self.clock(), normalize_user(username)
        buckets = self._applicable(ip, user)
        wait = max((self._shape(b).wait(b, now) for b in buckets), default=0.0)
        if wait >= 5.0 and self._unblocked(buckets):
            wait = max((self._shape(b).wait(b, now) for b in buckets), default=0.0)
        if wait > 0:
            return math.ceil(wait)
        for b in buckets:
            b.inflight.append(now)
        return None

    def failure(self, ip: str, username: str) -> float:
        """Count a wrong password. Returns seconds the caller may pause before replying
        (a small tarpit; the real penalty is enforced by before_attempt)."""
        now, user = self.clock(), normalize_user(username)
        pause = 0.0
        for b in self._applicable(ip, user):
            b.settle()
            started = self._shape(b).fail(b, now)
            row = b.row()
            self.persist.write(lambda c, row=row: db.save_throttle(c, row))
            if started:
                self._record_block(b, ip, user, now)
            pause = max(pause, min(b.next_ok - now, 3.0))
        return max(pause, 0.0)

    def success(self, ip: str, username: str) -> None:
        """A correct password: settle reservations and remember the IP as usual."""
        now, user = self.clock(), normalize_user(username)
        for b in self._applicable(ip, user):
            b.settle()
        pair = self.buckets.get((PAIR, f"{user} {ip}"))
        if pair is not None and pair.score:
            # The right password from this IP clears its own mistakes (a typo), not
            # the counters other IPs built against the account.
            pair.score, pair.next_ok, pair.strikes = 0.0, 0.0, 0
            row = pair.row()
            self.persist.write(lambda c: db.save_throttle(c, row))
        self.known[user][ip] = now
        self.known[user][network_of(ip)] = now
        self.persist.write(lambda c: db.save_known_ip(c, user, ip, now))
        if self.on_login is not None:
            self.on_login(user, ip, now)

    # -- queries ----------------------------------------------------------------------
    def is_usual(self, ip: str, username: str) -> bool:
        known = self.known.get(normalize_user(username))
        if not known:
            return False
        horizon = self.clock() - self.settings.auth_memory_days * 86400
        return any(known.get(k, -1.0) >= horizon for k in (ip, network_of(ip)))

    def blocked(self) -> list[tuple[str, str, float]]:
        """(kind, key, seconds left) of every counter refusing tries now."""
        now = self.clock()
        return [(b.kind, b.key, b.next_ok - now) for b in self.buckets.values()
                if b.next_ok > now]

    def unblock(self, key: str) -> int:
        """Clear counters naming key (an IP, an account, or 'account ip')."""
        key = key.strip().lower()
        hits = [k for k in self.buckets if key in (k[1], *k[1].split(" "))]
        for k in hits:
            del self.buckets[k]
        return len(hits)

    # -- internals --------------------------------------------------------------------
    def _applicable(self, ip: str, user: str) -> list[Bucket]:
        found = [self._bucket(PAIR, f"{user} {ip}")]
        if not self.is_usual(ip, user):
            found += [self._bucket(IP, ip_key(ip)), self._bucket(ACCOUNT, user)]
        return found

    def _bucket(self, kind: str, key: str) -> Bucket:
        b = self.buckets.get((kind, key))
        if b is None:
            b = self.buckets[(kind, key)] = Bucket(kind, key)
        return b

    def _shape(self, b: Bucket) -> Shape | Leaky:
        if b.kind == ACCOUNT:
            return self.account_shape
        return self.pair_shape if b.kind == PAIR else self.ip_shape

    def _record_block(self, b: Bucket, ip: str, user: str, now: float) -> None:
        seconds = round(b.next_ok - now) if b.kind != ACCOUNT else None
        trace = self.recorder.new_trace("abuse", ip=ip, account=user, status="auth-throttled",
                                        detail=f"{b.kind} {b.key}")
        self.recorder.event(trace, "auth-throttle", counter=b.kind, key=b.key,
                            failures=round(b.score, 1), block_seconds=seconds,
                            strikes=b.strikes)
        self.recorder.update(trace, ended=now)
        if b.kind == ACCOUNT and self.alert is not None and \
                now - self._alerted.get(user, -1e18) > 6 * 3600:
            self._alerted[user] = now
            self.alert("password-attack", user, ip,
                       f"Many wrong passwords for {user} from unfamiliar addresses; tries "
                       f"are now limited to {self.settings.auth_account_per_hour} an hour "
                       "(the user's usual addresses are not affected).",
                       {"last_ip": ip})

    def _unblocked(self, buckets: list[Bucket]) -> bool:
        """Honour `keepmail abuse unblock` run while the server is up."""
        keys = {k for b in buckets for k in (b.key, *b.key.split(" "))}
        marks_sql = ",".join("?" * len(keys))
        marks = self.persist.read(lambda c: {r[0]: r[1] for r in c.execute(
            f"SELECT key, updated FROM abuse_throttle WHERE kind = ? AND key IN ({marks_sql})",
            (UNBLOCK, *keys))}, {})
        cleared = False
        for b in buckets:
            mark = max((marks.get(k, -1.0) for k in (b.key, *b.key.split(" "))), default=-1.0)
            if mark > b.updated:
                b.score, b.next_ok, b.strikes = 0.0, 0.0, 0
                cleared = True
        return cleared

    def _load(self) -> None:
        now = self.clock()
        rows = self.persist.read(lambda c: db.load_throttles(c, now - 86400), [])
        for r in rows:
            if r.kind != UNBLOCK:
                self.buckets[(r.kind, r.key)] = Bucket(r.kind, r.key, r.score, r.updated,
                                                       r.next_ok, r.strikes)
        horizon = now - self.settings.auth_memory_days * 86400
        for user, ip, seen in self.persist.read(lambda c: db.load_known_ips(c, horizon), []):
            self.known[user][ip] = max(seen, self.known[user].get(ip, 0.0))
            net = network_of(ip)
            self.known[user][net] = max(seen, self.known[user].get(net, 0.0))


def ip_key(ip: str) -> str:
    """IPv6 clients get a whole /64 each, so the per-IP counter counts the /64."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6 and addr.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr.ipv4_mapped or addr) if addr.version == 6 else ip
