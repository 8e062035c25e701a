"""Abuse-guard simulation: a normal month, hijacked accounts, password guessing.

Prints, per seed: the measured week's messages, holds and limit refusals; how
many spam messages left each hijacked account before it was held (a bot with
no mail-program identity, and one copying the victim's program); and the
guess rate per account under brute force from 1 and from 50 IPs, with
whether the real user could still log in. Run: python bench/abuse_sim.py [seeds]
"""

from __future__ import annotations

import copy
import logging
import sys
import time

from keepmail.abuse.simulate import Org, attack, brute_force


def main(seeds: int = 5) -> None:
    logging.getLogger("keepmail.abuse").setLevel(logging.ERROR)
    worst_left, total_holds = 0, 0
    for seed in range(seeds):
        started = time.perf_counter()
        org = Org(seed)
        week = org.run()
        total_holds += len(week.holds)
        print(f"seed {seed}: normal week {week.messages} messages to {week.recipients} "
              f"recipients, {len(week.holds)} holds, {week.tempfails} limit refusals "
              f"(warm-up holds {week.warmup_holds}) [{time.perf_counter() - started:.1f}s]")
        for user in org.users[:4]:
            plain = attack(copy.deepcopy(org), user)
            mimic = attack(copy.deepcopy(org), user, mimic_program=True)
            worst_left = max(worst_left, plain.left_before_hold, mimic.left_before_hold)
            print(f"  hijacked {user.address:22} 1,000 spam: held after {plain.left_before_hold}"
                  f" left (bot), {mimic.left_before_hold} left (copying the user's program)")
    print(f"TOTAL holds in normal weeks: {total_holds}; most spam out before a hold: "
          f"{worst_left}")
    for ips in (1, 50):
        r = brute_force(ips)
        print(f"brute force from {ips:2} IP(s): {r.guesses} guesses took {r.hours:.0f} h, "
              f"at most {r.max_per_hour} per hour; real user refused {r.user_refused} of "
              f"{r.user_logins} logins from their usual IP")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
