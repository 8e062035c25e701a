"""A bounded in-memory cache of decrypted message headers, keyed by blob id.

Message bytes are encrypted at rest (store/blobs.py), so every header read
would otherwise decrypt and parse the message again. Blobs never change once
written, so an entry never goes stale: entries leave only by LRU eviction
when the cache grows past its byte budget. Nothing here is ever written to
disk; the cache is shared by every session of a store (not per connection,
so idle connections cost nothing extra).

An entry keeps the raw header block, its parsed field list, the header
values decoded (RFC 2047) and case-folded for SEARCH, and rendered FETCH
fragments (ENVELOPE, BODYSTRUCTURE) added as they are computed.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ..store import blobs, imapq
from . import mime

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
HEAD_BATCH = 500                 # headers decrypted per query
RAW_BATCH = 200                  # whole messages decrypted per query ...
RAW_BATCH_BYTES = 4 * 1024 * 1024   # ... and at most this many bytes of them (but >= 1)
_ENTRY_OVERHEAD = 600            # object headers, dict slots, list cells (estimate)
_PER_FIELD = 250                 # tuples, small bytes/str objects per header field


class Entry:
    """The cached view of one blob's top-level header."""

    __slots__ = ("_folded", "_plain", "blob_id", "body_offset", "cost", "fragments", "head",
                 "size")

    def __init__(self, header: bytes, body_offset: int, size: int) -> None:
        self.blob_id = 0
        # A Part over the header bytes only (what parse_header_only(header) gives).
        self.head = mime.Part(header, 0, len(header), len(header),
                              mime._parse_headers(header, 0, len(header)))
        self.body_offset = body_offset                # where the body starts in the blob
        self.size = size
        self.fragments: dict[Any, bytes] = {}
        self._folded: dict[bytes, list[str]] | None = None
        self._plain: str | None = None
        self.cost = _ENTRY_OVERHEAD + 2 * len(header) + _PER_FIELD * len(self.head.headers)

    @property
    def header(self) -> bytes:
        return self.head.raw

    def plain_charset(self) -> str:
        """The charset if the message is one text part sent as is, else ""."""
        if self._plain is None:
            self._plain = mime.plain_text_charset(self.head) or ""
        return self._plain

    def folded(self, name: bytes) -> list[str]:
        """Values of a field, RFC 2047-decoded and case-folded (for SEARCH)."""
        if self._folded is None:
            self._folded = {}
        found = self._folded.get(name)
        if found is None:
            found = [mime.decode_words(value).casefold()
                     for key, value, _s, _e in self.head.headers if key == name]
            self._folded[name] = found   # a few small strings; within the entry's estimate
        return found


class MessageCache:
    """LRU by bytes; safe to use from the event loop and store reader threads."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, blob_id: int) -> bool:
        return blob_id in self._entries

    def get(self, blob_id: int) -> Entry | None:
        with self._lock:
            entry = self._entries.get(blob_id)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(blob_id)
            self.hits += 1
            return entry

    def put_message(self, blob_id: int, data: bytes, size: int) -> Entry:
        """Cache the header of a message from its first bytes (at least the header)."""
        body = mime._split_header(data, 0, len(data))
        return self.put(blob_id, Entry(data[:body], body, size))

    def put(self, blob_id: int, entry: Entry) -> Entry:
        if entry.cost * 4 > self.max_bytes:   # never let one message flush the cache
            return entry
        entry.blob_id = blob_id
        with self._lock:
            old = self._entries.pop(blob_id, None)
            if old is not None:
                self.bytes -= old.cost
            self._entries[blob_id] = entry
            self.bytes += entry.cost
            self._evict()
        return entry

    def add_fragment(self, entry: Entry, key: Any, value: bytes) -> None:
        """Remember a rendered FETCH fragment on an entry, counting its bytes."""
        with self._lock:
            if key in entry.fragments:
                return
            entry.fragments[key] = value
            cost = len(value) + 100
            entry.cost += cost
            if self._entries.get(entry.blob_id) is entry:
                self.bytes += cost
                self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._entries:
            _bid, victim = self._entries.popitem(last=False)
            self.bytes -= victim.cost

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


_CACHES: weakref.WeakKeyDictionary[Any, MessageCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cache_for(store: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> MessageCache:
    """The cache shared by every IMAP listener on one store."""
    with _CACHES_LOCK:
        cache = _CACHES.get(store)
        if cache is None:
            cache = _CACHES[store] = MessageCache(max_bytes)
        return cache


def _open(cipher: blobs.BlobCipher, blob_id: int, size: int, idx: int, sealed: bytes) -> bytes:
    count = max(1, -(-size // blobs.CHUNK_SIZE))
    return cipher.open_chunk(blob_id, idx, idx == count - 1, sealed)


class Loader:
    """Decrypts what one command needs, in batches, on a store reader thread.

    Headers go through the shared cache; whole messages are decrypted a batch
    at a time and kept only until the next batch (never the whole mailbox).
    """

    def __init__(self, conn: sqlite3.Connection, cipher: blobs.BlobCipher,
                 cache: MessageCache) -> None:
        self.conn, self.cipher, self.cache = conn, cipher, cache
        self._local: dict[int, Entry] = {}    # headers decrypted by the last batch
        self._raws: dict[int, bytes] = {}
        self._plan: list[int] = []
        self._sizes: list[int] = []
        self._index: dict[int, int] = {}

    def plan(self, blob_ids: Sequence[int], sizes: Sequence[int]) -> None:
        """The blobs this command will go through, in order: misses prefetch what follows."""
        self._plan, self._sizes = list(blob_ids), list(sizes)
        self._index = {}
        for i, b in enumerate(self._plan):
            self._index.setdefault(b, i)

    def _window(self, blob_id: int, count: int, max_bytes: int,
                cap: int | None = None) -> list[int]:
        i = self._index.get(blob_id)
        if i is None:
            return [blob_id]
        out, total = [], 0
        for b, size in zip(self._plan[i:i + count], self._sizes[i:i + count], strict=True):
            if cap is not None:
                size = min(size, cap)
            if out and total + size > max_bytes:
                break
            out.append(b)
            total += size
        return out

    def heads(self, blob_ids: Sequence[int]) -> None:
        """Make sure the headers of these blobs are at hand (one query for the misses)."""
        missing = [b for b in blob_ids if b not in self.cache and b not in self._local]
        if not missing:
            return
        self._local = {}
        for blob_id, size, sealed in imapq.sealed_first_chunks(self.conn, missing):
            data = _open(self.cipher, blob_id, size, 0, sealed)
            body = mime._split_header(data, 0, len(data))
            if body == len(data) and size > len(data):   # header runs past chunk 0
                data = blobs.read(self.conn, self.cipher, blob_id)
                body = mime._split_header(data, 0, len(data))
            self._keep(blob_id, Entry(data[:body], body, size))

    def _keep(self, blob_id: int, entry: Entry) -> Entry:
        # Also kept here: a small cache may evict it before this command gets to it.
        self._local[blob_id] = entry
        return self.cache.put(blob_id, entry)

    def head(self, blob_id: int) -> Entry:
        entry = self.cache.get(blob_id) or self._local.get(blob_id)
        if entry is None:
            self.heads(self._window(blob_id, HEAD_BATCH, RAW_BATCH_BYTES * 4,
                                    blobs.CHUNK_SIZE))
            entry = self.cache.get(blob_id) or self._local.get(blob_id)
            if entry is None:
                raise blobs.BlobCorrupt(f"blob {blob_id} is missing")
        return entry

    def raws(self, blob_ids: Sequence[int]) -> None:
        """Decrypt these whole blobs (one query), replacing the previous batch."""
        self._raws = {}
        self._local = {}
        parts: dict[int, list[bytes]] = {}
        sizes: dict[int, int] = {}
        for blob_id, size, idx, sealed in imapq.sealed_blobs(self.conn, blob_ids):
            got = parts.setdefault(blob_id, [])
            if idx != len(got):
                raise blobs.BlobCorrupt(f"blob {blob_id} is missing chunks")
            got.append(_open(self.cipher, blob_id, size, idx, sealed))
            sizes[blob_id] = size
        for blob_id, chunks in parts.items():
            if len(chunks) != max(1, -(-sizes[blob_id] // blobs.CHUNK_SIZE)):
                raise blobs.BlobCorrupt(f"blob {blob_id} is missing chunks")
            raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._raws[blob_id] = raw
            if blob_id not in self.cache and blob_id not in self._local:
                body = mime._split_header(raw, 0, len(raw))
                self._keep(blob_id, Entry(raw[:body], body, len(raw)))

    def raw(self, blob_id: int) -> bytes:
        data = self._raws.get(blob_id)
        if data is None:
            self.raws(self._window(blob_id, RAW_BATCH, RAW_BATCH_BYTES))
            data = self._raws.get(blob_id)
            if data is None:
                raise blobs.BlobCorrupt(f"blob {blob_id} is missing")
        return data
