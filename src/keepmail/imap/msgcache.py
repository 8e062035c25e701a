"""A bounded in-memory cache of decrypted message headers, keyed by blob id.

Message bytes are encrypted at rest (store/blobs.py), so every header read
would otherwise decrypt and parse the message again. Blobs never change once
written, so an entry never goes stale: entries leave only by LRU eviction
when the cache grows past its byte budget. Nothing here is ever written to
disk; the cache is shared by every session of a store (not per connection,
so idle connections cost nothing extra).

An entry keeps the raw header block and, computed on first use, what the
commands ask of it: for a well-formed header (every line part of a field) a
regex answers HEADER.FIELDS and field look-ups without parsing the header
line by line; otherwise, or for ENVELOPE and the like, the parsed field list.
Also the header values decoded (RFC 2047) and case-folded for SEARCH, and
rendered FETCH fragments (ENVELOPE, BODYSTRUCTURE, HEADER.FIELDS).

Small messages (up to SMALL_RAW) are also kept whole, in a separate LRU
with half the byte budget, so SEARCH BODY/TEXT and BODY[] do not decrypt
them again each time; bodies never evict headers.
"""

from __future__ import annotations

import bisect
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
SMALL_RAW = 64 * 1024            # whole messages up to this size are kept too ...
RAW_SHARE = 2                    # ... in 1/RAW_SHARE of the byte budget, their own LRU
_MIME_FIELDS = (b"content-transfer-encoding", b"content-type")
_ENTRY_OVERHEAD = 600            # object headers, dict slots, list cells (estimate)
_PER_FIELD = 250                 # tuples, small bytes/str objects per header field


class Entry:
    """The cached view of one blob's top-level header (parsed on first use)."""

    __slots__ = ("_addr_plain", "_folded", "_head", "_index", "_lowered", "_plain",
                 "_well_formed", "blob_id", "body_offset", "cost",
                 "fragments", "header", "size")

    def __init__(self, header: bytes, body_offset: int, size: int) -> None:
        self.blob_id = 0
        self.header = header
        self._head: mime.Part | None = None
        self._well_formed: bool | None = None
        self._lowered: bytes | None = None     # b"": not usable for the raw pre-check
        self._addr_plain = False
        self._index: dict[bytes, tuple[bytes, ...]] | None = None   # name -> folded values
        self.body_offset = body_offset                # where the body starts in the blob
        self.size = size
        self.fragments: dict[Any, bytes] = {}
        self._folded: dict[bytes, tuple[str, ...]] | None = None
        self._plain: str | None = None
        # the header, its values (parsed or indexed) and its lower-case copy (SEARCH)
        self.cost = _ENTRY_OVERHEAD + 3 * len(header) + _PER_FIELD * (header.count(b"\n") + 1)

    @property
    def head(self) -> mime.Part:
        """A Part over the header bytes only (what parse_header_only(header) gives)."""
        head = self._head
        if head is None:   # two threads may both parse: same result, one is kept
            header = self.header
            head = self._head = mime.Part(header, 0, len(header), len(header),
                                          mime._parse_headers(header, 0, len(header)))
        return head

    def fields(self, names: list[bytes], negate: bool) -> bytes:
        """HEADER.FIELDS (same bytes as head.fields), without parsing the header when
        it is well formed: one regex finds the wanted fields."""
        if not negate:
            if self._well_formed is None:
                self._well_formed = mime.well_formed_header(self.header)
            if self._well_formed:
                pattern = mime.fields_pattern(tuple(names))
                if pattern is not None:
                    return b"".join(pattern.findall(self.header)) + b"\r\n"
        return self.head.fields(names, negate)

    def values(self, name: bytes) -> list[bytes]:
        """Unfolded values of the fields called `name` (lower case), as the parsed
        header lists them, found by one regex when the header is well formed."""
        if self._head is None:
            index = self._index
            if index is None:
                if self._well_formed is None:
                    self._well_formed = mime.well_formed_header(self.header)
                if self._well_formed:
                    index = self._index = mime.field_index(self.header)
            if index is not None:
                return [mime.unfold(v) for v in index.get(name, ())]
        return [value for key, value, _s, _e in self.head.headers if key == name]

    def may_contain(self, words: tuple[bytes, ...], address: bool) -> bool:
        """False when no field of this header can match a SEARCH text made of these
        words (ASCII, lower case, split at white space): when the header is ASCII with
        no encoded word, its values decode to themselves, casefold as lower() and
        unfold only at white space, so each word of a match is in the raw bytes. An
        address field's envelope form can join text around comments or quotes, so
        such headers always answer True."""
        lowered = self.lowered()
        if not lowered or (address and not self._addr_plain):
            return True
        if len(words) == 1:
            return words[0] in lowered
        return all(word in lowered for word in words)

    def lowered(self) -> bytes:
        """The header in lower case, or b"" when may_contain cannot judge by it."""
        lowered = self._lowered
        if lowered is None:
            h = self.header
            if not h.isascii() or b"=?" in h:
                lowered = b""
            else:
                lowered = h.lower()
                self._addr_plain = not (b"(" in h or b'"' in h or b"\\" in h)
            self._lowered = lowered   # within the entry's estimate (2 x the header)
        return lowered

    def plain_charset(self) -> str:
        """The charset if the message is one text part sent as is, else ""."""
        if self._plain is None:
            if self._head is None and self._index is None:
                if self._well_formed is None:
                    self._well_formed = mime.well_formed_header(self.header)
                if self._well_formed:   # two fields wanted: no need to index them all
                    first = mime.first_values(self.header, _MIME_FIELDS)
                    self._plain = mime._plain_text_charset(
                        first.get(b"content-transfer-encoding"),
                        first.get(b"content-type")) or ""
                    return self._plain
            self._plain = mime.plain_text_charset(_FirstValues(self)) or ""
        return self._plain

    def folded(self, name: bytes) -> tuple[str, ...]:
        """Values of a field, RFC 2047-decoded and case-folded (for SEARCH)."""
        if self._folded is None:
            self._folded = {}
        found = self._folded.get(name)
        if found is None:
            found = tuple(mime.decode_words(value).casefold() for value in self.values(name))
            self._folded[name] = found   # a few small strings; within the entry's estimate
        return found


class _FirstValues:
    """Part.header() over an entry's values(): all plain_text_charset asks of a Part."""

    __slots__ = ("entry",)

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    def header(self, name: bytes) -> bytes | None:
        found = self.entry.values(name.lower())
        return found[0] if found else None


class MessageCache:
    """LRU by bytes; safe to use from the event loop and store reader threads."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._lock = threading.Lock()
        # Small whole messages (SEARCH BODY/TEXT, BODY[] and BODYSTRUCTURE read them
        # again and again): bounded apart, so bodies never push headers out.
        self.raw_bytes = 0
        self._raws: OrderedDict[int, bytes] = OrderedDict()
        # SEARCH text indexes (TextIndex) by the tuple of blob ids they cover.
        self._indexes: OrderedDict[tuple[int, ...], TextIndex] = OrderedDict()

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

    @property
    def raw_max_bytes(self) -> int:
        return self.max_bytes // RAW_SHARE

    def get_raw(self, blob_id: int) -> bytes | None:
        with self._lock:
            raw = self._raws.get(blob_id)
            if raw is not None:
                self._raws.move_to_end(blob_id)
            return raw

    def put_raw(self, blob_id: int, raw: bytes) -> None:
        """Keep a small message's bytes (bigger ones are only ever decrypted per use)."""
        cost = len(raw) + 100
        if len(raw) > SMALL_RAW or cost * 4 > self.raw_max_bytes:
            return
        with self._lock:
            old = self._raws.pop(blob_id, None)
            if old is not None:
                self.raw_bytes -= len(old) + 100
            self._raws[blob_id] = raw
            self.raw_bytes += cost
            while self.raw_bytes > self.raw_max_bytes and self._raws:
                _bid, victim = self._raws.popitem(last=False)
                self.raw_bytes -= len(victim) + 100

    def text_index(self, blob_ids: tuple[int, ...]) -> TextIndex:
        """The SEARCH text index over these blobs (kept while complete and small)."""
        with self._lock:
            index = self._indexes.get(blob_ids)
            if index is not None:
                self._indexes.move_to_end(blob_ids)
                return index
        return TextIndex(self, blob_ids)

    def _keep_index(self, index: TextIndex) -> None:
        """Remember a complete index while all kept fit in 1/INDEX_SHARE of the budget."""
        with self._lock:
            indexes = self._indexes
            indexes.pop(index.blob_ids, None)
            budget = self.max_bytes // INDEX_SHARE
            if not index._complete or index.bytes() > budget:
                return
            indexes[index.blob_ids] = index
            total = sum(kept.bytes() for kept in indexes.values())
            while len(indexes) > MAX_INDEXES or total > budget:
                _key, victim = indexes.popitem(last=False)
                total -= victim.bytes()

    def clear(self) -> None:
        with self._lock:
            self._indexes.clear()
            self._entries.clear()
            self.bytes = 0
            self._raws.clear()
            self.raw_bytes = 0


INDEX_SHARE = 8      # SEARCH text indexes: all in at most 1/INDEX_SHARE of the byte budget
MAX_INDEXES = 4      # ... and this many of them (one per mailbox state searched lately)
_ASCII_SUPERSETS = frozenset((
    "us-ascii", "ascii", "utf-8", "utf8", "iso-8859-1", "iso-8859-15", "latin1", "latin-1",
    "windows-1252", "cp1252"))


def _hits(blob: bytes, starts: list[int], word: bytes) -> set[int]:
    """Positions (in `starts`) of the pieces of `blob` holding `word`."""
    found: set[int] = set()
    last = len(starts) - 1
    pos = blob.find(word)
    while pos >= 0:
        i = bisect.bisect_right(starts, pos) - 1
        found.add(i)
        if i >= last:
            break
        pos = blob.find(word, starts[i + 1])
    return found


class TextIndex:
    """SEARCH's bulk pre-check over a mailbox's messages (by position in blob_ids).

    The lower-case headers (and the lower-case bodies of small one-part ASCII
    messages) of all cached messages are joined, NUL between, into one bytes
    object, so a word is looked for in all of them by one bytes.find at C speed.
    It only rules messages out, exactly as Entry.may_contain and the plain-text
    path of search._body_has would one by one; messages it cannot judge
    (encoded or non-ASCII headers, other bodies, messages not cached yet) are
    always kept, for the exact predicate. Blobs never change, so an index is
    keyed by its blob ids; one built while some were not cached is not kept.
    Memory only, bounded by INDEX_SHARE and MAX_INDEXES.
    """

    def __init__(self, cache: MessageCache, blob_ids: tuple[int, ...]) -> None:
        self.cache, self.blob_ids = cache, blob_ids
        self._head: tuple[bytes, list[int], list[int], list[int]] | None = None
        self._body: tuple[bytes, list[int], list[int]] | None = None
        self._complete = True

    def bytes(self) -> int:
        total = 0
        for part in (self._head, self._body):
            if part is not None:
                total += len(part[0]) + 16 * len(self.blob_ids)
        return total

    def _entries(self) -> list[Entry | None]:
        cache = self.cache
        with cache._lock:
            get = cache._entries.get
            return [get(b) for b in self.blob_ids]

    def _done(self) -> None:
        self.cache._keep_index(self)

    def _head_part(self) -> tuple[bytes, list[int], list[int], list[int]]:
        head = self._head
        if head is None:
            parts, starts, unknown, odd = [], [], [], []
            pos = 0
            for i, entry in enumerate(self._entries()):
                starts.append(pos)
                lowered = entry.lowered() if entry is not None else b""
                if entry is None:
                    self._complete = False
                if not lowered:
                    unknown.append(i)
                elif not entry._addr_plain:   # type: ignore[union-attr]
                    odd.append(i)
                parts.append(lowered)
                pos += len(lowered) + 2
            # NUL, then a line break: each header starts a line (see _plain_charsets)
            head = self._head = (b"\0\n".join(parts), starts, unknown, odd)
            self._done()
        return head

    def _plain_charsets(self, entries: list[Entry | None]) -> list[str | None]:
        """Entry.plain_charset() of all well-formed ASCII headers by one regex over the
        lower-case headers (lower case decides alike: names and the encoding are
        compared in lower case, and so is the charset by the caller); None where the
        entry must be asked itself."""
        blob, starts, _unknown, _odd = self._head_part()
        firsts: list[dict[bytes, bytes]] = [{} for _ in starts]
        # Only lines starting "content-" can match: found by bytes.find, then the same
        # regex as first_values at each (a scan by the regex alone is 2x slower).
        pattern = mime._named_fields(_MIME_FIELDS)
        at = 0 if blob.startswith(b"content-") else blob.find(b"\ncontent-") + 1 or -1
        while at >= 0:
            m = pattern.match(blob, at)
            if m is not None:
                found = firsts[bisect.bisect_right(starts, at) - 1]
                name = m.group(1)
                if name not in found:
                    found[name] = m.group(2)
            at = blob.find(b"\ncontent-", at) + 1 or -1
        out: list[str | None] = []
        for entry, found in zip(entries, firsts, strict=True):
            if entry is None or not entry._lowered or not entry._lowered.endswith(b"\n"):
                out.append(None)
                continue
            if entry._well_formed is None:
                entry._well_formed = mime.well_formed_header(entry.header)
            if not entry._well_formed:
                out.append(None)
                continue
            cte = found.get(b"content-transfer-encoding")
            ctype = found.get(b"content-type")
            out.append(mime._plain_text_charset(
                None if cte is None else mime.unfold(cte),
                None if ctype is None else mime.unfold(ctype)) or "")
        return out

    def head_candidates(self, words: tuple[bytes, ...], address: bool) -> set[int] | None:
        """Positions of the messages whose header may_contain(words, address)."""
        if not words or any(b"\0" in w for w in words):
            return None
        blob, starts, unknown, odd = self._head_part()
        found = _hits(blob, starts, words[0])
        for word in words[1:]:
            if not found:
                break
            found &= _hits(blob, starts, word)
        found.update(unknown)
        if address:
            found.update(odd)
        return found

    def body_candidates(self, text: bytes) -> set[int] | None:
        """Positions of the messages whose body may hold `text` (ASCII, lower case)."""
        if not text or b"\0" in text:
            return None
        body = self._body
        if body is None:
            cache = self.cache
            entries = self._entries()
            with cache._lock:
                get = cache._raws.get
                raws = [get(b) for b in self.blob_ids]
            plains = self._plain_charsets(entries)
            parts, starts, unknown = [], [], []
            pos = 0
            for i, (entry, raw) in enumerate(zip(entries, raws, strict=True)):
                starts.append(pos)
                part = b""
                if entry is None or raw is None:
                    self._complete = False
                    unknown.append(i)
                else:
                    charset = plains[i]
                    if charset is None:
                        charset = entry.plain_charset()
                    if charset and charset.lower() in _ASCII_SUPERSETS and raw.isascii():
                        part = raw[entry.body_offset:].lower()
                    else:
                        unknown.append(i)
                parts.append(part)
                pos += len(part) + 1
            body = self._body = (b"\0".join(parts), starts, unknown)
            self._done()
        blob, starts, unknown = body
        found = _hits(blob, starts, text)
        found.update(unknown)
        return found


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
            if len(data) == size:     # chunk 0 is the whole message
                self.cache.put_raw(blob_id, data)
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
        todo = []
        for blob_id in blob_ids:
            kept = self.cache.get_raw(blob_id)
            if kept is not None:
                self._raws[blob_id] = kept
            else:
                todo.append(blob_id)
        for blob_id, size, idx, sealed in imapq.sealed_blobs(self.conn, todo):
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
            self.cache.put_raw(blob_id, raw)
            if blob_id not in self.cache and blob_id not in self._local:
                body = mime._split_header(raw, 0, len(raw))
                self._keep(blob_id, Entry(raw[:body], body, len(raw)))

    def raw(self, blob_id: int) -> bytes:
        data = self._raws.get(blob_id) or self.cache.get_raw(blob_id)
        if data is None:
            self.raws(self._window(blob_id, RAW_BATCH, RAW_BATCH_BYTES))
            data = self._raws.get(blob_id)
            if data is None:
                raise blobs.BlobCorrupt(f"blob {blob_id} is missing")
        return data
