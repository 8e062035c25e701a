"""Reading IMAP commands: framing with literals, then a bounded tokenizer.

Framing (RFC 9051 sections 2.2 and 4.3, RFC 7888 LITERAL+/LITERAL-, RFC 3516
literal8): a command is one or more lines, each but the last ending with a
literal announcement `{n}`, `{n+}` or `~{n}`, followed by n raw bytes. Every
size is checked before anything is allocated: a line longer than the limit is
discarded as it arrives, a literal larger than the limit is refused before the
client sends it (synchronizing) or ends the connection (non-synchronizing),
so no input can make a session hold more than its limits.

Tokenizing (RFC 9051 section 9, formal syntax): `Reader` walks the framed
command; each command handler pulls the arguments it expects, and anything
else is a `ParseError` that becomes a tagged BAD.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

# Characters that may not appear in an atom (RFC 9051 "atom-specials").
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x00, 0x20)) | {0x7F}
ATOM_CHARS = frozenset(range(0x21, 0x7F)) - _ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
LIST_CHARS = ATOM_CHARS | {ord("%"), ord("*"), ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}

_LITERAL_AT_END = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
_QUOTED = re.compile(rb'"(?:[^"\\\r\n]|\\.)*"')

_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
MAX_DEPTH = 64          # nesting of parenthesized lists (search programs, fetch items)
MAX_NUMBER = 2**32 - 1
MAX_NUMBER64 = 2**63 - 1


class ParseError(Exception):
    """Malformed command arguments: answered with a tagged BAD."""


class FrameError(Exception):
    """A command that cannot be read whole.

    `close` asks the connection to end (the input is no longer in sync);
    `code` is a response code such as TOOBIG.
    """

    def __init__(self, text: str, tag: bytes = b"", *, close: bool = False, code: str = "",
                 no: bool = False) -> None:
        super().__init__(text)
        self.text, self.tag, self.close, self.code, self.no = text, tag, close, code, no


class LineSource(Protocol):
    """What the framer needs from a connection's input buffer."""

    async def read_line(self, limit: int) -> tuple[bytes, bool]:
        """The next line without CRLF; if longer than limit: (its first bytes, False)."""
        ...

    async def read_exact(self, n: int) -> bytes:
        ...


@dataclass
class Limits:
    max_line: int = 64 * 1024          # one line of a command
    max_literal: int = 1024 * 1024     # literals of commands other than APPEND
    max_append: int = 50 * 1024 * 1024 # APPENDLIMIT (RFC 7889)
    max_command: int = 100 * 1024 * 1024  # all lines and literals of one command


@dataclass
class RawCommand:
    """A framed command: line segments and the literals between them."""

    segments: list[bytes]
    literals: list[bytes] = field(default_factory=list)

    @property
    def tag(self) -> bytes:
        return self.segments[0].split(b" ", 1)[0]

    @property
    def size(self) -> int:
        return sum(map(len, self.segments)) + sum(map(len, self.literals))


def _strip_quoted(line: bytes) -> bytes:
    # A `{3}` inside a quoted string is not a literal announcement.
    return _QUOTED.sub(b'""', line) if b'"' in line else line


def literal_marker(line: bytes) -> tuple[int, bool] | None:
    """(size, synchronizing) if line announces a literal."""
    if not line.endswith(b"}"):
        return None
    m = _LITERAL_AT_END.search(_strip_quoted(line))
    if m is None:
        return None
    return int(m.group(2)), not m.group(3)


def _command_name(first: bytes) -> bytes:
    parts = first.split(b" ", 3)
    name = parts[1].upper() if len(parts) > 1 else b""
    if name == b"UID" and len(parts) > 2:
        name = parts[2].upper()
    return name


async def read_command(src: LineSource, limits: Limits,
                       send: Callable[[bytes], Awaitable[None]]) -> RawCommand:
    """Read one whole command, sending `+` continuations for synchronizing literals."""
    segments: list[bytes] = []
    literals: list[bytes] = []
    total = 0
    while True:
        line, whole = await src.read_line(limits.max_line)
        tag = (segments[0] if segments else line).split(b" ", 1)[0][:64]
        if not whole:
            raise FrameError("Command line too long", tag)
        segments.append(line)
        total += len(line)
        marker = literal_marker(line)
        if marker is None:
            return RawCommand(segments, literals)
        size, sync = marker
        name = _command_name(segments[0])
        cap = limits.max_append if name == b"APPEND" else limits.max_literal
        if size > cap or total + size > limits.max_command:
            if sync:
                code = "TOOBIG" if name == b"APPEND" else ""
                raise FrameError("Literal too large", tag, code=code, no=name == b"APPEND")
            # The client is sending the bytes anyway; we will not read them.
            raise FrameError("Non-synchronizing literal too large", tag, close=True,
                             code="TOOBIG")
        if sync:
            await send(b"+ Ready for literal data\r\n")
        literals.append(await src.read_exact(size) if size else b"")
        total += size


@dataclass(frozen=True)
class SeqRange:
    """One element of a sequence set; None stands for `*`."""

    lo: int | None
    hi: int | None

    def resolve(self, star: int) -> tuple[int, int]:
        lo = star if self.lo is None else self.lo
        hi = star if self.hi is None else self.hi
        return (lo, hi) if lo <= hi else (hi, lo)


@dataclass(frozen=True)
class SeqSet:
    """A sequence set (RFC 9051 "sequence-set"), or `$` for the saved result (RFC 5182)."""

    ranges: tuple[SeqRange, ...]
    saved: bool = False

    def contains(self, n: int, star: int) -> bool:
        for r in self.ranges:
            lo, hi = r.resolve(star)
            if lo <= n <= hi:
                return True
        return False

    def expand(self, star: int, cap: int) -> list[int]:
        """Every number in the set, each range clipped to 1..cap."""
        out: set[int] = set()
        for r in self.ranges:
            lo, hi = r.resolve(star)
            out.update(range(max(lo, 1), min(hi, cap) + 1))
        return sorted(out)


class Reader:
    """A cursor over a framed command's arguments."""

    def __init__(self, raw: RawCommand, start: int = 0) -> None:
        self.segs = raw.segments
        self.lits = raw.literals
        self.k = 0
        self.pos = start
        self.depth = 0

    # -- positions -----------------------------------------------------------
    @property
    def _seg(self) -> bytes:
        return self.segs[self.k]

    def at_end(self) -> bool:
        return self.k == len(self.segs) - 1 and self.pos >= len(self._seg)

    def peek(self) -> int:
        """The next byte, or -1 at the end of a line segment."""
        seg = self._seg
        return seg[self.pos] if self.pos < len(seg) else -1

    def peek_is(self, text: bytes) -> bool:
        return self._seg[self.pos:self.pos + len(text)].upper() == text.upper()

    def take(self, text: bytes) -> bool:
        if self.peek_is(text):
            self.pos += len(text)
            return True
        return False

    def expect(self, text: bytes) -> None:
        if not self.take(text):
            raise ParseError(f"expected {text.decode()!r}")

    def sp(self) -> None:
        self.expect(b" ")

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected extra arguments")

    def enter(self) -> None:
        """Open a parenthesized list (bounded nesting)."""
        self.expect(b"(")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("too deeply nested")

    def leave(self) -> None:
        self.expect(b")")
        self.depth -= 1

    # -- tokens ------------------------------------------------------------------
    def _run(self, allowed: frozenset[int]) -> bytes:
        seg, start = self._seg, self.pos
        i = start
        while i < len(seg) and seg[i] in allowed:
            i += 1
        self.pos = i
        return seg[start:i]

    def atom(self) -> str:
        value = self._run(ATOM_CHARS)
        if not value:
            raise ParseError("expected an atom")
        return value.decode("ascii")

    def _at_literal(self) -> bool:
        """A literal `{n}` or literal8 `~{n}` starts here (a lone `~` is an atom char)."""
        seg, i = self._seg, self.pos
        return i < len(seg) and (seg[i] == 0x7B or seg[i:i + 2] == b"~{")

    def _literal(self) -> bytes | None:
        seg = self._seg
        if not self._at_literal():
            return None
        m = _LITERAL_AT_END.match(seg, self.pos)
        if m is None or m.end() != len(seg) or self.k >= len(self.lits):
            raise ParseError("bad literal")
        value = self.lits[self.k]
        self.k += 1
        self.pos = 0
        return value

    def is_binary_literal(self) -> bool:
        return self._seg[self.pos:self.pos + 2] == b"~{"

    def _quoted(self) -> bytes:
        seg = self._seg
        i = self.pos + 1
        out = bytearray()
        while i < len(seg):
            c = seg[i]
            if c == 0x22:
                self.pos = i + 1
                return bytes(out)
            if c == 0x5C:
                i += 1
                if i >= len(seg) or seg[i] not in (0x22, 0x5C):
                    raise ParseError("bad escape in quoted string")
                c = seg[i]
            elif c in (0x0D, 0x0A, 0x00):
                raise ParseError("bad character in quoted string")
            out.append(c)
            i += 1
        raise ParseError("unterminated quoted string")

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self._quoted()
        lit = self._literal()
        if lit is None:
            raise ParseError("expected a string")
        return lit

    def astring(self) -> bytes:
        if self.peek() == 0x22 or self._at_literal():
            return self.string()
        value = self._run(ASTRING_CHARS)
        if not value:
            raise ParseError("expected an astring")
        return value

    def nstring(self) -> bytes | None:
        if self.take(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        """A LIST pattern: astring with wildcards allowed."""
        if self.peek() == 0x22 or self._at_literal():
            return self.string()
        value = self._run(LIST_CHARS)
        if not value:
            raise ParseError("expected a mailbox pattern")
        return value

    def letters(self) -> str:
        return self._run(_LETTERS).decode("ascii")

    def number(self, maximum: int = MAX_NUMBER) -> int:
        digits = self._run(frozenset(b"0123456789"))
        if not digits or len(digits) > 20:
            raise ParseError("expected a number")
        value = int(digits)
        if value > maximum:
            raise ParseError("number out of range")
        return value

    def nz_number(self, maximum: int = MAX_NUMBER) -> int:
        value = self.number(maximum)
        if value == 0:
            raise ParseError("expected a non-zero number")
        return value

    def seq_number(self) -> int | None:
        if self.take(b"*"):
            return None
        return self.nz_number()

    def sequence_set(self) -> SeqSet:
        if self.take(b"$"):
            return SeqSet((), saved=True)
        ranges = []
        while True:
            lo = self.seq_number()
            hi = self.seq_number() if self.take(b":") else lo
            ranges.append(SeqRange(lo, hi))
            if len(ranges) > 100_000:
                raise ParseError("sequence set too long")
            if not self.take(b","):
                return SeqSet(tuple(ranges))

    def flag(self) -> str:
        if self.take(b"\\"):
            if self.take(b"*"):
                return "\\*"
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> list[str]:
        self.enter()
        flags: list[str] = []
        while not self.take(b")"):
            if flags:
                self.sp()
            flags.append(self.flag())
        self.depth -= 1
        return flags

    def paren_atoms(self) -> list[str]:
        """A parenthesized list of atoms, e.g. STATUS items or capabilities."""
        self.enter()
        items: list[str] = []
        while not self.take(b")"):
            if items:
                self.sp()
            items.append(self.atom())
        self.depth -= 1
        return items

    def rest_of_line(self) -> bytes:
        value = self._seg[self.pos:]
        self.pos = len(self._seg)
        return value


def split_command(raw: RawCommand) -> tuple[str, str, Reader]:
    """(tag, upper-case command name, reader positioned after the name)."""
    first = raw.segments[0]
    sp = first.find(b" ")
    tag = first[:sp] if sp > 0 else first
    if not tag or any(c not in TAG_CHARS for c in tag):
        raise ParseError("bad tag")
    if sp < 0:
        raise ParseError("missing command")
    reader = Reader(raw, sp + 1)
    name = reader._run(ATOM_CHARS)
    if not name:
        raise ParseError("missing command")
    return tag.decode("ascii"), name.decode("ascii").upper(), reader
