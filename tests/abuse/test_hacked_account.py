"""Hacked-account detection and brute force, on a simulated clock (no sockets)."""

from __future__ import annotations

import copy
import logging

import pytest

from keepmail.abuse.simulate import Org, attack, brute_force


@pytest.fixture(scope="module")
def org() -> Org:
    logging.getLogger("keepmail.abuse").setLevel(logging.ERROR)
    org = Org(seed=7)
    org.run()
    return org


def test_normal_week_no_holds(org: Org) -> None:
    week = org.result
    print(f"normal week: {week.messages} messages, {len(week.holds)} holds, "
          f"{week.tempfails} limit refusals")
    assert week.messages > 500
    assert week.holds == []
    assert week.tempfails == 0


@pytest.mark.parametrize("mimic", [False, True])
def test_stolen_password_held_within_ten(org: Org, mimic: bool) -> None:
    for user in org.users[:4]:
        result = attack(copy.deepcopy(org), user, mimic_program=mimic)
        print(f"{user.address}: held after {result.left_before_hold} left ({result.reasons})")
        assert result.held and result.left_before_hold <= 10


@pytest.mark.parametrize("ips", [1, 50])
def test_brute_force_rate_and_real_user(ips: int) -> None:
    r = brute_force(ips)
    print(f"{ips} IPs: {r.guesses} guesses in {r.hours:.0f} h, max {r.max_per_hour}/h, "
          f"user refused {r.user_refused}/{r.user_logins}")
    assert r.guesses == 1000
    assert r.max_per_hour <= 20
    assert r.user_refused == 0
