"""Per-account outbound limits and hacked-account detection.

`OutboundGuard.check_submission` runs for every submitted message (after
AUTH and the sender-ownership check, before the message is queued):

1. A held account: the message is accepted and held too (the attacker learns
   nothing; the admin reviews everything), until `held_message_cap`.
2. Limits, on by default: messages per hour and per day, outside recipients
   per message, first-time recipients per day (per-account or per-domain
   overrides in `abuse_limits`). Over a limit: 4xx with a clear text, an
   alert, never a silent drop.
3. Detection: a suspicion score from the account's behaviour against its own
   baseline (see `score`). At `hold_score` the account is held: this message
   and everything it has queued stay in the queue, undelivered, and the admin
   and the user are told.

Only outside recipients count: mail between colleagues does not harm the
server's reputation. Correspondents (addresses the account wrote to or got
mail from) count as normal; replies to them weigh a tenth of a new contact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import mailmsg
from ..store import abuse as db
from .alerts import Alerter
from .base import Clock, Persistence, RecorderLike, network_of, normalize_user, wall_clock
from .profile import DAY, HOUR, Profile, Sent, client_identity
from .settings import AbuseSection

if TYPE_CHECKING:
    from ..store import Store
    from ..store.models import Account

ALLOW, TEMPFAIL, HOLD = "allow", "tempfail", "hold"
LIMIT_NAMES = ("max_messages_per_hour", "max_messages_per_day", "max_recipients_per_message",
               "max_new_recipients_per_day")
# An account younger than this, or with fewer messages, has no baseline yet:
# it is held only on twice the usual score (blatant abuse still is).
LEARNING_DAYS = 7
LEARNING_MESSAGES = 30
KNOWN_WEIGHT = 0.1         # a message to known correspondents only, vs 1.0 all new
FLOOR_NEW_HOUR = 10.0      # first-time recipients an hour any account may reach unnoticed
FLOOR_WEIGHT_HOUR = 20.0
FLOOR_NEW_DAY = 50.0
LIMIT_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class Decision:
    action: str                       # allow | tempfail | hold
    reply: str = ""
    reasons: tuple[str, ...] = ()
    score: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.action == ALLOW

    @property
    def held(self) -> bool:
        return self.action == HOLD

    def smtp(self) -> tuple[int, str, str] | None:
        """(code, enhanced status, text) to refuse with, or None to accept."""
        if self.action != TEMPFAIL:
            return None
        return 451, "4.7.1", self.reply


@dataclass
class Limits:
    max_messages_per_hour: int
    max_messages_per_day: int
    max_recipients_per_message: int
    max_new_recipients_per_day: int


@dataclass
class Assessment:
    score: float
    reasons: list[str] = field(default_factory=list)


class OutboundGuard:
    def __init__(self, settings: AbuseSection | None = None, *, store: Store | None = None,
                 recorder: RecorderLike | None = None, clock: Clock = wall_clock,
                 alerter: Alerter | None = None,
                 is_local: Callable[[str], bool] | None = None,
                 content_score: Callable[[bytes], float] | None = None) -> None:
        self.settings = settings or AbuseSection()
        self.store = store
        self.persist = Persistence(store)
        self.clock = clock
        self.alert = alerter or Alerter(store, recorder, clock=clock,
                                        admin_inbox=self.settings.alert_admin_inbox,
                                        user_inbox=self.settings.alert_user_inbox)
        self.is_local = is_local or (lambda _address: False)
        self.content_score = content_score
        self.profiles: dict[str, Profile] = {}
        self.holds: dict[str, db.Hold] = {h.address: h for h in
                                          self.persist.read(db.list_holds, [])}
        self._ids: dict[int, str] = {}
        self._limits: dict[str, tuple[float, Limits]] = {}

    # -- the submission check -----------------------------------------------------------
    async def check_submission(self, account: Account, envelope_rcpts: Iterable[str],
                               raw_message: bytes, client_ip: str,
                               client_software: str = "") -> Decision:
        return self.check(account, list(envelope_rcpts), raw_message, client_ip,
                          client_software)

    def check(self, account: Account, rcpts: list[str], raw: bytes, client_ip: str,
              client_software: str = "") -> Decision:
        now = self.clock()
        address = normalize_user(account.address)
        profile = self.profile(address, account.id)
        profile.trim(now)
        remote = [normalize_user(r) for r in dict.fromkeys(rcpts) if not self.is_local(r)]
        if self._held_now(account):
            return self._while_held(profile, remote, now)
        refusal = self._over_limit(profile, address, remote, now)
        if refusal is not None:
            return refusal
        software = client_software or software_of(raw)
        sent, unusual = self._describe(profile, remote, raw, client_ip, software, now)
        found = self.score(profile, sent, raw, now, unusual)
        if self.settings.detect and found.score >= self._threshold(profile, now):
            sent.held = True
            self._learn(profile, sent, remote, client_ip, software, now)
            self.hold(account, "; ".join(found.reasons), score=found.score, ip=client_ip)
            return Decision(HOLD, "", tuple(found.reasons), found.score)
        self._learn(profile, sent, remote, client_ip, software, now)
        return Decision(ALLOW, "", tuple(found.reasons), found.score)

    def rcpt_allowed(self, account: Account, count: int) -> str | None:
        """For the RCPT stage: None, or a 452 4.5.3 text once a message has too many
        outside recipients (the client sends the rest in another transaction)."""
        limit = self.limits(normalize_user(account.address)).max_recipients_per_message
        if limit and count > limit:
            return f"Too many recipients in one message (at most {limit}); send the rest " \
                   "in another message"
        return None

    # -- feedback from elsewhere --------------------------------------------------------
    def delivery_result(self, account: Account | int | str, rcpt: str,
                        permanent_failure: bool) -> None:
        """The delivery agent reports each outside recipient's final outcome."""
        address = self._address_of(account)
        if address is None:
            return
        profile = self.profile(address)
        now = self.clock()
        profile.trim(now)
        profile.results.append((now, permanent_failure))
        if permanent_failure:
            profile.correspondents.discard(normalize_user(rcpt))
        elif not self.holds.get(address):
            self._check_bounces(profile, now)

    def login(self, username: str, ip: str, when: float | None = None) -> None:
        """A successful login (AuthGuard.on_login): feeds the 'new networks' signal."""
        profile = self.profile(normalize_user(username))
        now = self.clock() if when is None else when
        profile.trim(now)
        profile.logins.append((now, network_of(ip)))

    def received_from(self, account: Account | int | str, sender: str) -> None:
        """Mail delivered to the account's Inbox from `sender`: a correspondent."""
        address = self._address_of(account)
        sender = normalize_user(sender)
        if address is None or not sender or self.is_local(sender):
            return
        profile = self.profile(address)
        if sender not in profile.correspondents:
            profile.correspondents.add(sender)
            now = self.clock()
            self.persist.write(lambda c: db.add_correspondents(c, address, [sender], now))

    def learn_correspondents(self, account: str, addresses: Iterable[str]) -> None:
        """Seed correspondents (e.g. from a migrated Sent folder)."""
        profile = self.profile(normalize_user(account))
        new = {normalize_user(a) for a in addresses} - profile.correspondents
        profile.correspondents |= new
        now = self.clock()
        self.persist.write(lambda c: db.add_correspondents(c, profile.account, new, now))

    # -- holds ----------------------------------------------------------------------------
    def is_held(self, account: Account | str) -> bool:
        address = account if isinstance(account, str) else account.address
        return normalize_user(address) in self.holds

    def hold(self, account: Account, reason: str, *, score: float = 0.0, ip: str = "",
             source: str = "detector") -> None:
        address = normalize_user(account.address)
        if address in self.holds:
            return
        now = self.clock()
        self.holds[address] = db.Hold(account.id, address, now, reason, source)

        def txn(c: Any) -> None:
            from ..store import queue as q
            db.set_hold(c, account.id, address, now, reason, source)
            q.hold_account(c, account.id, True)

        self.persist.write_now(txn, None)  # rare, and must be visible to the CLI at once
        self.alert("account-held", address, ip,
                   f"Outgoing mail of {address} is held: {reason} (score {score:.1f}). "
                   f"Review with `keepmail account held {address}`, then `keepmail account "
                   f"release {address}` or `... discard`.",
                   {"score": round(score, 2), "reason": reason}, tell_user=True)

    def release(self, account: Account, *, write: bool = True) -> None:
        """The admin vouches for the account: its current network and program become
        the user's own, the recent window is forgotten, queued mail goes out."""
        address = normalize_user(account.address)
        self.holds.pop(address, None)
        profile = self.profile(address, account.id)
        now = self.clock()
        for s in profile.recent:
            s.unusual = False
        for table in (profile.networks, profile.clients):
            for entry in table.values():
                if now - entry[1] < DAY:
                    entry[0] = min(entry[0], now - DAY)
                    entry[2] = max(entry[2], 3.0)
        profile.recent.clear()

        def txn(c: Any) -> None:
            from ..store import queue as q
            db.clear_hold(c, account.id)
            q.hold_account(c, account.id, False)

        if write:
            self.persist.write_now(txn, None)
        self._save(profile, now)

    def _held_now(self, account: Account) -> bool:
        """The hold table is the truth (the CLI holds and releases while we run)."""
        address = normalize_user(account.address)
        if self.store is None:
            return address in self.holds
        row = self.persist.read(lambda c: c.execute(
            "SELECT account_id, address, since, reason, source FROM abuse_holds"
            " WHERE account_id = ?", (account.id,)).fetchone(), None)
        if row is not None and address not in self.holds:
            self.holds[address] = db.Hold(row[0], row[1], row[2], row[3], row[4])
        elif row is None and address in self.holds:
            self.release(account, write=False)   # released by `keepmail account release`
        return row is not None

    # -- scoring ----------------------------------------------------------------------
    def score(self, profile: Profile, sent: Sent, raw: bytes, now: float,
              unusual: list[str]) -> Assessment:
        """Points; `hold_score` (6 by default) holds the account.

        volume = first-time recipients an hour / allowance + novelty-weighted
                 messages an hour / allowance + half of first-time recipients a
                 day / allowance. Allowances are 1.5 x the account's own busiest
                 hour or day, but never below a floor; mail from a new network or
                 program is measured against the floor alone (a new place has no
                 baseline of its own).
        context = 1 + 1.0 (new network) + 0.75 (new program) + 1.5 (logins
                  from 3+ new networks in 6 hours).
        score = 2 x context x volume + bounce points + content points.
        """
        found = Assessment(0.0)
        weight_peak, new_peak, day_peak = profile.peaks(now)
        usual = not unusual
        a_new = max(FLOOR_NEW_HOUR, 1.5 * new_peak) if usual else FLOOR_NEW_HOUR
        a_weight = max(FLOOR_WEIGHT_HOUR, 1.5 * weight_peak) if usual else FLOOR_WEIGHT_HOUR
        a_day = max(FLOOR_NEW_DAY, 1.5 * day_peak) if usual else FLOOR_NEW_DAY
        w_hour, new_hour = profile.window(now, HOUR, unusual_only=not usual)
        _w_day, new_day = profile.window(now, DAY, unusual_only=not usual)
        w_hour, new_hour, new_day = w_hour + sent.weight, new_hour + sent.new, \
            new_day + sent.new
        volume = new_hour / a_new + w_hour / a_weight + 0.5 * new_day / a_day
        context = 1.0 + sum({"new network": 1.0, "new program": 0.75,
                             "logins from many new networks": 1.5}[u] for u in unusual)
        found.score = 2.0 * context * volume
        if volume >= 0.5:
            found.reasons.append(f"{int(new_hour)} first-time recipients and "
                                 f"{w_hour:.0f} new-contact messages in the last hour")
        found.reasons += [f"{u}" for u in unusual]
        found.score += self._bounce_points(profile, now, found)
        found.score += self._content_points(raw, found)
        return found

    def _describe(self, profile: Profile, remote: list[str], raw: bytes, ip: str,
                  software: str, now: float) -> tuple[Sent, list[str]]:
        new = [r for r in remote if r not in profile.correspondents]
        if not remote:
            weight = 0.0
        elif not new:
            weight = KNOWN_WEIGHT
        else:
            weight = max(KNOWN_WEIGHT, len(new) / len(remote))
        unusual = []
        if not self._learning(profile, now):
            if not profile.established(profile.networks, network_of(ip), now):
                unusual.append("new network")
            if not profile.established(profile.clients, client_identity(software), now):
                unusual.append("new program")
        if self._many_new_logins(profile, now):
            unusual.append("logins from many new networks")
        return Sent(now, len(remote), len(new), weight, bool(unusual)), unusual

    def _many_new_logins(self, profile: Profile, now: float) -> bool:
        nets = {n for t, n in profile.logins if now - t <= 6 * HOUR
                and not profile.established(profile.networks, n, now)}
        return len(nets) >= 3

    def _bounce_points(self, profile: Profile, now: float, found: Assessment) -> float:
        results = [f for t, f in profile.results if now - t <= DAY]
        if len(results) < 5:
            return 0.0
        rate = sum(results) / len(results)
        if rate <= 0.1:
            return 0.0
        found.reasons.append(f"{rate:.0%} of {len(results)} recent recipients bounced")
        return min(4.0, 10.0 * (rate - 0.1))

    def _content_points(self, raw: bytes, found: Assessment) -> float:
        if self.content_score is None:
            return 0.0
        try:
            spam = float(self.content_score(raw))
        except Exception:  # a classifier failure must not stop mail
            return 0.0
        if spam <= 0.5:
            return 0.0
        found.reasons.append(f"content looks like spam ({spam:.2f})")
        return 8.0 * (spam - 0.5)

    def _check_bounces(self, profile: Profile, now: float) -> None:
        """Bounces arrive after delivery: an account whose mail bounces in bulk is
        held between submissions too."""
        found = Assessment(0.0)
        points = self._bounce_points(profile, now, found)
        if points >= 4.0 and profile.account_id is not None and not self._learning(profile,
                                                                                  now):
            from ..store.models import Account
            acct = Account(profile.account_id, profile.account, 0, "", False, False, 0)
            self.hold(acct, "; ".join(found.reasons), score=points)

    def _threshold(self, profile: Profile, now: float) -> float:
        hold = self.settings.hold_score
        return 2 * hold if self._learning(profile, now) else hold

    def _learning(self, profile: Profile, now: float) -> bool:
        return now - profile.first_seen < LEARNING_DAYS * DAY or \
            profile.messages < LEARNING_MESSAGES

    # -- limits -----------------------------------------------------------------------
    def limits(self, address: str) -> Limits:
        cached = self._limits.get(address)
        now = time.monotonic()
        if cached and now - cached[0] < LIMIT_CACHE_SECONDS:
            return cached[1]
        s = self.settings
        values = {n: int(getattr(s, n)) for n in LIMIT_NAMES}
        domain = "@" + address.rpartition("@")[2]
        for scope in (domain, address):
            values.update(self.persist.read(lambda c, sc=scope: db.get_limits(c, sc), {}))
        found = Limits(**{n: values[n] for n in LIMIT_NAMES})
        self._limits[address] = (now, found)
        return found

    def _over_limit(self, profile: Profile, address: str, remote: list[str],
                    now: float) -> Decision | None:
        if not remote:
            return None
        lim = self.limits(address)
        new = sum(1 for r in remote if r not in profile.correspondents)
        hour, _ = profile.count(now, HOUR)
        day, new_day = profile.count(now, DAY)
        checks = [
            (lim.max_recipients_per_message, len(remote) - 1,
             f"at most {lim.max_recipients_per_message} outside recipients per message"),
            (lim.max_messages_per_hour, hour,
             f"at most {lim.max_messages_per_hour} messages an hour"),
            (lim.max_messages_per_day, day,
             f"at most {lim.max_messages_per_day} messages a day"),
            (lim.max_new_recipients_per_day, new_day + new - 1,
             f"at most {lim.max_new_recipients_per_day} first-time recipients a day"),
        ]
        for limit, used, text in checks:
            if limit and used >= limit:
                return self._refuse(address, text)
        return None

    def _refuse(self, address: str, text: str) -> Decision:
        reply = f"Sending limit reached ({text}); try again later or ask your administrator"
        profile = self.profiles[address]
        now = self.clock()
        last = getattr(profile, "_limit_alert", -1e18)
        if now - last > HOUR:  # one alert per hour and account, not one per refusal
            profile._limit_alert = now  # type: ignore[attr-defined]
            self.alert("limit-reached", address, "", f"{address} reached a sending limit: "
                       f"{text}.", {"limit": text})
        return Decision(TEMPFAIL, reply, (text,))

    def _while_held(self, profile: Profile, remote: list[str], now: float) -> Decision:
        held = sum(1 for s in profile.recent if s.held)
        if held >= self.settings.held_message_cap:
            return Decision(TEMPFAIL, "Your outgoing mail is on hold pending review by your "
                            "administrator", ("account held",))
        profile.add(Sent(now, len(remote), 0, 0.0, True, held=True))
        return Decision(HOLD, "", ("account held",))

    # -- profiles -----------------------------------------------------------------------
    def profile(self, address: str, account_id: int | None = None) -> Profile:
        p = self.profiles.get(address)
        if p is None:
            p = self._load(address) or Profile(address, self.clock())
            self.profiles[address] = p
        if account_id is not None:
            p.account_id = account_id
            self._ids[account_id] = address
        return p

    def _load(self, address: str) -> Profile | None:
        data = self.persist.read(lambda c: db.load_profile(c, address), None)
        if data is None:
            return None
        p = Profile.from_json(address, data)
        since = self.clock() - 365 * DAY
        p.correspondents = self.persist.read(
            lambda c: db.load_correspondents(c, address, since), set())
        return p

    def _learn(self, profile: Profile, sent: Sent, remote: list[str], ip: str,
               software: str, now: float) -> None:
        profile.add(sent)
        if not sent.held:
            profile.see(profile.networks, network_of(ip), now)
            profile.see(profile.clients, client_identity(software), now)
            fresh = [r for r in remote if r not in profile.correspondents]
            profile.correspondents.update(fresh)
            if fresh:
                self.persist.write(lambda c: db.add_correspondents(c, profile.account,
                                                                   fresh, now))
        self._save(profile, now)

    def _save(self, profile: Profile, now: float) -> None:
        if self.store is not None:
            data = profile.to_json()
            self.persist.write(lambda c: db.save_profile(c, profile.account, data, now))

    def _address_of(self, account: Account | int | str) -> str | None:
        if isinstance(account, str):
            return normalize_user(account)
        if isinstance(account, int):
            found = self._ids.get(account)
            if found is None:
                row = self.persist.read(lambda c: c.execute(
                    "SELECT address FROM accounts WHERE id = ?", (account,)).fetchone(), None)
                found = row[0] if row else None
            return found
        return normalize_user(account.address)


def software_of(raw: bytes) -> str:
    """The mail program, from the fields most programs add."""
    block = mailmsg.header_block(raw)
    for name in ("User-Agent", "X-Mailer"):
        value = mailmsg.header(raw, name, block)
        if value:
            return value.strip()
    return ""
