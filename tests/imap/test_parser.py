"""Bad input: the parser and framer stay bounded and answer BAD/NO (fuzzed with hypothesis)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepmail.imap import utf7
from keepmail.imap.parser import (
    FrameError,
    Limits,
    ParseError,
    RawCommand,
    Reader,
    read_command,
    split_command,
)

from .conftest import ImapEnv


class FakeSource:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read_line(self, limit: int) -> tuple[bytes, bool]:
        nl = self.data.find(b"\n")
        if nl < 0:
            raise ConnectionError("eof")
        line, self.data = self.data[:nl], self.data[nl + 1:]
        return line.rstrip(b"\r"), len(line) <= limit

    async def read_exact(self, n: int) -> bytes:
        if len(self.data) < n:
            raise ConnectionError("eof")
        out, self.data = self.data[:n], self.data[n:]
        return out


async def _noop(_data: bytes) -> None:
    return None


def _parse_all(data: bytes) -> None:
    src = FakeSource(data)
    limits = Limits(max_line=1000, max_literal=1000, max_append=5000, max_command=10000)
    while True:
        try:
            raw = asyncio.run(read_command(src, limits, _noop))
        except FrameError:
            continue
        except ConnectionError:
            return
        try:
            _tag, _name, r = split_command(raw)
            while not r.at_end():
                if r.peek() == ord("("):
                    r.enter()
                else:
                    r.astring() if r.peek() != ord(" ") else r.sp()
        except ParseError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_framer_and_reader(data: bytes) -> None:
    _parse_all(data)


tokens = st.sampled_from([b"a", b"SEARCH", b" ", b"(", b")", b"{3}\r\nabc", b"{2+}\r\nxy",
                          b'"q\\"x"', b"1:*", b"\r\n", b"NIL", b"~{1}\r\n\x00", b"{", b"}",
                          b"BODY[1.2]<0.5>", b"\\Seen", b"*", b"%", b"\x00", b"\xff"])


@settings(max_examples=300, deadline=None)
@given(st.lists(tokens, max_size=40))
def test_fuzz_structured(parts: list[bytes]) -> None:
    _parse_all(b"".join(parts) + b"\r\n")


@given(st.text(max_size=30))
def test_utf7_roundtrip(name: str) -> None:
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return
    assert utf7.decode(utf7.encode(name)) == name


@pytest.mark.parametrize("bad", ["&", "&Jjo", "&AGE-", "&Jjo-&Jjo-", "&ZeVnLIqe", "\x80", "&-&"])
def test_utf7_invalid(bad: str) -> None:
    with pytest.raises(utf7.Utf7Error):
        utf7.decode(bad)


def test_reader_basics() -> None:
    r = Reader(RawCommand([b'x "a\\\\b" {3}', b" NIL 1:3,5,*"], [b"lit"]), 2)
    assert r.astring() == b"a\\b"
    r.sp()
    assert r.astring() == b"lit"
    r.sp()
    assert r.nstring() is None
    r.sp()
    seqs = r.sequence_set()
    assert seqs.expand(9, 9) == [1, 2, 3, 5, 9]
    assert r.at_end()


def test_network_limits(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.send(b"a NOOP " + b"x" * (1024 * 1024) + b"\r\n")
    assert raw.line().startswith(b"a BAD")
    assert raw.cmd("b NOOP")[-1] == b"b OK NOOP completed"
    raw.send(b"c SELECT {5000000}\r\n")
    assert raw.line().startswith(b"c BAD")
    raw.send(b"d LOGIN {5}\r\n")  # wrong state, but the literal is read first
    assert raw.line().startswith(b"+ ")
    raw.send(b"abcde x\r\n")
    assert raw.line().startswith(b"d BAD")
    assert raw.cmd("e UNKNOWNCMD")[-1].startswith(b"e BAD")
    raw.send(b"+ NOOP\r\n")
    assert raw.line().startswith(b"* BAD")
    assert raw.cmd('f SELECT "unterminated')[-1].startswith(b"f BAD")
    assert raw.cmd("g FETCH 1:* (" + "(" * 10000 + ")")[-1].startswith(b"g BAD")
    raw.close()


def test_unterminated_literal_then_disconnect(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.send(b"a APPEND INBOX {100+}\r\nonly a little")
    raw.close()
    c = imap.connect()
    assert c.noop()[0] == "OK"
    c.logout()
