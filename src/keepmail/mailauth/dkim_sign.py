"""DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463).

Canonicalization is relaxed/relaxed (RFC 6376 3.4.2 and 3.4.4): it survives
the header refolding and whitespace changes common in transit. Signing uses
`cryptography` (OpenSSL), not dkimpy's pure-Python RSA, which is about ten
times slower. The signature fields are returned as bytes to prepend: the
message itself is never re-serialized (DESIGN.md, principle 2).

Header selection (RFC 6376 5.4): the fields in SIGNED_FIELDS that are present,
each listed once per instance, and the fields in OVERSIGNED listed one extra
time, so a From:, To: or Subject: added later in transit breaks the signature
(5.4.2: a name listed beyond the instances present signs "no such field").

`sign_async` does the same off the event loop's thread for the private-key
operations: an RSA-2048 signature costs about 2 ms of CPU, and OpenSSL runs it
without the GIL, so on a server it runs on another core while the loop keeps
serving connections. The canonicalization stays on the caller's thread (it is
Python, which holds the GIL wherever it runs).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

SIGNED_FIELDS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "resent-date", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-message-id", "in-reply-to", "references", "list-id", "list-help",
    "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner",
    "list-archive", "autocrypt", "openpgp",
)
# Fields a receiver shows or relies on, that must never be added after signing.
OVERSIGNED = ("from", "reply-to", "subject", "date", "to", "cc", "message-id",
              "mime-version", "content-type", "content-transfer-encoding",
              "list-unsubscribe", "list-unsubscribe-post")

_WSP_RUN = re.compile(rb"[ \t]+")
_FIELD_START = re.compile(rb"(?m)^(?=[^ \t\r\n])")


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    key: PrivateKey

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) \
            else "rsa-sha256"


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("DKIM keys must be RSA or Ed25519")
    return key


# -- canonicalization ------------------------------------------------------------
def split_message(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its CRLF and folded lines) and the body."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        head, body = (raw, b"") if raw.endswith(b"\r\n") or not raw else (raw + b"\r\n", b"")
    else:
        head, body = raw[:end + 2], raw[end + 4:]
    bare = head.replace(b"\r\n", b"")
    if b"\n" in bare or b"\r" in bare:
        # Bare LFs or CRs: split wherever a line starts (the general rule, slower).
        starts = [m.start() for m in _FIELD_START.finditer(head)]
        if not starts or starts[0]:
            starts.insert(0, 0)   # text before the first field name goes with it
        return [head[a:b] for a, b in zip(starts, [*starts[1:], len(head)], strict=True)], body
    # Lines end in CRLF: a line that starts with WSP continues the field before it.
    fields: list[bytes] = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line + b"\r\n"
        elif line:
            fields.append(line + b"\r\n")
        elif fields:
            fields[-1] += b"\r\n"   # an empty line inside the block stays with its field
        else:
            fields.append(b"\r\n")
    if fields and not head.endswith(b"\r\n"):
        fields[-1] = fields[-1][:-2]
    return fields, body


def relaxed_header(field: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfold, one space for runs of WSP, no edges."""
    name, _, value = field.partition(b":")
    value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\r" in value or b"\x0b" in value or b"\x0c" in value:
        # split() would treat these as blanks too; WSP is only SP and HTAB.
        value = _WSP_RUN.sub(b" ", value).strip(b" ")
    else:
        value = b" ".join(value.split())
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: no trailing WSP, runs of WSP become one space, no empty tail."""
    if (b"\t" not in body and b"  " not in body and b" \r\n" not in body
            and not body.endswith(b" ")):
        # Common case, no whitespace to reduce (searched in C): only the empty
        # lines at the end go, and a missing final CRLF is added.
        end = len(body)
        while body.endswith(b"\r\n", 0, end):
            end -= 2
        return body[:end] + b"\r\n" if end else b""
    lines = body.split(b"\r\n")
    out = [_WSP_RUN.sub(b" ", line).rstrip(b" ") for line in lines]
    while out and out[-1] == b"":
        out.pop()
    return b"".join(line + b"\r\n" for line in out)


def body_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()


_SIGNED_ORDER = {name: i for i, name in enumerate(SIGNED_FIELDS)}
_OVERSIGNED = frozenset(OVERSIGNED)


def select_headers(fields: list[bytes]) -> tuple[list[str], list[bytes]]:
    """The h= names and the canonicalized fields they sign, bottom-up per name."""
    by_name: dict[str, list[bytes]] = {}
    for f in fields:
        name = f.partition(b":")[0].strip().lower().decode("ascii", "replace")
        if name in _SIGNED_ORDER:
            by_name.setdefault(name, []).append(f)
    names: list[str] = []
    signed: list[bytes] = []
    for name in sorted(by_name, key=_SIGNED_ORDER.__getitem__):
        instances = by_name[name]
        for f in reversed(instances):
            names.append(name)
            signed.append(relaxed_header(f))
        if name in _OVERSIGNED:
            names.append(name)   # the extra instance signs the absence of more
    return names, signed


# -- signing ---------------------------------------------------------------------
def _fold_b64(value: str, first: int) -> str:
    parts, width = [], 72
    line_room = max(8, width - first)
    while value:
        parts.append(value[:line_room])
        value = value[line_room:]
        line_room = width
    return "\r\n\t ".join(parts)


def _tags(key: SigningKey, names: Sequence[str], bh: str, timestamp: int) -> str:
    h = ":".join(names)
    # Fold h= at colons so the field stays readable (whitespace in tags is ignored).
    h_lines, line = [], ""
    for name in h.split(":"):
        if line and len(line) + len(name) > 66:
            h_lines.append(line)
            line = ""
        line += (":" if line else "") + name
    h_lines.append(line)
    h_folded = ":\r\n\t ".join(h_lines)
    return (f"v=1; a={key.algorithm}; c=relaxed/relaxed; d={key.domain};\r\n"
            f"\ts={key.selector}; t={timestamp};\r\n\th={h_folded};\r\n\tbh={bh};\r\n\tb=")


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        # RFC 8463 3: Ed25519 signs the SHA-256 hash of the data (PureEdDSA over it).
        return key.sign(hashlib.sha256(data).digest())
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _prepare(raw: bytes, keys: Sequence[SigningKey],
             timestamp: int | None) -> list[tuple[str, bytes]]:
    """Per key: the DKIM-Signature tags up to b=, and the bytes its signature covers."""
    fields, body = split_message(raw)
    bh = body_hash(body)
    names, signed = select_headers(fields)
    data = b"".join(signed)
    ts = int(time.time()) if timestamp is None else timestamp
    out = []
    for key in keys:
        tags = _tags(key, names, bh, ts)
        unsigned = relaxed_header(b"DKIM-Signature: " + tags.encode())
        out.append((tags, data + unsigned[:-2]))
    return out


def _sign_all(keys: Sequence[SigningKey], parts: Sequence[tuple[str, bytes]]) -> list[bytes]:
    return [_sign(key.key, data) for key, (_tags_, data) in zip(keys, parts, strict=True)]


def _fields(parts: Sequence[tuple[str, bytes]], signatures: Sequence[bytes]) -> bytes:
    out = []
    for (tags, _data), sig in zip(parts, signatures, strict=True):
        signature = base64.b64encode(sig).decode()
        out.append(f"DKIM-Signature: {tags}{_fold_b64(signature, 4)}\r\n".encode())
    return b"".join(out)


def sign(raw: bytes, keys: Sequence[SigningKey], *, timestamp: int | None = None) -> bytes:
    """DKIM-Signature fields (CRLF-terminated) for raw, one per key, to prepend."""
    if not keys:
        return b""
    parts = _prepare(raw, keys, timestamp)
    return _fields(parts, _sign_all(keys, parts))


class _Signer:
    """Threads that compute signatures handed over by event loops.

    Lighter than loop.run_in_executor (no concurrent Future chained to an
    asyncio one): a job is a tuple on a deque, and a sleeping thread is woken
    only when none is awake, so under load most hand-overs cost no system call.
    """

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self._mutex = threading.Lock()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._sleepers: list[threading.Lock] = []   # one held lock per idle thread
        self._threads = 0

    def submit(self, keys: Sequence[SigningKey],
               parts: Sequence[tuple[str, bytes]]) -> asyncio.Future[list[bytes]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[bytes]] = loop.create_future()
        with self._mutex:
            self._jobs.append((loop, fut, keys, parts))
            wake = self._sleepers.pop() if self._sleepers else None
            start = wake is None and self._threads < self.max_threads
            if start:
                self._threads += 1
        if wake is not None:
            wake.release()
        elif start:
            threading.Thread(target=self._run, name="dkim-sign", daemon=True).start()
        return fut

    def _run(self) -> None:
        wake = threading.Lock()
        wake.acquire()
        while True:
            with self._mutex:
                job = self._jobs.popleft() if self._jobs else None
                if job is None:
                    self._sleepers.append(wake)
            if job is None:
                wake.acquire()   # released by submit() with a job waiting
                continue
            loop, fut, keys, parts = job
            try:
                result: tuple[bool, Any] = (True, _sign_all(keys, parts))
            except Exception as exc:
                result = (False, exc)
            with contextlib.suppress(RuntimeError):   # the loop has closed meanwhile
                loop.call_soon_threadsafe(_settle, fut, result)


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[list[bytes]]", Sequence[SigningKey],
             Sequence[tuple[str, bytes]]]


def _settle(fut: asyncio.Future[list[bytes]], result: tuple[bool, Any]) -> None:
    if fut.done():
        return
    if result[0]:
        fut.set_result(result[1])
    else:
        fut.set_exception(result[1])


_signer = _Signer(max_threads=max(1, min(4, (os.cpu_count() or 2) - 1)))


async def sign_async(raw: bytes, keys: Sequence[SigningKey], *,
                     timestamp: int | None = None) -> bytes:
    """sign(), with RSA signatures computed on a worker thread (see the module notes)."""
    if not keys:
        return b""
    parts = _prepare(raw, keys, timestamp)
    if all(isinstance(k.key, ed25519.Ed25519PrivateKey) for k in keys):
        signatures = _sign_all(keys, parts)   # ~50 µs: not worth a thread hop
    else:
        signatures = await _signer.submit(keys, parts)
    return _fields(parts, signatures)


# -- DNS records -------------------------------------------------------------------
def public_record(key: PrivateKey) -> str:
    """The TXT record value publishing key's public half (RFC 6376 3.6.1, RFC 8463 4)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
