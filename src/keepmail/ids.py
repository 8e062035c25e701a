"""Fast unpredictable identifiers and nonces.

os.urandom costs tens of microseconds per call on some virtual machines (it
was 80 µs on our benchmark host), and a busy MX needs several random values
per message (trace ids, blob ids, AES-GCM nonces). Keyed BLAKE2b over a
counter is a PRF: its outputs are as unpredictable as the 256-bit key drawn
once from the OS, and never repeat while the counter does not, which is all
a GCM nonce needs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading

_lock = threading.Lock()
_key = os.urandom(32)
_counter = itertools.count()
_pid = os.getpid()


def _reseed_after_fork() -> None:
    # A forked child must not replay its parent's stream.
    global _key, _counter, _pid
    _key, _counter, _pid = os.urandom(32), itertools.count(), os.getpid()


os.register_at_fork(after_in_child=_reseed_after_fork)


def random_bytes(n: int) -> bytes:
    """n (≤ 64) unpredictable bytes."""
    with _lock:
        index = next(_counter)
    return hashlib.blake2b(index.to_bytes(16, "little"), key=_key, digest_size=n).digest()


def token_hex(n: int = 8) -> str:
    return random_bytes(n).hex()


def randbits(bits: int) -> int:
    return int.from_bytes(random_bytes((bits + 7) // 8), "big") >> (-bits % 8)
