"""Writing IMAP data items (RFC 9051 section 4: strings, lists, NIL; section 2.3.3 dates).

Strings go out quoted when they can and as literals otherwise, so any byte
sequence, however odd, stays parseable by the client.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from . import utf7

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_QUOTED_UNSAFE = frozenset(b"\r\n\x00")


def _quotable(data: bytes, utf8: bool) -> bool:
    if len(data) > 1024:
        return False
    if any(c in _QUOTED_UNSAFE for c in data):
        return False
    return utf8 or data.isascii()


def string(data: bytes | str, utf8: bool = False) -> bytes:
    """A quoted string or a literal."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if _quotable(data, utf8):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def nstring(data: bytes | str | None, utf8: bool = False) -> bytes:
    return b"NIL" if data is None else string(data, utf8)


def literal(data: bytes, binary: bool = False) -> bytes:
    return (b"~{%d}\r\n" if binary else b"{%d}\r\n") % len(data) + data


_ATOM_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                       b"-_./&+,:;=?@!#$'^`|~<>")


def astring(data: bytes | str, utf8: bool = False) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    if data and all(c in _ATOM_SAFE for c in data) and data.upper() != b"NIL":
        return data
    return string(data, utf8)


def mailbox(name: str, utf8: bool) -> bytes:
    """A mailbox name as the client expects it (UTF-8 or modified UTF-7)."""
    if utf8:
        return astring(name.encode("utf-8"), True)
    return astring(utf7.encode(name).encode("ascii"))


def plist(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flags(items: Iterable[str]) -> bytes:
    return plist(f.encode("utf-8") for f in sorted(items, key=_flag_order))


_SYSTEM_ORDER = {"\\Answered": 0, "\\Flagged": 1, "\\Deleted": 2, "\\Seen": 3, "\\Draft": 4,
                 "\\Recent": 5}


def _flag_order(flag: str) -> tuple[int, str]:
    return _SYSTEM_ORDER.get(flag, 9), flag


def date_time(ts: float) -> bytes:
    """INTERNALDATE form: "dd-Mon-yyyy hh:mm:ss +zzzz" (server's zone is UTC)."""
    t = time.gmtime(ts)
    return (b'"%2d-%s-%04d %02d:%02d:%02d +0000"'
            % (t.tm_mday, _MONTHS[t.tm_mon - 1].encode(), t.tm_year, t.tm_hour, t.tm_min,
               t.tm_sec))


def seq_set(numbers: Iterable[int]) -> bytes:
    """Compact sequence set from numbers (sorted, merged into ranges)."""
    nums = sorted(set(numbers))
    out: list[bytes] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(b"%d" % nums[i] if i == j else b"%d:%d" % (nums[i], nums[j]))
        i = j + 1
    return b",".join(out)


def seq_set_ordered(numbers: list[int]) -> bytes:
    """A sequence set keeping the given order (COPYUID pairs must line up)."""
    out: list[bytes] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(b"%d" % numbers[i] if i == j else b"%d:%d" % (numbers[i], numbers[j]))
        i = j + 1
    return b",".join(out)


class Str:
    """A string item of a response tree (quoted or literal on output)."""

    __slots__ = ("value",)

    def __init__(self, value: str | bytes) -> None:
        self.value = value if isinstance(value, bytes) else value.encode("utf-8",
                                                                          "surrogateescape")


def render(item: object, utf8: bool = False) -> bytes:
    """A response tree (Str, int, None, nested lists) as IMAP bytes."""
    if item is None:
        return b"NIL"
    if isinstance(item, Str):
        return string(item.value, utf8)
    if isinstance(item, int):
        return b"%d" % item
    if isinstance(item, list):
        return b"(" + b" ".join(render(i, utf8) for i in item) + b")"
    if isinstance(item, bytes):
        return item
    raise TypeError(type(item))
