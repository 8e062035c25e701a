"""DKIM signature verification, RFC 6376 with RFC 8301 and RFC 8463.

Implemented:
- 3.2 tag=value lists (duplicate tags, bad syntax → permerror);
- 3.4 simple and relaxed canonicalization of header and body, 3.4.5 l=
  (a body shorter than l= → permerror, never "pass" on partial content the
  signer did not cover);
- 3.5 DKIM-Signature tags v a b bh c d h i l q s t x (i must sit under d;
  x in the past → permerror "signature expired");
- 3.6.1 key records v h k n p s t (p empty = revoked, h= hash list, k=
  key type, t=y testing, t=s strict i/d match), 3.6.2.2 TXT lookup at
  selector._domainkey.domain through keepmail's async resolver;
- 5.4.2 header selection from the bottom, nonexistent fields as null;
- 6.1 verification of every signature (at most MAX_SIGNATURES), each with
  its own result: pass, fail, neutral, temperror, permerror, and a reason;
- RFC 8301: rsa-sha1 is not accepted, RSA keys under 1024 bits are not;
- RFC 8463: ed25519-sha256 (the Ed25519 signature covers the SHA-256 digest).

Why not dkimpy: it verifies RSA in pure Python (about ten times slower than
OpenSSL through `cryptography`) and its DNS hook is synchronous, so the key
would have to be fetched first anyway. dkimpy signs the messages the tests
check, which keeps this code honest. A signature with t=y that fails is
reported as neutral (6376 3.6.1: treat as unsigned).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from keepmail.dnsx.resolver import DnsNameError, DnsTempError, Resolver

MAX_SIGNATURES = 8         # verifying more is a denial-of-service vector (6376 8.4)
MIN_RSA_BITS = 1024        # RFC 8301 3.2
ALGORITHMS = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}

_FIELD_START = re.compile(rb"(?m)^(?=[^ \t\r\n])")
_WSP_RUN = re.compile(rb"[ \t]+")
_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_B_TAG = re.compile(rb"(?<![A-Za-z0-9_])(b[ \t\r\n]*=)([^;]*)")


class DkimPermError(Exception):
    """Unrecoverable problem with a signature or its key."""


@dataclass(frozen=True)
class DkimResult:
    result: str                 # pass, fail, neutral, temperror, permerror
    reason: str
    domain: str = ""            # d=
    selector: str = ""          # s=
    algorithm: str = ""         # a=
    identity: str = ""          # i= (defaults to @d)
    signature_b: str = ""       # the b= value, for header.b in Authentication-Results
    testing: bool = False       # the key had t=y

    @property
    def header_b(self) -> str:
        """First 12 characters of b= (RFC 6008 header.b, enough to tell signatures apart)."""
        return self.signature_b[:12]


# -- message splitting ---------------------------------------------------------------------------

def split_message(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (raw, each with its line endings) and the body."""
    if raw.startswith((b"\r\n", b"\n")):
        return [], raw.split(b"\n", 1)[1]
    ends = [(raw.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if raw.find(sep) != -1]
    if not ends:
        head, body = raw, b""
    else:
        idx, sep = min(ends)
        head, body = raw[:idx + len(sep) // 2], raw[idx + len(sep):]
    return [f for f in _FIELD_START.split(head) if f], body


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("latin-1").lower()


def _crlf(data: bytes) -> bytes:
    """Bare LF line ends as CRLF: the signer hashed the SMTP (CRLF) form (6376 3.4)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data) if b"\n" in data else data


# -- canonicalization (3.4) ------------------------------------------------------------------------

def canon_header(field: bytes, relaxed: bool) -> bytes:
    field = _crlf(field)
    if not field.endswith(b"\r\n"):
        field += b"\r\n"
    if not relaxed:
        return field
    name, _, value = field.partition(b":")
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def canon_body(body: bytes, relaxed: bool) -> bytes:
    """3.4.3 simple / 3.4.4 relaxed body canonicalization."""
    body = _crlf(body)
    if relaxed:
        body = b"\r\n".join(_WSP_RUN.sub(b" ", line).rstrip(b" ")
                             for line in body.split(b"\r\n"))
    while body.endswith(b"\r\n"):
        body = body[:-2]
    if body:
        return body + b"\r\n"
    return b"" if relaxed else b"\r\n"


# -- tag lists (3.2) ------------------------------------------------------------------------------

def parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not _TAG_NAME.match(name):
            raise DkimPermError(f"bad tag {part.strip()[:40]!r}")
        if name in tags:
            raise DkimPermError(f"duplicate tag {name}=")
        tags[name] = re.sub(r"[ \t\r\n]+", " ", value).strip()
    return tags


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(re.sub(r"\s+", "", value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DkimPermError(f"{what} is not valid base64") from exc


# -- signature and key records -------------------------------------------------------------------

@dataclass
class Signature:
    field: bytes
    tags: dict[str, str]
    algorithm: str
    domain: str
    selector: str
    identity: str
    headers: list[str]
    header_relaxed: bool
    body_relaxed: bool
    length: int | None
    b: bytes
    bh: bytes


def parse_signature(field: bytes, now: float) -> Signature:
    tags = parse_tags(field.split(b":", 1)[1].decode("utf-8", "replace"))
    for req in ("v", "a", "b", "bh", "d", "h", "s"):
        if req not in tags:
            raise DkimPermError(f"signature lacks {req}=")
    if tags["v"] != "1":
        raise DkimPermError(f"unknown signature version v={tags['v']}")
    algorithm = tags["a"].lower()
    if algorithm == "rsa-sha1":
        raise DkimPermError("rsa-sha1 is not accepted (RFC 8301)")
    if algorithm not in ALGORITHMS:
        raise DkimPermError(f"unknown algorithm a={algorithm}")
    domain = tags["d"].lower().rstrip(".")
    identity = tags.get("i", "@" + domain)
    idom = identity.rpartition("@")[2].lower().rstrip(".")
    if idom != domain and not idom.endswith("." + domain):
        raise DkimPermError(f"i={identity} is not under d={domain}")
    headers = [h.strip().lower() for h in tags["h"].split(":")]
    if "from" not in headers:
        raise DkimPermError("h= does not include From")
    hcanon, _, bcanon = tags.get("c", "simple/simple").lower().partition("/")
    bcanon = bcanon or "simple"
    if hcanon not in ("simple", "relaxed") or bcanon not in ("simple", "relaxed"):
        raise DkimPermError(f"unknown canonicalization c={tags.get('c')}")
    if "dns/txt" not in tags.get("q", "dns/txt").lower().split(":"):
        raise DkimPermError(f"unsupported query method q={tags['q']}")
    _check_times(tags, now)
    length = _int_tag(tags, "l")
    return Signature(field, tags, algorithm, domain, tags["s"].lower(), identity, headers,
                     hcanon == "relaxed", bcanon == "relaxed", length,
                     _b64(tags["b"], "b="), _b64(tags["bh"], "bh="))


def _int_tag(tags: dict[str, str], name: str) -> int | None:
    if name not in tags:
        return None
    if not re.fullmatch(r"\d{1,76}", tags[name]):
        raise DkimPermError(f"{name}= is not a number")
    return int(tags[name])


def _check_times(tags: dict[str, str], now: float) -> None:
    t, x = _int_tag(tags, "t"), _int_tag(tags, "x")
    if x is not None and t is not None and x < t:
        raise DkimPermError("x= is before t=")
    if x is not None and x < now:
        raise DkimPermError("signature expired")


@dataclass
class PublicKey:
    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    testing: bool
    strict: bool


def parse_key(text: str, sig: Signature) -> PublicKey:
    """A key record (3.6.1) checked against the signature that needs it."""
    tags = parse_tags(text)
    if "v" in tags and (tags["v"] != "DKIM1" or not text.lstrip().startswith("v")):
        raise DkimPermError("key record version is not DKIM1")
    if "p" not in tags:
        raise DkimPermError("key record has no p=")
    if not tags["p"]:
        raise DkimPermError("key revoked (empty p=)")
    ktype = tags.get("k", "rsa").lower()
    if ktype != ALGORITHMS[sig.algorithm]:
        raise DkimPermError(f"key type k={ktype} does not fit a={sig.algorithm}")
    if "h" in tags and "sha256" not in [h.strip().lower() for h in tags["h"].split(":")]:
        raise DkimPermError(f"key does not allow sha256 (h={tags['h']})")
    services = [s.strip() for s in tags.get("s", "*").split(":")]
    if "*" not in services and "email" not in services:
        raise DkimPermError("key is not for email (s=)")
    flags = [f.strip().lower() for f in tags.get("t", "").split(":")]
    return PublicKey(_load_key(ktype, _b64(tags["p"], "p=")), "y" in flags, "s" in flags)


def _load_key(ktype: str, data: bytes) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    if ktype == "ed25519":
        if len(data) != 32:
            raise DkimPermError("ed25519 key is not 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_der_public_key(data)
    except ValueError:
        try:   # some publish the bare PKCS#1 RSAPublicKey
            key = serialization.load_der_public_key(_pkcs1_to_spki(data))
        except ValueError as exc:
            raise DkimPermError("RSA key cannot be decoded") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise DkimPermError("k=rsa but the key is not RSA")
    if key.key_size < MIN_RSA_BITS:
        raise DkimPermError(f"RSA key of {key.key_size} bits is too short (RFC 8301)")
    return key


def _pkcs1_to_spki(data: bytes) -> bytes:
    """Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (DER)."""
    algo = bytes.fromhex("300d06092a864886f70d0101010500")
    bitstring = b"\x03" + _der_len(len(data) + 1) + b"\x00" + data
    body = algo + bitstring
    return b"\x30" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


# -- hashing and verifying -------------------------------------------------------------------------

def header_hash_input(fields: list[bytes], sig: Signature) -> bytes:
    """5.4.2 header selection plus the signature field with b= emptied (3.7)."""
    by_name: dict[str, list[bytes]] = {}
    for f in fields:
        by_name.setdefault(field_name(f), []).append(f)
    out = []
    for name in sig.headers:
        instances = by_name.get(name)
        if instances:
            out.append(canon_header(instances.pop(), sig.header_relaxed))
    own = _B_TAG.sub(lambda m: m.group(1), sig.field, count=1)
    out.append(canon_header(own, sig.header_relaxed).removesuffix(b"\r\n"))
    return b"".join(out)


class _BodyHashes:
    """Body hashes per (canonicalization, l=), computed once per message."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._canon: dict[bool, bytes] = {}
        self._hash: dict[tuple[bool, int | None], bytes] = {}

    def get(self, relaxed: bool, length: int | None) -> bytes:
        key = (relaxed, length)
        if key not in self._hash:
            if relaxed not in self._canon:
                self._canon[relaxed] = canon_body(self.body, relaxed)
            data = self._canon[relaxed]
            if length is not None:
                if length > len(data):
                    raise DkimPermError(f"l={length} is longer than the body ({len(data)})")
                data = data[:length]
            self._hash[key] = hashlib.sha256(data).digest()
        return self._hash[key]


def verify_crypto(key: PublicKey, sig: Signature, data: bytes) -> bool:
    try:
        if isinstance(key.key, ed25519.Ed25519PublicKey):
            key.key.verify(sig.b, hashlib.sha256(data).digest())
        else:
            key.key.verify(sig.b, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


async def fetch_key(resolver: Resolver, sig: Signature) -> str:
    """The key record text at selector._domainkey.domain (3.6.2.2)."""
    name = f"{sig.selector}._domainkey.{sig.domain}"
    try:
        records = await resolver.txt(name)
    except DnsNameError as exc:
        raise DkimPermError(f"bad key name {name}") from exc
    if not records:
        raise DkimPermError(f"no key at {name}")
    return next((r for r in records if "p=" in r), records[0])


async def verify_one(field: bytes, fields: list[bytes], bodies: _BodyHashes,
                     resolver: Resolver, now: float) -> DkimResult:
    try:
        sig = parse_signature(field, now)
    except DkimPermError as exc:
        return DkimResult("permerror", str(exc))
    base = {"domain": sig.domain, "selector": sig.selector, "algorithm": sig.algorithm,
            "identity": sig.identity, "signature_b": sig.tags["b"].replace(" ", "")}
    try:
        key = parse_key(await fetch_key(resolver, sig), sig)
        if key.strict and sig.identity.rpartition("@")[2].lower() != sig.domain:
            raise DkimPermError("key has t=s but i= is a subdomain of d=")
        if bodies.get(sig.body_relaxed, sig.length) != sig.bh:
            return _failed("body hash mismatch", key, base)
        if not verify_crypto(key, sig, header_hash_input(fields, sig)):
            return _failed("signature does not verify", key, base)
    except DnsTempError as exc:
        return DkimResult("temperror", f"key lookup: {exc}", **base)
    except DkimPermError as exc:
        return DkimResult("permerror", str(exc), **base)
    return DkimResult("pass", "signature verified", testing=key.testing, **base)


def _failed(reason: str, key: PublicKey, base: dict[str, str]) -> DkimResult:
    if key.testing:
        return DkimResult("neutral", reason + " (key in testing mode)", testing=True, **base)
    return DkimResult("fail", reason, **base)


async def verify(raw: bytes, resolver: Resolver, *, now: float | None = None) -> list[DkimResult]:
    """One result per DKIM-Signature field (top first); [] when the message is unsigned."""
    fields, body = split_message(raw)
    sigs = [f for f in fields if field_name(f) == "dkim-signature"]
    bodies = _BodyHashes(body)
    when = time.time() if now is None else now
    results = await asyncio.gather(*(verify_one(f, fields, bodies, resolver, when)
                                     for f in sigs[:MAX_SIGNATURES]))
    extra = [DkimResult("permerror", "too many signatures; not checked")
             for _ in sigs[MAX_SIGNATURES:]]
    return list(results) + extra
