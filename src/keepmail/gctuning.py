"""One process-wide garbage-collector setting for serving mail.

The servers allocate many small containers per message (SMTP sessions, the flight
recorder's pending events, IMAP FETCH/SEARCH over thousands of cached headers). With
CPython's default first threshold (700) the collector ran every few dozen messages and
often traversed the whole heap: ~4% of the CPU of bench/mx_bench.py and up to ~40% of
a first IMAP `SEARCH FROM` over 5,000 messages. A larger first threshold makes every
generation's collections that much rarer, for a few more MB of young objects at most.
"""

from __future__ import annotations

import gc

FIRST_THRESHOLD = 10_000
_tuned = False


def tune_for_serving() -> None:
    """Raise the first threshold once per process (called when a listener starts)."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    first, second, third = gc.get_threshold()
    if first:  # 0: collection disabled by someone; leave it so
        gc.set_threshold(max(first, FIRST_THRESHOLD), second, third)
