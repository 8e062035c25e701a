"""Parsing MAIL FROM / RCPT TO paths and their parameters (RFC 5321 4.1.2, RFC 6531).

Strict enough to refuse relay tricks (source routes, bang paths, percent hack
are handled by policy, which sees the parsed local part and domain), tolerant
of the common client quirk of a space after the colon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .reply import cached

# A dot-atom or quoted-string local part (RFC 5321 4.1.2), UTF-8 allowed (RFC 6531).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010ffff]+"
_LOCAL = rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[^"\\\r\n]|\\[\x20-\x7e])*")'
_DOMAIN = r"(?:[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\-\x80-\U0010ffff]*[A-Za-z0-9\x80-\U0010ffff])?(?:\.[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\-\x80-\U0010ffff]*[A-Za-z0-9\x80-\U0010ffff])?)*|\[[^\[\]\\\s]+\])"
_MAILBOX = re.compile(rf"^(?P<local>{_LOCAL})@(?P<domain>{_DOMAIN})$")
_PARAM = re.compile(r"^(?P<key>[A-Za-z0-9][A-Za-z0-9\-]*)(?:=(?P<value>[^= \x00-\x1f]+))?$")

MAX_LOCAL = 64
MAX_DOMAIN = 255


class PathError(ValueError):
    pass


@dataclass(frozen=True)
class Path:
    local: str
    domain: str
    source_route: bool = False

    @cached
    def address(self) -> str:  # read several times per message: computed once
        return f"{self.local}@{self.domain}" if self.domain else ""

    @property
    def is_null(self) -> bool:
        return not self.local and not self.domain


NULL_PATH = Path("", "")


def parse_path_and_params(arg: str, keyword: str) -> tuple[Path, dict[str, str]]:
    """Parse 'FROM:<a@b> SIZE=10' (keyword 'FROM') into a Path and parameters."""
    head, sep, rest = arg.partition(":")
    if not sep or head.strip().upper() != keyword:
        raise PathError(f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
    rest = rest.lstrip(" ")
    if not rest.startswith("<"):
        raise PathError("Address must be enclosed in <>")
    end = _closing_bracket(rest)
    path = parse_path(rest[1:end], allow_null=keyword == "FROM")
    return path, parse_params(rest[end + 1:])


def _closing_bracket(text: str) -> int:
    if '"' not in text:  # no quoted local part: the first ">" closes the path
        end = text.find(">", 1)
        if end < 0:
            raise PathError("Unterminated <address>")
        return end
    quoted = False
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and quoted:
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
        i += 1
    raise PathError("Unterminated <address>")


def parse_path(inner: str, *, allow_null: bool) -> Path:
    source_route = False
    if inner.startswith("@"):
        # A-d-l source route (RFC 5321 4.1.2): accepted syntactically, ignored (C.1).
        _route, sep, inner = inner.partition(":")
        if not sep:
            raise PathError("Bad source route")
        source_route = True
    if inner == "":
        if allow_null and not source_route:
            return NULL_PATH
        raise PathError("Null address not allowed here")
    match = _MAILBOX.match(inner)
    if not match:
        raise PathError(f"Bad address syntax: {inner[:100]}")
    local, domain = match["local"], match["domain"]
    if len(local.encode()) > MAX_LOCAL or len(domain.encode()) > MAX_DOMAIN:
        raise PathError("Address too long")
    return Path(local, domain.rstrip("."), source_route)


def parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for token in text.split():
        match = _PARAM.match(token)
        if not match:
            raise PathError(f"Bad parameter: {token[:50]}")
        params[match["key"].upper()] = match["value"] or ""
    return params
