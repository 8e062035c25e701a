"""AuthGuard and OutboundGuard units: persistence, unblock, limits, holds, alerts."""

from __future__ import annotations

import time
from pathlib import Path

from keepmail.abuse.authguard import AuthGuard
from keepmail.abuse.outguard import OutboundGuard
from keepmail.abuse.settings import AbuseSection
from keepmail.abuse.simulate import SimClock
from keepmail.store import Store, accounts
from keepmail.store import abuse as db
from keepmail.store import queue as q
from keepmail.store.models import Account

ALICE = Account(1, "alice@a.test", 1, "", False, False, 0)


def _store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "data")
    store.ensure_schema()
    return store


def test_throttle_survives_restart_and_unblock(tmp_path: Path) -> None:
    store = _store(tmp_path)
    clock = SimClock(time.time())
    guard = AuthGuard(store=store, clock=clock)
    for _ in range(12):
        guard.check("192.0.2.9", "alice@a.test")
        guard.failure("192.0.2.9", "alice@a.test")
    wait = guard.check("192.0.2.9", "alice@a.test")
    assert wait is not None and wait > 60
    store.write_sync(lambda c: None)            # let write-behind land
    again = AuthGuard(store=store, clock=clock)
    assert again.check("192.0.2.9", "alice@a.test") is not None
    # Unblocking the IP lifts its counters, not the account's (other IPs guessed too).
    store.write_sync(lambda c: db.save_throttle(c, db.ThrottleRow(
        "unblock", "192.0.2.9", 0.0, clock.t + 1, 0.0, 0)))
    clock.t += 2
    assert again.check("192.0.2.9", "alice@a.test") is not None
    store.write_sync(lambda c: db.save_throttle(c, db.ThrottleRow(
        "unblock", "alice@a.test", 0.0, clock.t + 1, 0.0, 0)))
    clock.t += 2
    assert again.check("192.0.2.9", "alice@a.test") is None
    store.close()


def test_usual_ip_never_locked_out() -> None:
    clock = SimClock()
    guard = AuthGuard(clock=clock)
    guard.success("198.51.100.7", "alice@a.test")
    for i in range(200):
        guard.check(f"10.0.{i}.1", "alice@a.test")
        guard.failure(f"10.0.{i}.1", "alice@a.test")
    assert guard.check("10.0.250.1", "alice@a.test") is not None
    assert guard.check("198.51.100.7", "alice@a.test") is None
    assert guard.check("198.51.100.99", "alice@a.test") is None   # same /24: home router


def test_limits_tempfail_and_alert() -> None:
    clock = SimClock()
    guard = OutboundGuard(AbuseSection(max_messages_per_hour=3, detect=False), clock=clock)
    got = []
    for i in range(5):
        clock.t += 10
        got.append(guard.check(ALICE, [f"x{i}@b.test"], b"Subject: x\r\n\r\n", "192.0.2.1"))
    assert [d.action for d in got] == ["allow"] * 3 + ["tempfail"] * 2
    assert got[3].smtp() is not None and got[3].smtp()[0] == 451
    assert "3 messages an hour" in got[3].reply
    big = guard.check(ALICE, [f"y{i}@b.test" for i in range(300)], b"", "192.0.2.1")
    assert big.action == "tempfail"


def test_hold_holds_queue_and_release(tmp_path: Path) -> None:
    store = _store(tmp_path)
    acct = store.write_sync(lambda c: (accounts.add_domain(c, "a.test"),
                                       accounts.add_account(c, "alice@a.test", "x"))[1])
    guard = OutboundGuard(store=store)
    guard.hold(acct, "test hold", source="admin")
    assert guard.is_held(acct)
    decision = guard.check(acct, ["z@b.test"], b"Subject: x\r\n\r\n", "192.0.2.1")
    assert decision.held
    assert store.read_now(db.list_holds)[0].address == "alice@a.test"
    store.write_sync(lambda c: None)            # let write-behind land
    assert store.read_now(lambda c: db.list_alerts(c))[0].kind == "account-held"
    store.write_sync(lambda c: db.clear_hold(c, acct.id))      # `keepmail account release`
    assert guard.check(acct, ["z@b.test"], b"Subject: x\r\n\r\n", "192.0.2.1").allowed
    assert store.read_now(q.count) == (0, 0)
    store.close()
