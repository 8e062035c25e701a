"""Checking an account's password (main or app password) without burning CPU.

argon2 is slow on purpose; a busy mail client logs in again every few
minutes, so a successful check is remembered for a short while under a keyed
hash of (address, password). Failures are never cached: throttling them is the
abuse guard's job, not this cache's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time

from . import accounts
from .models import Account
from .passwords import DUMMY_HASH, verify_password
from .store import Store


class Authenticator:
    def __init__(self, store: Store, cache_seconds: float = 300.0) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, int]] = {}
        self._cache_key = secrets.token_bytes(32)

    def _fingerprint(self, address: str, password: str) -> bytes:
        msg = accounts.normalize_address(address).encode() + b"\0" + password.encode()
        return hmac.new(self._cache_key, msg, hashlib.sha256).digest()

    async def authenticate(self, address: str, password: str) -> Account | None:
        """The enabled account these credentials log in, or None."""
        found = self.store.read_now(lambda c: accounts.password_hashes(c, address))
        if found is None:
            await asyncio.to_thread(verify_password, DUMMY_HASH, password)
            return None
        account, hashes = found
        if account.disabled:
            return None
        fp = self._fingerprint(address, password)
        cached = self._cache.get(fp)
        if cached and cached[0] > time.monotonic() and cached[1] == account.id:
            return account
        ok = await asyncio.to_thread(_any_matches, hashes, password)
        if not ok:
            return None
        self._remember(fp, account.id)
        return account

    def _remember(self, fp: bytes, account_id: int) -> None:
        now = time.monotonic()
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[fp] = (now + self.cache_seconds, account_id)

    def forget(self) -> None:
        """Drop cached successes (after a password change)."""
        self._cache.clear()


def _any_matches(hashes: list[str], password: str) -> bool:
    return any(verify_password(h, password) for h in hashes)
