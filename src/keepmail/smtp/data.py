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


async def read_data(reader: asyncio.StreamReader, max_size: int) -> Content:
    """Read DATA content up to the terminating line; bounded memory past max_size."""
    parts: list[bytes] = []
    size = 0
    problem = ""
    line_start = True     # the next read begins a new line
    prev_crlf = True      # the previous line ended in CRLF
    while True:
        try:
            line = await reader.readuntil(b"\n")
            complete = True
        except asyncio.LimitOverrunError as exc:
            line = await reader.readexactly(max(1, exc.consumed))
            complete = False
        size += len(line)
        if line_start and complete:
            if line == b".\r\n":
                if prev_crlf:
                    break
                problem = problem or SMUGGLING
            elif line == b".\n":
                problem = problem or SMUGGLING
        problem = problem or _line_problem(line, complete)
        if size > max_size:
            problem = problem or TOO_BIG
        if not problem:
            parts.append(_canonical(line, line_start, complete))
        elif parts:
            parts.clear()  # refused anyway: hold no memory for it
        if complete:
            prev_crlf = line.endswith(b"\r\n")
        line_start = complete
    return Content(b"".join(parts), size, problem)


def _line_problem(line: bytes, complete: bool) -> str:
    if b"\0" in line:
        return NUL
    if complete:
        body = line[:-1]
        body = body[:-1] if body.endswith(b"\r") else body
    else:
        # A CR at the end of a piece may pair with an LF starting the next.
        body = line[:-1] if line.endswith(b"\r") else line
    return BARE_CR if b"\r" in body else ""


def _canonical(line: bytes, line_start: bool, complete: bool) -> bytes:
    if line_start and line.startswith(b"."):
        line = line[1:]  # dot-unstuffing (RFC 5321 4.5.2)
    if complete and not line.endswith(b"\r\n"):
        line = line[:-1] + b"\r\n"
    return line


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
