"""Reading message content: DATA (dot-terminated) and BDAT chunks (RFC 3030).

The only end of DATA is CRLF "." CRLF (RFC 5321 4.1.1.4). Anything another
server might read as an end — a "." line next to a bare LF, a bare CR — makes
the whole message refused, so a smuggled second message (SMTP smuggling,
CVE-2023-51766 and kin) can never be split off here nor passed on downstream.
Bare LF line ends elsewhere are normalized to CRLF, and NUL bytes refused:
IMAP clients and downstream servers need canonical lines.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

SMUGGLING = "smuggling"
TOO_BIG = "size"
NUL = "nul"
BARE_CR = "bare-cr"


@dataclass
class Content:
    message: bytes
    size: int          # bytes received on the wire
    problem: str = ""  # empty, or one of the constants above


_BARE_CR = re.compile(rb"\r(?!\n)")
# A "." line next to a bare LF: what a lenient server downstream could take
# for the end of data.
_AMBIGUOUS_DOT = re.compile(rb"(?:^|(?<!\r)\n)\.\r?\n|\r\n\.\n|^\.\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_END = b"\r\n.\r\n"


async def read_data(reader: asyncio.StreamReader, max_size: int) -> Content:
    """Read DATA content up to the terminating line; bounded memory past max_size.

    Reads up to each ".\r\n" (every real terminator ends so) rather than line
    by line, then checks and canonicalizes the whole message with byte-level
    operations: a few calls per message instead of one per line.
    """
    parts: list[bytes] = []
    size = 0
    tail = b"\r\n"  # as if DATA's own line ended here: "." first means empty
    too_big = False
    while True:
        try:
            block = await reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as exc:
            block = await reader.readexactly(max(1, exc.consumed))
        size += len(block)
        if size > max_size:
            too_big = True
            parts.clear()  # refused anyway: hold no memory for it
        else:
            parts.append(block)
        ending = (tail + block)[-5:]
        if ending == _END:
            break
        tail = ending
    if too_big:
        return Content(b"", size, TOO_BIG)
    message = b"".join(parts)
    body = message[:-3]  # drop ".\r\n", keep the CRLF ending the last line
    problem = _problem(body)
    if problem:
        return Content(b"", size, problem)
    return Content(_canonical(body), size)


def _problem(body: bytes) -> str:
    # Cheap byte counts first: the regular expressions run only on odd mail.
    if b"\0" in body:
        return NUL
    crlf = body.count(b"\r\n")
    if body.count(b"\r") != crlf and _BARE_CR.search(body):
        return BARE_CR
    if (body.count(b"\n") != crlf or body.startswith(b".")) and _AMBIGUOUS_DOT.search(body):
        return SMUGGLING
    return ""


def _canonical(body: bytes) -> bytes:
    if body.count(b"\n") != body.count(b"\r\n"):
        body = _BARE_LF.sub(b"\r\n", body)
    # Dot-unstuffing (RFC 5321 4.5.2): a leading "." of any line is removed.
    if body.startswith(b"."):
        body = body[1:]
    return body.replace(b"\r\n.", b"\r\n")


def check_chunked(message: bytes) -> tuple[bytes, str]:
    """Validate and canonicalize BDAT content (no dot-stuffing there)."""
    if b"\0" in message:
        return b"", NUL
    if b"\r" in message.replace(b"\r\n", b""):
        return b"", BARE_CR
    if b"\n" in message.replace(b"\r\n", b""):
        message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return message, ""


async def read_chunk(reader: asyncio.StreamReader, length: int, keep: bool) -> bytes:
    """Read exactly length bytes of a BDAT chunk; discard them if not keep."""
    if keep:
        return await reader.readexactly(length)
    remaining = length
    while remaining:
        piece = await reader.read(min(remaining, 65536))
        if not piece:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(piece)
    return b""
