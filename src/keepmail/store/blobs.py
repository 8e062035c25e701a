"""Message bytes, encrypted at rest with AES-256-GCM.

A blob is split into chunks of CHUNK_SIZE bytes, each sealed with its own
random nonce; the associated data binds a chunk to its blob id, its position
and whether it is the last one, so chunks cannot be swapped, reordered or
truncated unnoticed. Chunks let IMAP read a part of a large message without
decrypting all of it.

Blobs live in the same SQLite file as their metadata: one WAL fsync then makes
the bytes and the rows durable together, which is what lets group commit
acknowledge many messages per fsync (a file per message would need an fsync
per file plus one per directory).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import ids

CHUNK_SIZE = 256 * 1024
NONCE_SIZE = 12

SCHEMA = [
    """
    CREATE TABLE blobs (
        id INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        refs INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE blob_chunks (
        blob_id INTEGER NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (blob_id, idx)
    )
    """,
    # Ids for blobs sealed inside their transaction: ascending and never reused
    # (caches key decrypted headers by blob id, so an id must name one blob forever).
    """
    CREATE TABLE blob_ids (next INTEGER NOT NULL);
    INSERT INTO blob_ids(next) SELECT coalesce(max(id), 0) + 1 FROM blobs
    """,
    # blob_ids.next becomes a floor: every id below it may have been used. A small
    # blob takes max(floor, highest id + 1), read in its INSERT; only deleting a
    # blob at or past the floor moves it. Before, each blob moved the counter: one
    # more write (and WAL page) per message (bench/mx_bench.py, store microbench:
    # ~11 us of ~70 us of SQL per delivery).
    """
    CREATE TRIGGER blobs_id_floor AFTER DELETE ON blobs
    WHEN OLD.id >= (SELECT next FROM blob_ids)
    BEGIN
        UPDATE blob_ids SET next = OLD.id + 1;
    END
    """,
    # A blob of one chunk (most mail) keeps it in its own row: one row in one B-tree
    # per message instead of rows in three (blob_chunks has a key index of its own).
    # Blobs of several chunks keep them all in blob_chunks, data stays NULL.
    """
    ALTER TABLE blobs ADD COLUMN data BLOB
    """,
]

# The id a small blob gets (see SCHEMA): past every id in use and past the floor.
# Read inside the writing transaction, which no other writer can enter meanwhile.
_NEXT_ID = "SELECT max(next, coalesce((SELECT max(id) FROM blobs), 0) + 1) FROM blob_ids"


class BlobCorrupt(Exception):
    """A chunk failed authentication: the data or the key is wrong."""


def load_or_create_key(path: Path) -> bytes:
    """Read the 256-bit storage key, creating it (mode 0600) on first use."""
    if path.exists():
        text = path.read_text().strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ValueError(f"{path}: not a keepmail storage key (expected 64 hex digits)")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def _aad(blob_id: int, idx: int, last: bool) -> bytes:
    return struct.pack(">QIB", blob_id, idx, 1 if last else 0)


@dataclass(frozen=True)
class SealedBlob:
    """A blob encrypted in memory, ready to be inserted by a writer."""

    id: int
    size: int
    chunks: list[bytes]


@dataclass(frozen=True)
class PlainBlob:
    """Bytes to be sealed inside the writing transaction, under the next id in sequence.

    Sequential ids put consecutive messages on the same last pages of the blob
    tables and of messages' blob index; a random id dirtied pages of its own
    (measured at the MX: 18 -> 14 writes per message, fewer WAL bytes to fsync).
    """

    data: bytes
    cipher: BlobCipher


class BlobCipher:
    """Seals and opens chunks with the storage key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, data: bytes, blob_id: int | None = None) -> SealedBlob:
        """Encrypt under blob_id, or under a random 62-bit id drawn here (for a blob
        sealed before its transaction, off the event loop)."""
        # One draw gives the first nonce and the id if needed: most blobs are one
        # chunk, and each draw costs a few microseconds.
        fresh = ids.random_bytes(8 + NONCE_SIZE)
        if blob_id is None:
            blob_id = (int.from_bytes(fresh[:8], "big") >> 2) + 1
        count = max(1, -(-len(data) // CHUNK_SIZE))
        chunks = []
        for idx in range(count):
            part = data[idx * CHUNK_SIZE:(idx + 1) * CHUNK_SIZE] if count > 1 else data
            nonce = fresh[8:] if idx == 0 else ids.random_bytes(NONCE_SIZE)
            aad = _aad(blob_id, idx, idx == count - 1)
            chunks.append(nonce + self._aead.encrypt(nonce, part, aad))
        return SealedBlob(blob_id, len(data), chunks)

    def open_chunk(self, blob_id: int, idx: int, last: bool, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:],
                                      _aad(blob_id, idx, last))
        except Exception as exc:
            raise BlobCorrupt(f"blob {blob_id} chunk {idx} failed authentication") from exc


def insert(conn: sqlite3.Connection, blob: SealedBlob | PlainBlob, refs: int,
           now: float) -> SealedBlob:
    """Store a blob with `refs` references; returns it sealed (with its id)."""
    if isinstance(blob, PlainBlob):
        blob_id = conn.execute(_NEXT_ID).fetchone()[0]
        sealed = blob.cipher.seal(blob.data, blob_id)
    else:
        sealed = blob
    chunks = sealed.chunks
    inline = chunks[0] if len(chunks) == 1 else None  # most mail: see SCHEMA
    conn.execute("INSERT INTO blobs(id, size, refs, created, data) VALUES (?, ?, ?, ?, ?)",
                 (sealed.id, sealed.size, refs, now, inline))
    if inline is None:
        conn.executemany("INSERT INTO blob_chunks(blob_id, idx, data) VALUES (?, ?, ?)",
                         [(sealed.id, i, c) for i, c in enumerate(chunks)])
    return sealed


def add_refs(conn: sqlite3.Connection, blob_id: int, count: int) -> None:
    """Change a blob's reference count; at zero the blob is deleted."""
    conn.execute("UPDATE blobs SET refs = refs + ? WHERE id = ?", (count, blob_id))
    if count < 0:
        conn.execute("DELETE FROM blobs WHERE id = ? AND refs <= 0", (blob_id,))


def size(conn: sqlite3.Connection, blob_id: int) -> int:
    row = conn.execute("SELECT size FROM blobs WHERE id = ?", (blob_id,)).fetchone()
    if row is None:
        raise KeyError(blob_id)
    return int(row[0])


def iter_chunks(conn: sqlite3.Connection, cipher: BlobCipher, blob_id: int,
                start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield the plaintext of bytes [start, end) of a blob, chunk by chunk."""
    row = conn.execute("SELECT size, data FROM blobs WHERE id = ?", (blob_id,)).fetchone()
    if row is None:
        raise KeyError(blob_id)
    total, inline = int(row[0]), row[1]
    end = total if end is None else min(end, total)
    if start >= end:
        return
    count = max(1, -(-total // CHUNK_SIZE))
    first, last = start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
    rows = [(0, inline)] if inline is not None else conn.execute(
        "SELECT idx, data FROM blob_chunks WHERE blob_id = ? AND idx BETWEEN ? AND ?"
        " ORDER BY idx", (blob_id, first, last)).fetchall()
    if len(rows) != last - first + 1:
        raise BlobCorrupt(f"blob {blob_id} is missing chunks")
    for idx, sealed in rows:
        plain = cipher.open_chunk(blob_id, idx, idx == count - 1, sealed)
        base = idx * CHUNK_SIZE
        yield plain[max(0, start - base):end - base]


def read(conn: sqlite3.Connection, cipher: BlobCipher, blob_id: int,
         start: int = 0, end: int | None = None) -> bytes:
    return b"".join(iter_chunks(conn, cipher, blob_id, start, end))
