"""The store: the one object the rest of keepmail talks to for persistent state.

It owns the database (with group commit), the blob cipher and the change hub.
Small operations are module functions taking a connection (accounts.py,
mail.py, ...) run through `write`/`read`; operations that need encryption or
notifications are methods here. The SQL modules are the backend boundary: a
PostgreSQL backend replaces them and `Database`, not their callers.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from . import blobs, mail, migrations
from . import schema as _schema  # noqa: F401  (registers the core migrations)
from .changes import ChangeHub
from .db import Database, connect
from .models import Placement

T = TypeVar("T")

# Encrypt in a worker thread above this size, so one big message does not
# stall every other session on the event loop.
_THREAD_SEAL_SIZE = 1024 * 1024


def migrate(db_path: Path) -> dict[str, int]:
    """Create or upgrade the schema before any writer starts."""
    conn = connect(db_path)
    try:
        return migrations.migrate(conn)
    finally:
        conn.close()


@dataclass(frozen=True)
class Copy:
    """One mailbox a delivered message goes to."""

    account_id: int
    mailbox_id: int
    mailbox_name: str
    flags: frozenset[str] = frozenset()


class Store:
    def __init__(self, data_dir: Path, key_file: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir = data_dir
        self.db_path = data_dir / "keepmail.db"
        self.cipher = blobs.BlobCipher(blobs.load_or_create_key(key_file))
        migrate(self.db_path)
        self.db = Database(self.db_path)
        self.hub = ChangeHub()

    @classmethod
    def open(cls, data_dir: Path, key_file: Path | None = None) -> Store:
        return cls(data_dir, key_file or data_dir / "keys" / "storage.key")

    def close(self) -> None:
        self.db.close()

    def ensure_schema(self) -> None:
        """Migrate components whose modules registered after this store opened."""
        migrate(self.db_path)

    # -- generic access -----------------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.db.write(fn)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.db.write_sync(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.db.read(fn)

    def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.db.read_now(fn)

    # -- messages -------------------------------------------------------------
    async def seal(self, raw: bytes) -> blobs.SealedBlob | blobs.PlainBlob:
        """Prepare bytes for blobs.insert: a large blob is encrypted now, in a thread;
        a small one is encrypted inside its transaction (then its id is sequential)."""
        if len(raw) > _THREAD_SEAL_SIZE:
            return await asyncio.to_thread(self.cipher.seal, raw)
        return blobs.PlainBlob(raw, self.cipher)

    async def deliver(self, raw: bytes, copies: Iterable[Copy], *, trace_id: str = "",
                      message_id: str = "", internaldate: float | None = None,
                      extra: Callable[[sqlite3.Connection, int], None] | None = None,
                      ) -> list[Placement]:
        """Store one message into several mailboxes, sharing one encrypted blob.

        Returns only after the blob and every row are durably committed.
        `extra(conn, blob_id)` runs in the same transaction (e.g. queue rows).
        """
        copies = list(copies)
        blob = await self.seal(raw)
        when = internaldate or time.time()

        def txn(conn: sqlite3.Connection) -> list[Placement]:
            sealed = blobs.insert(conn, blob, len(copies), when)
            placed = []
            for c in copies:
                uid, _ = mail.add_message(conn, c.mailbox_id, sealed.id, sealed.size,
                                          flags=c.flags, internaldate=when, trace_id=trace_id,
                                          message_id=message_id)
                placed.append(Placement(c.account_id, c.mailbox_id, c.mailbox_name, uid))
            if extra is not None:
                extra(conn, sealed.id)
            return placed

        placed = await self.db.write(txn)
        self.hub.publish(*{p.mailbox_id for p in placed})
        return placed

    async def store_blob(self, raw: bytes, refs: int,
                         extra: Callable[[sqlite3.Connection, int], T]) -> T:
        """Store an encrypted blob with `refs` references taken by `extra` in one transaction."""
        blob = await self.seal(raw)

        def txn(conn: sqlite3.Connection) -> T:
            return extra(conn, blobs.insert(conn, blob, refs, time.time()).id)

        return await self.db.write(txn)

    async def read_blob(self, blob_id: int, start: int = 0, end: int | None = None) -> bytes:
        return await self.db.read(lambda c: blobs.read(c, self.cipher, blob_id, start, end))

    def read_blob_now(self, blob_id: int, start: int = 0, end: int | None = None) -> bytes:
        return blobs.read(self.db.reader(), self.cipher, blob_id, start, end)

    async def change(self, mailbox_ids: Iterable[int],
                     fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write that changes mailboxes, then wake their watchers."""
        result = await self.db.write(fn)
        self.hub.publish(*mailbox_ids)
        return result
