"""TOTP second factor (RFC 6238) for console logins: enrollment, checks, storage.

Secrets are kept in the `web_totp` table encrypted with AES-256-GCM under a
key derived from keepmail's storage key, so a copy of the database alone does
not yield them (the same rule as mail at rest). A code is accepted once: the
last time step used is remembered, so a code seen over a shoulder or in a
log cannot be replayed within its 30 seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyotp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..store import Store, migrations

SCHEMA = [
    """
    CREATE TABLE web_totp (
        account_id INTEGER PRIMARY KEY,
        secret TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 0,
        last_step INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    )
    """,
]
migrations.register("web_totp", SCHEMA)

ISSUER = "keepmail"
STEP = 30


@dataclass(frozen=True)
class TotpState:
    secret: str
    enabled: bool
    last_step: int


class TotpStore:
    def __init__(self, store: Store, storage_key: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._aead = AESGCM(hmac.new(storage_key, b"keepmail web totp v1",
                                     hashlib.sha256).digest())

    # -- sealing -----------------------------------------------------------------
    def _seal(self, account_id: int, secret: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), str(account_id).encode())
        return base64.b64encode(nonce + sealed).decode()

    def _open(self, account_id: int, text: str) -> str:
        raw = base64.b64decode(text)
        return self._aead.decrypt(raw[:12], raw[12:], str(account_id).encode()).decode()

    # -- reading -----------------------------------------------------------------
    def get(self, account_id: int) -> TotpState | None:
        row = self.store.read_now(lambda c: c.execute(
            "SELECT secret, enabled, last_step FROM web_totp WHERE account_id = ?",
            (account_id,)).fetchone())
        if row is None:
            return None
        return TotpState(self._open(account_id, row[0]), bool(row[1]), int(row[2]))

    def enabled(self, account_id: int) -> bool:
        state = self.get(account_id)
        return bool(state and state.enabled)

    # -- changing ----------------------------------------------------------------
    async def begin(self, account_id: int) -> str:
        """A new, not yet enabled secret (replacing an unconfirmed one)."""
        secret = pyotp.random_base32()
        sealed = self._seal(account_id, secret)

        def txn(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO web_totp(account_id, secret, enabled, created)"
                      " VALUES (?, ?, 0, ?) ON CONFLICT(account_id) DO UPDATE SET"
                      " secret = excluded.secret, enabled = 0, last_step = 0,"
                      " created = excluded.created",
                      (account_id, sealed, self.clock()))

        await self.store.write(txn)
        return secret

    async def verify(self, account_id: int, code: str, *, enrolling: bool = False) -> bool:
        """Check a code (and enable the secret when enrolling); each step works once."""
        state = self.get(account_id)
        if state is None or state.enabled == enrolling:
            return False
        step = self._matching_step(state, code.strip().replace(" ", ""))
        if step is None:
            return False
        await self.store.write(lambda c: c.execute(
            "UPDATE web_totp SET last_step = ?, enabled = 1 WHERE account_id = ?",
            (step, account_id)))
        return True

    def _matching_step(self, state: TotpState, code: str) -> int | None:
        if not (code.isdigit() and len(code) == 6):
            return None
        totp = pyotp.TOTP(state.secret)
        now_step = int(self.clock() // STEP)
        for step in (now_step - 1, now_step, now_step + 1):   # one step of clock drift
            if step > state.last_step and hmac.compare_digest(totp.at(step * STEP), code):
                return step
        return None

    async def disable(self, account_id: int) -> None:
        await self.store.write(lambda c: c.execute(
            "DELETE FROM web_totp WHERE account_id = ?", (account_id,)))


def provisioning_uri(secret: str, address: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=address, issuer_name=ISSUER)
