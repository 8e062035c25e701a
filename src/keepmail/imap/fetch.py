"""FETCH: items, sections, partial ranges, and building the responses.

RFC 9051 sections 6.4.5 and 7.5.2; RFC 3516 (BINARY, BINARY.SIZE); RFC 7162
3.1.4-3.1.5 (MODSEQ, CHANGEDSINCE) and 3.2.6 (VANISHED modifier).

Responses are built on a store reader thread in batches, so decrypting and
parsing messages neither blocks other sessions nor holds a whole mailbox's
worth of output in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from ..store import blobs
from ..store.models import Message
from . import mime, msgcache, wire
from .parser import ParseError, Reader

MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
SIMPLE = {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID",
          "MODSEQ", "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
SETS_SEEN = {"RFC822", "RFC822.TEXT"}


class UnknownCte(Exception):
    """BINARY of an encoding we cannot decode: NO [UNKNOWN-CTE] (RFC 3516 4.3)."""


@dataclass
class Item:
    name: str                      # FLAGS, BODY, BODY[], BINARY[], BINARY.SIZE, ...
    section: list[int] = field(default_factory=list)
    spec: str = ""                 # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: list[bytes] = field(default_factory=list)
    partial: tuple[int, int] | None = None
    peek: bool = False
    label: bytes = b""

    @property
    def needs_content(self) -> bool:
        return self.name not in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "UID", "MODSEQ")

    @property
    def sets_seen(self) -> bool:
        return (self.name in SETS_SEEN
                or (self.name in ("BODY[]", "BINARY[]") and not self.peek))


def parse_items(r: Reader) -> list[Item]:
    if r.peek() == ord("("):
        r.enter()
        items: list[Item] = []
        while not r.take(b")"):
            if items:
                r.sp()
            items.append(_item(r))
        r.depth -= 1
        if not items:
            raise ParseError("empty fetch item list")
        return items
    name = _item_name(r)
    if name in MACROS:
        return [Item(n, label=n.encode()) for n in MACROS[name]]
    return [_item_rest(r, name)]


def _item_name(r: Reader) -> str:
    out = bytearray()
    while True:
        c = r.peek()
        if c < 0 or not (chr(c).isalnum() or c in b".-"):
            break
        out.append(c)
        r.pos += 1
    if not out:
        raise ParseError("expected a fetch item")
    return out.decode().upper()


def _item(r: Reader) -> Item:
    return _item_rest(r, _item_name(r))


def _item_rest(r: Reader, name: str) -> Item:
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") and r.peek() == 0x5B:
        base = name.split(".")[0] if name != "BINARY.SIZE" else name
        item = Item(base + "[]", peek=name.endswith(".PEEK"))
        if name == "BINARY.SIZE":
            item.name = "BINARY.SIZE"
        _section(r, item, binary=base != "BODY")
        if name != "BINARY.SIZE" and r.take(b"<"):
            start = r.number()
            r.expect(b".")
            count = r.nz_number()
            r.expect(b">")
            item.partial = (start, count)
        item.label = _label(item, base)
        return item
    if name not in SIMPLE:
        raise ParseError(f"unknown fetch item {name[:30]}")
    return Item(name, label=name.encode())


def _section(r: Reader, item: Item, binary: bool) -> None:
    r.expect(b"[")
    need_spec = False
    while ord("0") <= r.peek() <= ord("9"):
        item.section.append(r.nz_number())
        if not r.take(b"."):
            break
        need_spec = not (ord("0") <= r.peek() <= ord("9"))
    if need_spec or not r.peek_is(b"]"):
        if binary:
            raise ParseError("BINARY takes only part numbers")
        spec = _item_name(r)
        if spec not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise ParseError(f"bad section {spec[:30]}")
        if spec == "MIME" and not item.section:
            raise ParseError("MIME needs a part number")
        item.spec = spec
        if spec.startswith("HEADER.FIELDS"):
            r.sp()
            r.enter()
            while not r.take(b")"):
                if item.fields:
                    r.sp()
                item.fields.append(r.astring())
            r.depth -= 1
            if not item.fields:
                raise ParseError("empty header list")
    r.expect(b"]")


def _label(item: Item, base: str) -> bytes:
    parts = [b"%d" % n for n in item.section]
    if item.spec:
        parts.append(item.spec.encode())
    text = b".".join(parts)
    if item.fields:
        text += b" (" + b" ".join(wire.astring(f) for f in item.fields) + b")"
    label = base.encode() + b"[" + text + b"]"
    if item.partial is not None:
        label += b"<%d>" % item.partial[0]
    return label


# -- building responses ---------------------------------------------------------------------------
class Content:
    """A message's bytes, read and parsed at most once per FETCH.

    With a loader, the top-level header comes from the shared header cache
    (no decryption at all on a hit) and whole messages are decrypted in
    batches; `entry` is the cache entry, where rendered fragments are kept.
    """

    __slots__ = ("_entry", "_head", "_raw", "_root", "cipher", "conn", "loader", "msg")

    def __init__(self, conn: sqlite3.Connection, cipher: blobs.BlobCipher, msg: Message,
                 loader: msgcache.Loader | None = None) -> None:
        self.conn, self.cipher, self.msg, self.loader = conn, cipher, msg, loader
        self._raw: bytes | None = None
        self._root: mime.Part | None = None
        self._head: mime.Part | None = None
        self._entry: msgcache.Entry | None = None

    @property
    def entry(self) -> msgcache.Entry | None:
        if self._entry is None and self.loader is not None:
            self._entry = self.loader.head(self.msg.blob_id)
        return self._entry

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            if self.loader is not None:
                self._raw = self.loader.raw(self.msg.blob_id)
            else:
                self._raw = blobs.read(self.conn, self.cipher, self.msg.blob_id)
        return self._raw

    def range(self, start: int, end: int) -> bytes:
        if self._raw is not None:
            return self._raw[start:end]
        return blobs.read(self.conn, self.cipher, self.msg.blob_id, start, end)

    @property
    def root(self) -> mime.Part:
        if self._root is None:
            self._root = mime.parse(self.raw)
        return self._root

    @property
    def head(self) -> mime.Part:
        """The top-level header: header(), headers, fields(), header_bytes() only."""
        if self._root is not None:
            return self._root
        if self._head is None:
            entry = self.entry
            self._head = entry.head if entry is not None else mime.parse_header_only(self.raw)
        return self._head

    def fields(self, names: list[bytes], negate: bool) -> bytes:
        """HEADER.FIELDS[.NOT] of the top-level header."""
        entry = self.entry if self._root is None and self._head is None else None
        if entry is not None:
            return entry.fields(names, negate)
        return self.head.fields(names, negate)

    def text(self) -> bytes:
        """RFC822.TEXT: everything after the header."""
        raw = self.raw
        return raw[mime._split_header(raw, 0, len(raw)):]

    def fragment(self, key: object, make: Callable[[], bytes]) -> bytes:
        """A rendered piece of the response, kept with the cached header."""
        entry = self.entry
        if entry is None or self.loader is None:
            return make()
        found = entry.fragments.get(key)
        if found is None:
            found = make()
            self.loader.cache.add_fragment(entry, key, found)
        return found


@dataclass
class FetchContext:
    items: list[Item]
    seq_of: Callable[[int], int]
    recent: Callable[[int], bool]
    utf8: bool
    with_uid: bool
    with_modseq: bool
    rev2: bool
    flags_for: set[int] = field(default_factory=set)   # \Seen was just set on these


class Renderer:
    """A FETCH's items compiled once per command into a step per item, so each message
    costs a few calls: FLAGS text is kept per distinct flag set, and a top-level
    HEADER.FIELDS goes straight to the cached header's rendered fragment."""

    def __init__(self, ctx: FetchContext) -> None:
        self.ctx = ctx
        self._flag_text: dict[tuple[frozenset[str], bool], bytes] = {}
        steps: list[Callable[[Message, Content], bytes]] = []
        names_done: set[str] = set()
        if ctx.with_uid:
            steps.append(_uid_step)
            names_done.add("UID")
        for item in ctx.items:
            if item.name in names_done and item.name in ("UID", "FLAGS", "MODSEQ"):
                continue
            names_done.add(item.name)
            steps.append(self._step(item))
        self.steps = steps
        self.extra_flags = "FLAGS" not in names_done
        self.extra_modseq = ctx.with_modseq and "MODSEQ" not in names_done

    def _step(self, item: Item) -> Callable[[Message, Content], bytes]:
        name, ctx = item.name, self.ctx
        if name == "UID":
            return _uid_step
        if name == "FLAGS":
            return self._flags_step
        if name == "INTERNALDATE":
            return lambda m, c: b"INTERNALDATE " + wire.date_time(m.internaldate)
        if name == "RFC822.SIZE":
            return lambda m, c: b"RFC822.SIZE %d" % m.size
        if name == "MODSEQ":
            return lambda m, c: b"MODSEQ (%d)" % m.modseq
        if (name == "BODY[]" and not item.section and item.partial is None
                and item.spec in ("HEADER.FIELDS", "HEADER.FIELDS.NOT")):
            key = (item.spec, tuple(f.lower() for f in item.fields))
            negate = item.spec == "HEADER.FIELDS.NOT"
            prefix = item.label + b" "
            fields = item.fields

            def header_fields(m: Message, c: Content) -> bytes:
                data = c.fragment(key, lambda: c.fields(fields, negate))
                return prefix + (wire.literal(data) if data else b'""')
            return header_fields
        label = item.label + b" "
        return lambda m, c: label + _value(ctx, item, m, c)

    def _flags_step(self, msg: Message, content: Content | None = None) -> bytes:
        ctx = self.ctx
        recent = not ctx.rev2 and ctx.recent(msg.uid)
        key = (msg.flags, recent)
        text = self._flag_text.get(key)
        if text is None:
            flags = set(msg.flags)
            if recent:
                flags.add("\\Recent")
            text = self._flag_text[key] = b"FLAGS " + wire.flags(flags)
        return text

    def render(self, conn: sqlite3.Connection, cipher: blobs.BlobCipher, msg: Message,
               loader: msgcache.Loader | None = None) -> bytes:
        """One `* n FETCH (...)` line for a message."""
        content = Content(conn, cipher, msg, loader)
        out = [step(msg, content) for step in self.steps]
        if self.extra_flags and msg.uid in self.ctx.flags_for:
            out.append(self._flags_step(msg))
        if self.extra_modseq:
            out.append(b"MODSEQ (%d)" % msg.modseq)
        return b"* %d FETCH (" % self.ctx.seq_of(msg.uid) + b" ".join(out) + b")\r\n"


def _uid_step(msg: Message, content: Content) -> bytes:
    return b"UID %d" % msg.uid


def render(ctx: FetchContext, conn: sqlite3.Connection, cipher: blobs.BlobCipher,
           msg: Message, loader: msgcache.Loader | None = None) -> bytes:
    """One `* n FETCH (...)` line for a message (Renderer(ctx) for many)."""
    return Renderer(ctx).render(conn, cipher, msg, loader)


def _value(ctx: FetchContext, item: Item, msg: Message, content: Content) -> bytes:
    name = item.name
    if name == "FLAGS":
        flags = set(msg.flags)
        if ctx.recent(msg.uid) and not ctx.rev2:
            flags.add("\\Recent")
        return wire.flags(flags)
    if name == "UID":
        return b"%d" % msg.uid
    if name == "MODSEQ":
        return b"(%d)" % msg.modseq
    if name == "INTERNALDATE":
        return wire.date_time(msg.internaldate)
    if name == "RFC822.SIZE":
        return b"%d" % msg.size
    if name == "ENVELOPE":
        return content.fragment((name, ctx.utf8), lambda: wire.render(
            mime.envelope(content.head), ctx.utf8))
    if name in ("BODY", "BODYSTRUCTURE"):
        return content.fragment((name, ctx.utf8), lambda: wire.render(
            mime.body_structure(content.root, name == "BODYSTRUCTURE"), ctx.utf8))
    if name == "RFC822":
        return wire.literal(content.raw)
    if name == "RFC822.HEADER":
        return wire.literal(content.head.header_bytes())
    if name == "RFC822.TEXT":
        return wire.literal(content.text())
    if name == "BODY[]":
        return _body_section(item, msg, content)
    if name in ("BINARY[]", "BINARY.SIZE"):
        data = _binary(item, content)
        if data is None:
            return b"NIL"
        if name == "BINARY.SIZE":
            return b"%d" % len(data)
        if item.partial is not None:
            start, count = item.partial
            data = data[start:start + count]
        return wire.literal(data, binary=b"\x00" in data)
    raise ParseError(f"unknown fetch item {name}")


def _binary(item: Item, content: Content) -> bytes | None:
    """Decoded content of a part (RFC 3516); the whole message is returned as stored."""
    if not item.section:
        return content.raw
    part = mime.find_part(content.root, item.section)
    if part is None:
        return None
    if part.is_multipart:
        return part.body_bytes()
    try:
        return mime.decode_body(part)
    except mime.UnknownEncoding as exc:
        raise UnknownCte(str(exc)) from None


def _body_section(item: Item, msg: Message, content: Content) -> bytes:
    if not item.section and not item.spec:
        if item.partial is not None:  # read only the chunks that hold the range
            start, count = item.partial
            data = content.range(start, min(msg.size, start + count)) if start < msg.size \
                else b""
            return wire.literal(data) if data else b'""'
        return wire.literal(content.raw)
    if not item.section and item.spec in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        if item.spec == "HEADER":
            data = content.head.header_bytes()
        else:
            negate = item.spec == "HEADER.FIELDS.NOT"
            data = content.fragment(
                (item.spec, tuple(f.lower() for f in item.fields)),
                lambda: content.fields(item.fields, negate))
    else:
        found = mime.section_bytes(content.root, item.section, item.spec, item.fields)
        if found is None:
            return b"NIL"
        data = found
    if item.partial is not None:
        start, count = item.partial
        data = data[start:start + count]
    return wire.literal(data) if data else b'""'
