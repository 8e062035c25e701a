"""DKIM keys per domain: creation, rotation, retirement, DNS records to publish.

Each generation is a pair of keys with sibling selectors, `k<date>r` (RSA 2048,
rsa-sha256) and `k<date>e` (Ed25519, RFC 8463); mail is dual-signed so
receivers that do not know Ed25519 still verify the RSA signature (RFC 8463 5).
Private keys live in <data_dir>/keys/dkim/<domain>/<selector>.pem (mode 0600);
their metadata in the `dkim_keys` table. Rotation (RFC 6376 3.1 suggests it
is routine) adds a generation that signs from `active_from`; older ones stay
published until `retire`, so mail signed just before a rotation still
verifies while in transit.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..mailauth.dkim_sign import PrivateKey, SigningKey, load_private_key, public_record
from ..store import Store, migrations

SCHEMA = [
    """
    CREATE TABLE dkim_keys (
        id INTEGER PRIMARY KEY,
        domain TEXT NOT NULL,
        selector TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        generation TEXT NOT NULL,
        created REAL NOT NULL,
        active_from REAL NOT NULL,
        retired REAL,
        UNIQUE(domain, selector)
    )
    """,
]
migrations.register("dkim", SCHEMA)

CACHE_SECONDS = 60.0


class DkimError(Exception):
    """A DKIM key operation refused, worded for the operator."""


@dataclass(frozen=True)
class KeyInfo:
    domain: str
    selector: str
    algorithm: str
    generation: str
    created: float
    active_from: float
    retired: float | None

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def _info(row: sqlite3.Row) -> KeyInfo:
    return KeyInfo(row["domain"], row["selector"], row["algorithm"], row["generation"],
                   row["created"], row["active_from"], row["retired"])


class DkimKeys:
    def __init__(self, store: Store, *, activate_after: float = 0.0) -> None:
        self.store = store
        self.directory = store.data_dir / "keys" / "dkim"
        self.activate_after = activate_after   # seconds
        self._cache: dict[str, tuple[float, list[SigningKey]]] = {}
        # Parsed private keys by (domain, selector): a selector is never reused, and
        # parsing an RSA key (with its consistency check) stalls the loop for ms.
        self._parsed: dict[tuple[str, str], PrivateKey] = {}

    # -- reading -----------------------------------------------------------------
    def list(self, domain: str | None = None) -> list[KeyInfo]:
        sql = "SELECT * FROM dkim_keys" + (" WHERE domain = ?" if domain else "")
        rows = self.store.read_now(lambda c: c.execute(
            sql + " ORDER BY domain, created, selector", (domain.lower(),) if domain else ()
        ).fetchall())
        return [_info(r) for r in rows]

    def signing_keys(self, domain: str, now: float | None = None) -> list[SigningKey]:
        """The keys that sign for domain now: the newest active key of each algorithm."""
        domain = domain.lower().rstrip(".")
        now = time.time() if now is None else now
        cached = self._cache.get(domain)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        newest: dict[str, KeyInfo] = {}
        for info in self.list(domain):
            if info.retired is None and info.active_from <= now:
                newest[info.algorithm] = info   # list() is ordered oldest first
        keys = [SigningKey(domain, i.selector, self._load(i)) for i in newest.values()]
        self._cache[domain] = (time.monotonic() + CACHE_SECONDS, keys)
        return keys

    def _path(self, domain: str, selector: str) -> Path:
        return self.directory / domain / f"{selector}.pem"

    def _load(self, info: KeyInfo) -> PrivateKey:
        key = self._parsed.get((info.domain, info.selector))
        if key is None:
            key = load_private_key(self._path(info.domain, info.selector).read_bytes())
            self._parsed[(info.domain, info.selector)] = key
        return key

    def dns_records(self, domain: str) -> list[tuple[str, str, str]]:
        """(name, "TXT", value) for every key of domain not retired."""
        out = []
        for info in self.list(domain):
            if info.retired is None:
                out.append((info.dns_name, "TXT", public_record(self._load(info))))
        return out

    # -- changing ----------------------------------------------------------------
    def ensure(self, domain: str) -> list[KeyInfo]:
        """Create the first generation for domain if it has no key yet."""
        current = [i for i in self.list(domain) if i.retired is None]
        current = current or self.rotate(domain, activate_after=0.0)
        # Parse the keys now, at start-up, rather than on the first message (an RSA
        # key's consistency check takes tens of milliseconds of the event loop).
        self.signing_keys(domain)
        return current

    def rotate(self, domain: str, *, activate_after: float | None = None,
               now: float | None = None) -> list[KeyInfo]:
        """A new generation (RSA + Ed25519); it signs after activate_after seconds."""
        domain = domain.lower().rstrip(".")
        now = time.time() if now is None else now
        delay = self.activate_after if activate_after is None else activate_after
        generation = self._new_generation(domain, now)
        keys: list[tuple[str, str, PrivateKey]] = [
            (generation + "r", "rsa-sha256", rsa.generate_private_key(65537, 2048)),
            (generation + "e", "ed25519-sha256", ed25519.Ed25519PrivateKey.generate()),
        ]
        for selector, _alg, key in keys:
            _write_private(self._path(domain, selector), key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))

        def txn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO dkim_keys(domain, selector, algorithm, generation, created,"
                " active_from) VALUES (?, ?, ?, ?, ?, ?)",
                [(domain, s, alg, generation, now, now + delay) for s, alg, _k in keys])

        self.store.write_sync(txn)
        self._cache.pop(domain, None)
        return [i for i in self.list(domain) if i.generation == generation]

    def _new_generation(self, domain: str, now: float) -> str:
        base = "k" + dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%d")
        taken = {i.generation for i in self.list(domain)}
        for suffix in ["", *"bcdefghijklmnopqrstuvwxyz"]:
            if base + suffix not in taken:
                return base + suffix
        raise DkimError(f"too many DKIM rotations today for {domain}")

    def retire(self, domain: str, selector: str, now: float | None = None) -> list[KeyInfo]:
        """Stop publishing and using a key (a selector or a whole generation)."""
        domain = domain.lower().rstrip(".")
        live = [i for i in self.list(domain) if i.retired is None]
        chosen = [i for i in live if selector in (i.selector, i.generation)]
        if not chosen:
            raise DkimError(f"{domain} has no key {selector!r} in use; see `keepmail dkim "
                            f"list {domain}`")
        left = {i.algorithm for i in live if i not in chosen}
        if any(i.algorithm not in left for i in chosen):
            raise DkimError(f"{selector} holds the last key of its kind for {domain}: run `keepmail dkim "
                            f"rotate {domain}` first, publish the new record, then retire")
        when = time.time() if now is None else now
        self.store.write_sync(lambda c: c.executemany(
            "UPDATE dkim_keys SET retired = ? WHERE domain = ? AND selector = ?",
            [(when, domain, i.selector) for i in chosen]))
        for info in chosen:
            self._path(domain, info.selector).unlink(missing_ok=True)
            self._parsed.pop((domain, info.selector), None)
        self._cache.pop(domain, None)
        return chosen


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def dns_records(store: Store, domain: str) -> list[tuple[str, str, str]]:
    """The DKIM TXT records to publish for domain (for `keepmail init` and the web)."""
    return DkimKeys(store).dns_records(domain)


def ensure_keys(store: Store, domain: str) -> list[KeyInfo]:
    return DkimKeys(store).ensure(domain)
