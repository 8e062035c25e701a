"""SEARCH programs (RFC 9051 section 6.4.4, RFC 3501 section 6.4.4).

A program is parsed into a predicate over one message. Flag, size, date and
number keys never touch the message bytes; header keys read the shared
decrypted-header cache (msgcache.py), filling it a batch of messages per
query on a miss; body and text keys decrypt messages in batches on a store
reader thread, and only if a cheaper key did not already decide. A message
that is a single text part sent as is is searched without a MIME parse.
Header and BODY keys with ASCII text also carry a bulk pre-check (`narrow`):
SEARCH first asks the shared msgcache.TextIndex which messages may match
(one bytes.find over all cached headers or plain bodies), and only those
become Candidates; the predicate still decides each of them.
Also MODSEQ (RFC 7162 3.1.5) and `$` (RFC 5182 SEARCHRES).

Strings match case-insensitively as substrings of the decoded text: RFC 2047
words in headers, transfer and charset encodings in bodies.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import mime
from .parser import ParseError, Reader, SeqSet

MONTHS = {m: i + 1 for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}
CHARSETS = ("UTF-8", "US-ASCII")


class BadCharset(Exception):
    """SEARCH CHARSET we do not support: NO [BADCHARSET]."""


class Candidate:
    """One message as search sees it.

    With a loader (msgcache.Loader) the header comes from the shared header
    cache and the bytes from the loader's current batch; without one, `load`
    decrypts the message on first use.
    """

    __slots__ = ("_entry", "_head", "_raw", "_root", "blob_id", "flags", "internaldate",
                 "load", "loader", "modseq", "recent", "seq", "size", "uid")

    def __init__(self, seq: int, uid: int, flags: frozenset[str], internaldate: float,
                 size: int, modseq: int, recent: bool,
                 load: Callable[[], bytes] | None = None, blob_id: int = 0,
                 loader: Any = None) -> None:
        self.seq, self.uid, self.flags = seq, uid, flags
        self.internaldate, self.size, self.modseq, self.recent = internaldate, size, modseq, recent
        self.load, self.blob_id, self.loader = load, blob_id, loader
        self._raw: bytes | None = None
        self._root: mime.Part | None = None
        self._head: mime.Part | None = None
        self._entry: Any = None

    @property
    def entry(self) -> Any:
        """The header cache's entry (with a loader only), looked up once."""
        if self._entry is None:
            self._entry = self.loader.head(self.blob_id)
        return self._entry

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            if self.loader is not None:
                self._raw = self.loader.raw(self.blob_id)
            else:
                assert self.load is not None
                self._raw = self.load()
        return self._raw

    @property
    def head(self) -> mime.Part:
        """The top-level header (only header(), headers, fields(), header_bytes())."""
        if self._head is None:
            if self._root is not None:
                self._head = self._root
            elif self.loader is not None:
                self._head = self.entry.head
            else:
                self._head = mime.parse_header_only(self.raw)
        return self._head

    def folded(self, name: bytes) -> Sequence[str]:
        """Decoded, case-folded values of one header field."""
        if self.loader is not None:
            return self.entry.folded(name)  # type: ignore[no-any-return]
        return [_fold(mime.decode_words(v)) for k, v, _s, _e in self.head.headers if k == name]

    @property
    def root(self) -> mime.Part:
        if self._root is None:
            self._root = mime.parse(self.raw)
            self._head = self._root
        return self._root


Pred = Callable[[Candidate], bool]


@dataclass
class Context:
    """What a program needs from the session while it is parsed and run."""

    max_seq: int
    max_uid: int
    saved: Callable[[], set[int]]      # UIDs of the saved result ($)
    uid_of_seq: Callable[[int], int]
    uses_modseq: bool = False
    needs_content: bool = False
    text_keys: list[str] = field(default_factory=list)


def parse_date(r: Reader) -> dt.date:
    quoted = r.take(b'"')
    try:
        day = r.number(31)
        r.expect(b"-")
        month = MONTHS[r.letters().upper()]
        r.expect(b"-")
        year = r.number(9999)
        result = dt.date(year, month, day)
    except (KeyError, ValueError) as exc:
        raise ParseError("bad date") from exc
    if quoted:
        r.expect(b'"')
    return result


def _fold(text: str) -> str:
    return text.casefold()


_ADDRESS_FIELDS = frozenset((b"from", b"to", b"cc", b"bcc"))


def _address_text(m: Candidate, name: bytes) -> str:
    """An address field as its ENVELOPE sees it: "name <mailbox@host>", comments and
    spaces inside the address removed (RFC 9051 6.4.4 searches the envelope's field)."""
    out = []
    for key, value, _s, _e in m.head.headers:
        if key != name:
            continue
        for disp, local, host in mime.parse_addresses(value):
            if local is None:
                continue
            addr = local + b"@" + host if host is not None else local
            text = addr.decode("utf-8", "replace")
            if disp:
                text = f"{mime.decode_words(disp)} <{text}>"
            out.append(text)
    return _fold(", ".join(out))


class Program:
    """Parses `search-key *(SP search-key)` into one predicate."""

    def __init__(self, r: Reader, ctx: Context, charset: str = "UTF-8") -> None:
        self.r = r
        self.ctx = ctx
        self.charset = charset

    def parse_all(self) -> Pred:
        keys = [self.key()]
        while not self.r.at_end() and self.r.peek() == ord(" "):
            self.r.sp()
            keys.append(self.key())
        return _and(keys)

    def _string(self) -> str:
        data = self.r.astring()
        try:
            text = data.decode("utf-8" if self.charset != "US-ASCII" else "ascii")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        self.ctx.text_keys.append(text)
        return _fold(text)

    def key(self) -> Pred:
        r = self.r
        c = r.peek()
        if c == ord("("):
            r.enter()
            keys = [self.key()]
            while not r.take(b")"):
                r.sp()
                keys.append(self.key())
            r.depth -= 1
            return _and(keys)
        if c == ord("$") or c == ord("*") or ord("0") <= c <= ord("9"):
            return self._seq(r.sequence_set(), by_uid=False)
        name = r.atom().upper()
        handler = _SIMPLE.get(name)
        if handler is not None:
            return handler
        method = getattr(self, "k_" + name.replace("-", "_"), None)
        if method is None:
            raise ParseError(f"unknown search key {name}")
        return method()  # type: ignore[no-any-return]

    def _seq(self, seqs: SeqSet, by_uid: bool) -> Pred:
        ctx = self.ctx
        if seqs.saved:
            return lambda m: m.uid in ctx.saved()
        if by_uid:
            return lambda m: seqs.contains(m.uid, ctx.max_uid)
        return lambda m: seqs.contains(m.seq, ctx.max_seq)

    # -- keys with arguments -----------------------------------------------------
    def k_NOT(self) -> Pred:
        self.r.sp()
        inner = self.key()
        return lambda m: not inner(m)

    def k_OR(self) -> Pred:
        self.r.sp()
        a = self.key()
        self.r.sp()
        b = self.key()
        return lambda m: a(m) or b(m)

    def k_UID(self) -> Pred:
        self.r.sp()
        return self._seq(self.r.sequence_set(), by_uid=True)

    def k_KEYWORD(self) -> Pred:
        self.r.sp()
        flag = self.r.flag().casefold()
        return lambda m: any(f.casefold() == flag for f in m.flags)

    def k_UNKEYWORD(self) -> Pred:
        inner = self.k_KEYWORD()
        return lambda m: not inner(m)

    def k_LARGER(self) -> Pred:
        self.r.sp()
        n = self.r.number(2**63)
        return lambda m: m.size > n

    def k_SMALLER(self) -> Pred:
        self.r.sp()
        n = self.r.number(2**63)
        return lambda m: m.size < n

    def _internal(self, op: str) -> Pred:
        self.r.sp()
        day = parse_date(self.r)

        def date_of(m: Candidate) -> dt.date:
            return dt.datetime.fromtimestamp(m.internaldate, dt.UTC).date()
        return _compare(date_of, day, op)

    def k_BEFORE(self) -> Pred:
        return self._internal("<")

    def k_ON(self) -> Pred:
        return self._internal("=")

    def k_SINCE(self) -> Pred:
        return self._internal(">=")

    def _sent(self, op: str) -> Pred:
        self.r.sp()
        day = parse_date(self.r)
        self.ctx.needs_content = True
        return _compare(_sent_date, day, op)

    def k_SENTBEFORE(self) -> Pred:
        return self._sent("<")

    def k_SENTON(self) -> Pred:
        return self._sent("=")

    def k_SENTSINCE(self) -> Pred:
        return self._sent(">=")

    def _header(self, name: bytes) -> Pred:
        self.r.sp()
        text = self._string()
        self.ctx.needs_content = True

        name_l = name.lower()
        if not text:
            return lambda m: bool(m.folded(name_l))
        # A cheap first look at the raw header rules most messages out (see may_contain).
        quick = tuple(w.encode() for w in text.split()) if text.isascii() else ()
        address = name_l in _ADDRESS_FIELDS

        def ruled_out(m: Candidate) -> bool:
            return (bool(quick) and m.loader is not None
                    and not m.entry.may_contain(quick, address))

        if address:
            def addr_pred(m: Candidate) -> bool:
                if ruled_out(m):
                    return False
                values = m.folded(name_l)
                if any(text in value for value in values):
                    return True
                # The envelope's form differs from the field only around comments and
                # quoted parts: parse just those (parsing every field made SEARCH FROM
                # 1.6x slower on bench/imap_bench.py).
                return (any("(" in value or '"' in value for value in values)
                        and text in _address_text(m, name_l))
            if quick:
                _narrows(addr_pred, lambda index: index.head_candidates(quick, True))
            return addr_pred

        def pred(m: Candidate) -> bool:
            return not ruled_out(m) and any(text in value for value in m.folded(name_l))
        if quick:
            _narrows(pred, lambda index: index.head_candidates(quick, address))
        return pred

    def k_FROM(self) -> Pred:
        return self._header(b"from")

    def k_TO(self) -> Pred:
        return self._header(b"to")

    def k_CC(self) -> Pred:
        return self._header(b"cc")

    def k_BCC(self) -> Pred:
        return self._header(b"bcc")

    def k_SUBJECT(self) -> Pred:
        return self._header(b"subject")

    def k_HEADER(self) -> Pred:
        self.r.sp()
        name = self.r.astring()
        return self._header(name)

    def k_BODY(self) -> Pred:
        self.r.sp()
        text = self._string()
        self.ctx.needs_content = True

        def pred(m: Candidate) -> bool:
            return _body_has(m, text)
        if text.isascii():
            needle = text.encode()
            _narrows(pred, lambda index: index.body_candidates(needle))
        return pred

    def k_TEXT(self) -> Pred:
        self.r.sp()
        text = self._string()
        self.ctx.needs_content = True

        def pred(m: Candidate) -> bool:
            head = m.head.header_bytes()
            return text in _fold(mime.decode_words(head)) or _body_has(m, text)
        return pred

    def k_MODSEQ(self) -> Pred:
        self.r.sp()
        if self.r.peek() == 0x22:  # entry-name entry-type-req: per-flag modseqs are not kept
            self.r.string()
            self.r.sp()
            kind = self.r.atom().lower()
            if kind not in ("priv", "shared", "all"):
                raise ParseError("bad MODSEQ entry type")
            self.r.sp()
        n = self.r.number(2**63 - 1)
        self.ctx.uses_modseq = True
        return lambda m: m.modseq >= n


_ASCII_SUPERSETS = frozenset((
    "us-ascii", "ascii", "utf-8", "utf8", "iso-8859-1", "iso-8859-15", "latin1", "latin-1",
    "windows-1252", "cp1252"))


def _body_has(m: Candidate, text: str) -> bool:
    if m.loader is not None:
        entry = m.entry
        charset = entry.plain_charset()
        if charset:   # one text part sent as is: its text is the body, no MIME tree needed
            raw = m.raw
            if text.isascii() and raw.isascii() and charset.lower() in _ASCII_SUPERSETS:
                # ASCII text decodes to itself and casefolds as lower(): same answer, no copies
                return raw.lower().find(text.encode(), entry.body_offset) >= 0
            return text in _fold(mime._charset_decode(raw[entry.body_offset:], charset))
    return any(text in _fold(mime.part_text(part)) for part in mime.text_parts(m.root))


def _sent_date(m: Candidate) -> dt.date:
    value = m.head.header(b"date")
    if value:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
        if parsed:
            try:
                return dt.date(parsed[0], parsed[1], parsed[2])
            except ValueError:
                pass
    return dt.datetime.fromtimestamp(m.internaldate, dt.UTC).date()


def _compare(get: Callable[[Candidate], dt.date], day: dt.date, op: str) -> Pred:
    if op == "<":
        return lambda m: get(m) < day
    if op == "=":
        return lambda m: get(m) == day
    return lambda m: get(m) >= day


Narrow = Callable[[Any], "set[int] | None"]


def _narrows(pred: Pred, narrow: Narrow) -> None:
    """Attach a bulk pre-check to a predicate: given a msgcache.TextIndex over the
    messages searched, the positions of those the predicate may hold for (every
    other one it surely rejects), or None when the index cannot tell."""
    pred.narrow = narrow  # type: ignore[attr-defined]


def narrow_of(pred: Pred) -> Narrow | None:
    """The bulk pre-check of a predicate, if it has one (see _narrows)."""
    return getattr(pred, "narrow", None)


def _and(keys: list[Pred]) -> Pred:
    if len(keys) == 1:
        return keys[0]

    def pred(m: Candidate) -> bool:
        return all(k(m) for k in keys)
    narrows = [n for n in map(narrow_of, keys) if n is not None]
    if narrows:
        def narrow(index: Any) -> set[int] | None:
            found = None
            for n in narrows:
                got = n(index)
                if got is not None:
                    found = got if found is None else found & got
            return found
        _narrows(pred, narrow)
    return pred


def _flag(name: str, present: bool = True) -> Pred:
    if present:
        return lambda m: name in m.flags
    return lambda m: name not in m.flags


_SIMPLE: dict[str, Pred] = {
    "ALL": lambda m: True,
    "ANSWERED": _flag("\\Answered"), "UNANSWERED": _flag("\\Answered", False),
    "DELETED": _flag("\\Deleted"), "UNDELETED": _flag("\\Deleted", False),
    "DRAFT": _flag("\\Draft"), "UNDRAFT": _flag("\\Draft", False),
    "FLAGGED": _flag("\\Flagged"), "UNFLAGGED": _flag("\\Flagged", False),
    "SEEN": _flag("\\Seen"), "UNSEEN": _flag("\\Seen", False),
    "RECENT": lambda m: m.recent,
    "NEW": lambda m: m.recent and "\\Seen" not in m.flags,
    "OLD": lambda m: not m.recent,
}


def parse_search(r: Reader, ctx: Context, allow_return: bool = True
                 ) -> tuple[list[str] | None, Pred]:
    """`[RETURN (...)] [CHARSET x] program` → (return options or None, predicate)."""
    returns: list[str] | None = None
    if allow_return and r.take(b"RETURN "):
        r.enter()
        returns = []
        while not r.take(b")"):
            if returns:
                r.sp()
            opt = r.atom().upper()
            if opt not in ("MIN", "MAX", "ALL", "COUNT", "SAVE"):
                raise ParseError(f"unknown RETURN option {opt}")
            returns.append(opt)
        r.depth -= 1
        r.sp()
    charset = "UTF-8"
    if r.take(b"CHARSET "):
        charset = r.astring().decode("ascii", "replace").upper()
        if charset not in CHARSETS:
            raise BadCharset(charset)
        r.sp()
    pred = Program(r, ctx, charset).parse_all()
    r.end()
    return returns, pred
