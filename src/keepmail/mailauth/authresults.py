"""Authentication-Results header fields, RFC 8601.

- 2.2 syntax: authserv-id, then "; method=result" clauses with optional
  "reason=" (2.7) and properties (ptype.property=value, 2.3);
- 5 removal of fields that claim our authserv-id, so a sender cannot forge
  our verdicts: done on raw header bytes (the body and every other byte are
  left as they are; keepmail never re-serializes a message, DESIGN.md
  principle 2). Only fields in the header section are considered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_FIELD_START = re.compile(rb"(?m)^(?=[^ \t\r\n])")
# RFC 2045 token characters (no tspecials such as "/" "=" "?"), plus "@" (RFC 8601 2.2 pvalue)
_TOKEN_SAFE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-^_`{|}~.@]+$")
_AR_NAME = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE)


@dataclass
class MethodResult:
    method: str                          # spf, dkim, dmarc, arc, iprev, ...
    result: str
    reason: str | None = None
    props: list[tuple[str, str]] = field(default_factory=list)   # ("smtp.mailfrom", "x.test")
    comment: str | None = None


def quote(value: str) -> str:
    """A value as a token when it can be one, else a quoted-string (RFC 5322 3.2.4)."""
    if value and _TOKEN_SAFE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    clean = re.sub(r"[()\\\r\n]", " ", text).strip()
    return f" ({clean})" if clean else ""


def format_method(m: MethodResult) -> str:
    out = f"{m.method}={m.result}"
    if m.comment:
        out += _comment(m.comment)
    if m.reason:
        out += f" reason={quote(_one_line(m.reason)[:200])}"
    for name, value in m.props:
        if value:
            out += f" {name}={quote(_one_line(value))}"
    return out


def _one_line(text: str) -> str:
    return re.sub(r"[\r\n\t]+", " ", text)


def header_value(authserv_id: str, results: Sequence[MethodResult]) -> str:
    """The field value (after "Authentication-Results:"), folded between clauses."""
    if not results:
        return f"{authserv_id}; none"
    return f"{authserv_id};\r\n\t" + ";\r\n\t".join(format_method(m) for m in results)


def header_field(authserv_id: str, results: Sequence[MethodResult]) -> bytes:
    """A complete field with CRLF, ready to prepend."""
    return f"Authentication-Results: {header_value(authserv_id, results)}\r\n".encode()


def _skip_cfws(text: str) -> str:
    """Drop leading whitespace and (nested) comments."""
    text = text.lstrip(" \t\r\n")
    while text.startswith("("):
        depth, end = 0, len(text) - 1
        for pos, ch in enumerate(text):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                end = pos
                break
        text = text[end + 1:].lstrip(" \t\r\n")
    return text


def authserv_id_of(field_bytes: bytes) -> str:
    """The authserv-id an Authentication-Results field claims (lower case)."""
    value = _skip_cfws(field_bytes.split(b":", 1)[1].decode("utf-8", "replace"))
    if value.startswith('"'):
        m = re.match(r'"((?:[^"\\]|\\.)*)"', value)
        return (m.group(1) if m else value).lower()
    return re.split(r"[\s;(]", value, maxsplit=1)[0].lower()


def header_end(raw: bytes) -> int:
    """Offset where the header section ends (the empty line is not included)."""
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    ends = [i + (2 if sep == b"\r\n\r\n" else 1) for sep in (b"\r\n\r\n", b"\n\n")
            if (i := raw.find(sep)) != -1]
    return min(ends) if ends else len(raw)


def remove_ours(raw: bytes, authserv_id: str, *,
                names: Sequence[bytes] = (b"authentication-results",)) -> bytes:
    """`raw` without the header fields named `names` that claim `authserv_id`."""
    end = header_end(raw)
    head, rest = raw[:end], raw[end:]
    ours = authserv_id.lower()
    kept = []
    removed = False
    for f in _FIELD_START.split(head):
        if f and _is_named(f, names) and authserv_id_of(f) == ours:
            removed = True
            continue
        kept.append(f)
    return b"".join(kept) + rest if removed else raw


def _is_named(f: bytes, names: Sequence[bytes]) -> bool:
    name = f.split(b":", 1)[0].strip().lower()
    return b":" in f and name in names
