"""Modified UTF-7 for mailbox names (RFC 3501 section 5.1.3, RFC 9051 section 5.1.3).

Names travel in modified UTF-7 unless the client enabled UTF8=ACCEPT (RFC 6855).
Decoding is strict: a name that is not the canonical encoding of its text is
refused, so two spellings can never reach the same mailbox.
"""

from __future__ import annotations

import base64
import binascii


class Utf7Error(ValueError):
    """The bytes are not valid modified UTF-7."""


def _b64_encode(text: str) -> str:
    raw = text.encode("utf-16-be")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    """Unicode mailbox name to modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            if pending:
                out.append("&" + _b64_encode("".join(pending)) + "-")
                pending = []
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append("&" + _b64_encode("".join(pending)) + "-")
    return "".join(out)


def _decode_run(run: str) -> str:
    if not run:
        raise Utf7Error("empty base64 run")
    b64 = run.replace(",", "/")
    b64 += "=" * (-len(b64) % 4)
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Utf7Error("bad base64 in mailbox name") from exc
    if len(raw) % 2:
        raise Utf7Error("odd number of bytes in UTF-16 run")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise Utf7Error("bad UTF-16 in mailbox name") from exc
    if any(0x20 <= ord(c) <= 0x7E for c in text):
        raise Utf7Error("printable ASCII must not be base64-encoded")
    return text


def decode(name: str) -> str:
    """Modified UTF-7 to Unicode; raises Utf7Error for anything non-canonical."""
    out: list[str] = []
    i, n = 0, len(name)
    prev_run_end = -2
    while i < n:
        ch = name[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise Utf7Error("8-bit or control character in modified UTF-7 name")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise Utf7Error("unterminated base64 run")
        if end == i + 1:
            out.append("&")
        else:
            if prev_run_end == i:
                raise Utf7Error("adjacent base64 runs must be merged")
            out.append(_decode_run(name[i + 1:end]))
            prev_run_end = end + 1
        i = end + 1
    text = "".join(out)
    if encode(text) != name:
        raise Utf7Error("non-canonical modified UTF-7")
    return text
