"""Simulations of the abuse guards on a simulated clock (bench/abuse_sim.py, tests).

`normal_weeks` replays four weeks of a small organization's mail (three weeks
to build baselines, one measured week), seeded random: sales, marketing with
mail-merge newsletters to a growing customer list, support answering
customers who wrote in, an executive travelling with a phone mid-week, a new
employee joining, a part-timer; office, home, mobile-carrier and hotel
networks; mail-program updates; occasional bounces. `attack` then gives a
stolen password to a bot on a new network sending 1,000 spam, one address
each. `brute_force` runs password guessing from one IP and from 50.
Nothing is tuned to the guard: the behaviours come from the generators only.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from ..store.models import Account
from .authguard import AuthGuard
from .outguard import OutboundGuard
from .profile import DAY, HOUR
from .settings import AbuseSection

DOMAIN = "shop.example"
START = 1_700_000_000.0 - (1_700_000_000.0 % (7 * DAY)) + 4 * DAY  # a Monday 00:00 UTC


class SimClock:
    def __init__(self, t: float = START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class User:
    account: Account
    role: str
    programs: list[str]
    networks: list[str]                       # /24 prefixes like "198.51.100"
    contacts: list[str] = field(default_factory=list)
    joins_day: int = 0

    @property
    def address(self) -> str:
        return self.account.address


@dataclass
class WeekResult:
    messages: int = 0
    recipients: int = 0
    holds: list[tuple[str, float, tuple[str, ...]]] = field(default_factory=list)
    tempfails: int = 0
    warmup_holds: int = 0
    per_user: Counter[str] = field(default_factory=Counter)


class Org:
    """The simulated organization and its mail flow through one OutboundGuard."""

    def __init__(self, seed: int, settings: AbuseSection | None = None) -> None:
        self.rng = random.Random(seed)
        self.clock = SimClock()
        self.settings = settings or AbuseSection()
        self.guard = OutboundGuard(self.settings, clock=self.clock,
                                   is_local=lambda a: a.endswith("@" + DOMAIN))
        self.auth = AuthGuard(self.settings, clock=self.clock, on_login=self.guard.login)
        self.users = self._users()
        self.customers = [self._stranger("customer") for _ in range(self.rng.randint(150, 260))]
        self.result = WeekResult()
        self.measuring = False
        self._pending: list[tuple[float, str, str, bool]] = []  # delivery results due

    # -- the people ----------------------------------------------------------------------
    def _users(self) -> list[User]:
        r = self.rng
        office = "198.51.100"
        mobile = [f"100.64.{r.randint(0, 255)}" for _ in range(6)]   # carrier NAT pool
        spec = [("alice", "sales", ["Thunderbird/115.3.1", "iPhone Mail (20G75)"], 1),
                ("bob", "marketing", ["Microsoft Outlook 16.0.17029"], 1),
                ("carol", "support", ["Thunderbird/115.3.1"], 1),
                ("dave", "exec", ["Apple Mail (2.3731)", "iPhone Mail (20G75)"], 2),
                ("erin", "sales", ["Thunderbird/115.4.0"], 1),
                ("frank", "parttime", ["Mozilla/5.0 webmail"], 1)]
        users = []
        for i, (name, role, programs, homes) in enumerate(spec, start=1):
            home = [f"203.0.{r.randint(0, 99)}" for _ in range(homes)]
            nets = [office, *home] + (mobile if "iPhone" in " ".join(programs) else [])
            acct = Account(i, f"{name}@{DOMAIN}", 1, name, False, False, 0)
            user = User(acct, role, programs, nets,
                        [self._stranger("contact") for _ in range(r.randint(40, 150))])
            users.append(user)
        users[4].joins_day = 24      # erin starts on the measured week's Thursday
        return users

    def _stranger(self, kind: str) -> str:
        r = self.rng
        domain = r.choice(["gmail.test", "outlook.test", "yahoo.test", "gmx.test"] +
                          [f"{kind}{r.randint(1, 400)}.test"] * 3)
        return f"{kind}{r.randint(1, 10**7)}@{domain}"

    # -- running ----------------------------------------------------------------------
    def run(self, days: int = 28, measure_from: int = 21) -> WeekResult:
        for user in self.users:
            if user.joins_day == 0:   # migrated: part of their Sent folder is known
                known = user.contacts[: int(len(user.contacts) * 0.6)]
                if user.role == "marketing":
                    known += self.customers[: int(len(self.customers) * 0.7)]
                self.guard.learn_correspondents(user.address, known)
        events = self._schedule(days)
        events.sort(key=lambda e: e[0])
        for t, user, kind in events:
            self.measuring = t >= START + measure_from * DAY
            self._deliver_results(t)
            self.clock.t = t
            getattr(self, f"_do_{kind}")(user)
        return self.result

    def _schedule(self, days: int) -> list[tuple[float, User, str]]:
        r, events = self.rng, []
        for day in range(days):
            weekday = day % 7
            for user in self.users:
                if day < user.joins_day:
                    continue
                rate = {"sales": 14, "marketing": 8, "support": 25, "exec": 12,
                        "parttime": 3}[user.role]
                if weekday >= 5:
                    rate = rate // 6
                elif user.role == "parttime" and weekday not in (1, 3):
                    rate = 0
                for _ in range(max(0, int(r.gauss(rate, rate / 3)))):
                    hour = r.gauss(13, 3) if r.random() < 0.85 else r.uniform(6, 23)
                    t = START + day * DAY + max(0.0, min(23.9, hour)) * HOUR
                    events.append((t, user, "message"))
                    if r.random() < 0.3:
                        events.append((t - r.uniform(600, 6 * HOUR), user, "incoming"))
                if user.role == "marketing" and weekday in (1, 3):
                    events.append((START + day * DAY + r.uniform(9, 11) * HOUR, user,
                                   "newsletter"))
                if user.role == "sales" and weekday == 2:
                    events.append((START + day * DAY + r.uniform(10, 16) * HOUR, user,
                                   "outreach"))
                if user.role == "support":
                    for _ in range(int(r.gauss(10, 3)) if weekday < 5 else 1):
                        t = START + day * DAY + r.uniform(7, 19) * HOUR
                        events.append((t, user, "ticket"))
        return events

    # -- behaviours ---------------------------------------------------------------------
    def _context(self, user: User) -> tuple[str, str]:
        r, day = self.rng, int((self.clock.t - START) // DAY)
        travelling = user.role == "exec" and 23 <= day <= 25
        if travelling:
            net = r.choice(["192.0.2", *user.networks[-3:]])   # hotel wifi, or the phone
        elif r.random() < 0.75:
            net = user.networks[0] if r.random() < 0.7 else r.choice(user.networks)
        else:
            net = r.choice(user.networks)
        program = r.choice(user.programs)
        if day >= 25 and program.startswith("Thunderbird"):
            program = "Thunderbird/128.1.0"          # an update mid-week
        return f"{net}.{r.randint(2, 250)}", program

    def _login(self, user: User, ip: str) -> None:
        if self.auth.check(ip, user.address) is None:
            self.auth.success(ip, user.address)

    def _send(self, user: User, rcpts: list[str], raw: bytes, bounce: float = 0.015) -> None:
        ip, program = self._context(user)
        self._login(user, ip)
        decision = self.guard.check(user.account, rcpts, raw, ip, program)
        if self.measuring:
            self.result.messages += 1
            self.result.recipients += len(rcpts)
            self.result.per_user[user.address] += 1
        if decision.held:
            if self.measuring:
                self.result.holds.append((user.address, self.clock.t, decision.reasons))
            else:
                self.result.warmup_holds += 1
            self.guard.release(user.account)     # the admin looks and releases
        elif decision.action == "tempfail":
            self.result.tempfails += int(self.measuring)
        else:
            for rcpt in rcpts:
                if not rcpt.endswith("@" + DOMAIN):
                    fail = self.rng.random() < bounce
                    self._pending.append((self.clock.t + self.rng.uniform(5, 600),
                                          user.address, rcpt, fail))

    def _deliver_results(self, until: float) -> None:
        due = [p for p in self._pending if p[0] <= until]
        self._pending = [p for p in self._pending if p[0] > until]
        for t, address, rcpt, fail in sorted(due):
            self.clock.t = t
            self.guard.delivery_result(address, rcpt, fail)

    def _do_message(self, user: User) -> None:
        r = self.rng
        kind = r.choices(["reply", "known", "new", "internal", "group"],
                         [45, 20, 12, 15, 8])[0]
        colleagues = [u.address for u in self.users if u is not user]
        if kind in ("reply", "known"):
            rcpts = [r.choice(user.contacts)]
        elif kind == "new":
            rcpts = [self._stranger("contact") for _ in range(r.choice([1, 1, 1, 2, 3]))]
            user.contacts += rcpts
        elif kind == "internal":
            rcpts = r.sample(colleagues, r.randint(1, 2))
        else:
            rcpts = r.sample(user.contacts, min(len(user.contacts), r.randint(2, 6)))
            if r.random() < 0.3:
                rcpts.append(self._stranger("contact"))
                user.contacts.append(rcpts[-1])
            rcpts += r.sample(colleagues, 1)
        header = "In-Reply-To: <x@y>\r\n" if kind == "reply" else ""
        self._send(user, rcpts, f"Subject: {kind}\r\n{header}\r\nhello\r\n".encode())

    def _do_incoming(self, user: User) -> None:
        sender = self.rng.choice(user.contacts) if self.rng.random() < 0.7 else \
            self._stranger("contact")
        if sender not in user.contacts:
            user.contacts.append(sender)
        self.guard.received_from(user.address, sender)

    def _do_ticket(self, user: User) -> None:
        customer = self.rng.choice(self.customers) if self.rng.random() < 0.3 else \
            self._stranger("customer")
        self.guard.received_from(user.address, customer)      # the customer writes in
        self.clock.t += self.rng.uniform(300, 3 * HOUR)       # and gets an answer
        self._send(user, [customer], b"Subject: Re: ticket\r\nIn-Reply-To: <t@c>\r\n\r\nok\r\n")
        user.contacts.append(customer)

    def _do_newsletter(self, user: User) -> None:
        """Mail merge: one message per customer, a few seconds apart."""
        r = self.rng
        self.customers += [self._stranger("customer") for _ in range(r.randint(2, 10))]
        for customer in self.customers:
            self.clock.t += r.uniform(1, 4)
            self._send(user, [customer], b"Subject: Our news\r\n\r\nnews\r\n", bounce=0.02)

    def _do_outreach(self, user: User) -> None:
        """A salesperson writes to a handful of prospects from a trade-fair list."""
        for _ in range(self.rng.randint(3, 8)):
            self.clock.t += self.rng.uniform(60, 600)
            prospect = self._stranger("prospect")
            user.contacts.append(prospect)
            self._send(user, [prospect], b"Subject: Nice to meet you\r\n\r\nhi\r\n")


@dataclass
class AttackResult:
    victim: str
    left_before_hold: int
    held: bool
    reasons: tuple[str, ...]


def attack(org: Org, victim: User, *, mimic_program: bool = False, ip: str = "45.67.89.10",
           count: int = 1000) -> AttackResult:
    """A bot with the victim's password sends `count` spam, one new address each."""
    org.clock.t += HOUR
    org.auth.success(ip, victim.address)
    program = victim.programs[0] if mimic_program else ""
    left = 0
    for i in range(count):
        org.clock.t += org.rng.uniform(1, 4)
        raw = b"Subject: You won\r\n\r\nclaim your prize\r\n"
        decision = org.guard.check(victim.account, [f"target{i}@victims{i % 97}.test"], raw,
                                   ip, program or "ehlo localhost")
        if decision.held:
            org.guard.release(victim.account)   # the admin cleans up for the next run
            org.auth.known[victim.address].pop(ip, None)
            return AttackResult(victim.address, left, True, decision.reasons)
        if decision.action == "allow":
            left += 1
    return AttackResult(victim.address, left, False, ())


@dataclass
class BruteResult:
    ips: int
    guesses: int
    hours: float
    max_per_hour: int
    user_refused: int
    user_logins: int


def brute_force(ips: int, guesses: int = 1000, seed: int = 1) -> BruteResult:
    """`guesses` wrong passwords for one account from `ips` addresses, each retrying as
    soon as the guard allows, while the real user logs in every 20 minutes from home."""
    r = random.Random(seed)
    clock = SimClock()
    guard = AuthGuard(AbuseSection(), clock=clock)
    user, home = "alice@shop.example", "198.51.100.23"
    guard.success(home, user)
    attackers = [f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{i}" for i in range(ips)]
    ready = {ip: clock.t + r.uniform(0, 5) for ip in attackers}
    next_user = clock.t + 1200
    made, times, refused, logins = 0, [], 0, 0
    while made < guesses and clock.t < START + 30 * DAY:
        ip = min(ready, key=ready.__getitem__)
        clock.t = min(ready[ip], next_user)
        if clock.t == next_user:
            logins += 1
            if guard.check(home, user) is None:
                guard.success(home, user)
            else:
                refused += 1
            next_user += 1200
            continue
        wait = guard.check(ip, user)
        if wait is not None:
            ready[ip] = clock.t + wait
            continue
        guard.failure(ip, user)
        made += 1
        times.append(clock.t)
        ready[ip] = clock.t + r.uniform(0.5, 2)          # the next guess right away
    return BruteResult(ips, made, (clock.t - START) / HOUR, _max_per_hour(times), refused,
                       logins)


def _max_per_hour(times: list[float]) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > HOUR:
            start += 1
        best = max(best, end - start + 1)
    return best
