"""Reading a few header fields from raw message bytes without rewriting them.

keepmail never re-serializes a message (DESIGN.md, principle 2): it reads
what it needs from the header block and prepends its own fields.
"""

from __future__ import annotations

import re
import time
from email.header import decode_header, make_header
from email.utils import formatdate

_FIELD_CACHE: dict[str, re.Pattern[bytes]] = {}
_UNFOLD = re.compile(rb"\r?\n[ \t]")


def header_block(raw: bytes) -> bytes:
    """The header section, up to and including the blank line (or all of raw)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
        return raw if end < 0 else raw[:end + 2]
    return raw[:end + 4]


def raw_header(raw: bytes, name: str, headers: bytes | None = None) -> bytes | None:
    """The first field's value, unfolded, undecoded; None when absent."""
    block = header_block(raw) if headers is None else headers
    lowered = b"\n" + block.lower()
    key = b"\n" + name.lower().encode() + b":"
    pos = lowered.find(key)
    if pos < 0:
        match = _loose_pattern(name).search(block)  # "Name :" with blanks before the colon
        if match is None:
            return None
        start = match.end()
    else:
        start = pos + len(key) - 1  # -1: the "\n" we prepended
    end = start
    while True:  # the value runs on over folded continuation lines
        nl = block.find(b"\n", end)
        if nl < 0 or nl + 1 >= len(block) or block[nl + 1] not in (0x20, 0x09):
            end = len(block) if nl < 0 else nl
            break
        end = nl + 1
    value = block[start:end]
    return (_UNFOLD.sub(b" ", value) if b"\n" in value else value).strip()


def _loose_pattern(name: str) -> re.Pattern[bytes]:
    pat = _FIELD_CACHE.get(name)
    if pat is None:
        pat = re.compile(rb"(?im)^" + re.escape(name.encode()) + rb"[ \t]+:")
        _FIELD_CACHE[name] = pat
    return pat


def header(raw: bytes, name: str, headers: bytes | None = None) -> str | None:
    """The first field's value with RFC 2047 encoded-words decoded."""
    value = raw_header(raw, name, headers)
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except Exception:
        return text


def has_header(raw: bytes, name: str) -> bool:
    return raw_header(raw, name) is not None


def prepend(raw: bytes, *fields: bytes) -> bytes:
    """Prepend complete header fields (each ending in CRLF) to the message."""
    return b"".join(fields) + raw


def format_field(name: str, value: str) -> bytes:
    """A header field, folded at spaces so no line exceeds 78 characters where possible."""
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}:"
    for word in words:
        if len(current) + 1 + len(word) > 78 and current.strip():
            lines.append(current)
            current = "\t" + word
        else:
            current += " " + word
    lines.append(current)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


_dates: dict[bool, tuple[int, str]] = {}


def date_now(*, gmt: bool = False) -> str:
    """An RFC 5322 date for this second ("GMT" or "-0000" zone), formatted once per
    second: formatting costs more than the rest of a Received field."""
    second = int(time.time())
    cached = _dates.get(gmt)
    if cached is None or cached[0] != second:
        cached = _dates[gmt] = (second, formatdate(second, usegmt=gmt))
    return cached[1]
