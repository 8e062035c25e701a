"""Authenticated Received Chain (ARC), RFC 8617: verification and sealing.

Verification (5.2):
- 4.1/4.2 ARC sets: ARC-Authentication-Results (AAR), ARC-Message-Signature
  (AMS), ARC-Seal (AS), each with i=1..N, one of each per instance,
  N <= 50 (4.2.1), continuous instances;
- 5.2 steps: the newest AS with cv=fail ends in fail; structure errors end
  in fail; i=1 must carry cv=none and later sets cv=pass (4.1.3); the newest
  AMS must verify (DKIM rules, RFC 6376, without v= and with i= as the
  instance); every AS must verify over the ARC fields of its own and the
  earlier instances (5.1.1, relaxed header canonicalization);
- result cv = none / pass / fail with a reason, and the oldest instance
  whose AMS still verifies (5.2, "oldest-pass", informative).

Sealing (5.1) adds instance N+1 (AAR, AMS, AS) with cv set from verifying
the existing chain, signed with rsa-sha256 or ed25519-sha256. It returns
the header bytes to prepend: the message is never re-serialized (DESIGN.md
principle 2). keepmail seals when an alias forwards mail outside, so the
next hop can see our authentication results.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from keepmail.dnsx.resolver import DnsTempError, Resolver
from keepmail.mailauth import dkim_verify as dk

MAX_INSTANCES = 50
ARC_FIELDS = ("arc-authentication-results", "arc-message-signature", "arc-seal")
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
AMS_FIELDS = ("from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
              "references", "mime-version", "content-type", "content-transfer-encoding",
              "dkim-signature", "list-id", "list-unsubscribe")


@dataclass(frozen=True)
class ArcResult:
    cv: str                    # none, pass, fail
    reason: str
    instances: int = 0
    oldest_pass: int = 0       # lowest instance whose AMS verifies (0: not computed / none)
    sealers: tuple[str, ...] = ()   # d= of each AS, instance 1 first

    @property
    def result(self) -> str:
        return self.cv


class ArcError(Exception):
    """The chain is broken (result cv=fail)."""


@dataclass
class ArcSet:
    instance: int
    aar: bytes
    ams: bytes
    seal: bytes


def _instance(field: bytes) -> int:
    value = field.split(b":", 1)[1]
    m = re.match(rb"\s*i\s*=\s*(\d{1,3})\s*(;|$)", value)
    if not m:
        raise ArcError(f"{dk.field_name(field)} without a leading i= tag")
    return int(m.group(1))


def collect_sets(fields: list[bytes]) -> list[ArcSet]:
    """4.1-4.2: ARC sets by instance; ArcError on any structural problem."""
    found: dict[int, dict[str, bytes]] = {}
    for f in fields:
        name = dk.field_name(f)
        if name not in ARC_FIELDS:
            continue
        i = _instance(f)
        if not 1 <= i <= MAX_INSTANCES:
            raise ArcError(f"instance i={i} out of range")
        if name in found.setdefault(i, {}):
            raise ArcError(f"two {name} fields for i={i}")
        found[i][name] = f
    if sorted(found) != list(range(1, len(found) + 1)):
        raise ArcError(f"instances {sorted(found)} are not 1..N")
    sets = []
    for i in sorted(found):
        parts = found[i]
        if len(parts) != 3:
            raise ArcError(f"incomplete ARC set i={i}")
        sets.append(ArcSet(i, parts[ARC_FIELDS[0]], parts[ARC_FIELDS[1]], parts[ARC_FIELDS[2]]))
    return sets


def _seal_tags(field: bytes) -> dict[str, str]:
    return dk.parse_tags(field.split(b":", 1)[1].decode("utf-8", "replace"))


def _ams_signature(field: bytes) -> dk.Signature:
    """An AMS as a DKIM signature (4.1.2: DKIM-Signature syntax without v=)."""
    tags = _seal_tags(field)
    for req in ("a", "b", "bh", "d", "h", "s"):
        if req not in tags:
            raise dk.DkimPermError(f"AMS lacks {req}=")
    algorithm = tags["a"].lower()
    if algorithm not in dk.ALGORITHMS:
        raise dk.DkimPermError(f"AMS algorithm a={algorithm} not accepted")
    hcanon, _, bcanon = tags.get("c", "simple/simple").lower().partition("/")
    headers = [h.strip().lower() for h in tags["h"].split(":")]
    if "arc-seal" in headers:
        raise dk.DkimPermError("AMS signs ARC-Seal (4.1.2 forbids it)")
    return dk.Signature(field, tags, algorithm, tags["d"].lower().rstrip("."), tags["s"].lower(),
                        "", headers, hcanon == "relaxed", (bcanon or "simple") == "relaxed",
                        dk._int_tag(tags, "l"), dk._b64(tags["b"], "b="),
                        dk._b64(tags["bh"], "bh="))


def _seal_signature(field: bytes) -> dk.Signature:
    tags = _seal_tags(field)
    for req in ("a", "b", "d", "s", "cv"):
        if req not in tags:
            raise dk.DkimPermError(f"ARC-Seal lacks {req}=")
    if "h" in tags:
        raise dk.DkimPermError("ARC-Seal must not have h= (4.1.3)")
    algorithm = tags["a"].lower()
    if algorithm not in dk.ALGORITHMS:
        raise dk.DkimPermError(f"ARC-Seal algorithm a={algorithm} not accepted")
    return dk.Signature(field, tags, algorithm, tags["d"].lower().rstrip("."), tags["s"].lower(),
                        "", [], True, True, None, dk._b64(tags["b"], "b="), b"")


def seal_hash_input(sets: Sequence[ArcSet], seal_field: bytes) -> bytes:
    """5.1.1: AAR, AMS, AS of each instance in order, relaxed; own b= emptied, no final CRLF."""
    out = []
    for s in sets[:-1]:
        out += [dk.canon_header(f, True) for f in (s.aar, s.ams, s.seal)]
    last = sets[-1]
    out += [dk.canon_header(last.aar, True), dk.canon_header(last.ams, True)]
    own = dk._B_TAG.sub(lambda m: m.group(1), seal_field, count=1)
    out.append(dk.canon_header(own, True).removesuffix(b"\r\n"))
    return b"".join(out)


async def _key(resolver: Resolver, sig: dk.Signature) -> dk.PublicKey:
    return dk.parse_key(await dk.fetch_key(resolver, sig), sig)


async def _verify_ams(s: ArcSet, fields: list[bytes], bodies: dk._BodyHashes,
                      resolver: Resolver) -> str | None:
    """None when the AMS verifies, else why not."""
    sig = _ams_signature(s.ams)
    key = await _key(resolver, sig)
    if bodies.get(sig.body_relaxed, sig.length) != sig.bh:
        return "body hash mismatch"
    if not dk.verify_crypto(key, sig, dk.header_hash_input(fields, sig)):
        return "signature does not verify"
    return None


async def verify(raw: bytes, resolver: Resolver) -> ArcResult:
    """5.2 chain validation; never raises for bad input."""
    fields, body = dk.split_message(raw)
    try:
        sets = collect_sets(fields)
    except ArcError as exc:
        return ArcResult("fail", str(exc))
    if not sets:
        return ArcResult("none", "no ARC sets")
    try:
        return await _validate(sets, fields, dk._BodyHashes(body), resolver)
    except DnsTempError as exc:
        # A chain we cannot check is not a chain we can trust (5.2: fail).
        return ArcResult("fail", f"key lookup failed: {exc}", len(sets))
    except (ArcError, dk.DkimPermError) as exc:
        return ArcResult("fail", str(exc), len(sets))


async def _validate(sets: list[ArcSet], fields: list[bytes], bodies: dk._BodyHashes,
                    resolver: Resolver) -> ArcResult:
    n = len(sets)
    seals = [_seal_signature(s.seal) for s in sets]
    sealers = tuple(sig.domain for sig in seals)
    if seals[-1].tags["cv"].lower() == "fail":
        return ArcResult("fail", f"i={n} sealed with cv=fail", n, sealers=sealers)
    for s, sig in zip(sets, seals, strict=True):
        want = "none" if s.instance == 1 else "pass"
        if sig.tags["cv"].lower() != want:
            raise ArcError(f"i={s.instance} has cv={sig.tags['cv']}, expected {want}")
    why = await _verify_ams(sets[-1], fields, bodies, resolver)
    if why:
        return ArcResult("fail", f"AMS i={n}: {why}", n, sealers=sealers)
    for i in range(n, 0, -1):
        sig = seals[i - 1]
        key = await _key(resolver, sig)
        if not dk.verify_crypto(key, sig, seal_hash_input(sets[:i], sets[i - 1].seal)):
            return ArcResult("fail", f"ARC-Seal i={i} does not verify", n, sealers=sealers)
    oldest = await _oldest_pass(sets, fields, bodies, resolver)
    return ArcResult("pass", f"{n} ARC set(s) verified", n, oldest, sealers)


async def _oldest_pass(sets: list[ArcSet], fields: list[bytes], bodies: dk._BodyHashes,
                       resolver: Resolver) -> int:
    oldest = len(sets)
    for s in reversed(sets[:-1]):
        try:
            if await _verify_ams(s, fields, bodies, resolver) is not None:
                break
        except (dk.DkimPermError, DnsTempError):
            break
        oldest = s.instance
    return oldest


# -- sealing (5.1) -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SealKey:
    domain: str
    selector: str
    key: PrivateKey

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) \
            else "rsa-sha256"


def _sign(key: PrivateKey, data: bytes) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(hashlib.sha256(data).digest())
    else:
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(sig).decode()


def _fold(name: str, tags: list[tuple[str, str]]) -> bytes:
    """Header field text with each tag on its own line (b= last, wrapped at 72)."""
    lines = [f"{name}: " + "; ".join(f"{k}={v}" for k, v in tags if k != "b") + ";"]
    b = next((v for k, v in tags if k == "b"), None)
    if b is not None:
        chunks = [b[i:i + 72] for i in range(0, len(b), 72)] or [""]
        lines.append("\tb=" + "\r\n\t ".join(chunks))
    return ("\r\n".join(lines) + "\r\n").encode()


def seal_headers(raw: bytes, key: SealKey, *, authserv_id: str, auth_results: str,
                 cv: str, timestamp: int | None = None) -> bytes:
    """ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results to prepend."""
    fields, body = dk.split_message(raw)
    existing = collect_sets(fields)
    if len(existing) >= MAX_INSTANCES:
        raise ArcError("chain already has 50 instances")
    i = len(existing) + 1
    cv = "none" if i == 1 else cv
    ts = str(int(time.time()) if timestamp is None else timestamp)
    aar = f"ARC-Authentication-Results: i={i}; {authserv_id};\r\n\t{auth_results}\r\n".encode()
    ams = _make_ams(fields, body, key, i, ts)
    seal_tags = [("i", str(i)), ("a", key.algorithm), ("t", ts), ("cv", cv),
                 ("d", key.domain), ("s", key.selector)]
    unsigned = _fold("ARC-Seal", [*seal_tags, ("b", "")])
    new_sets = [*existing, ArcSet(i, aar, ams, unsigned)]
    b = _sign(key.key, seal_hash_input(new_sets, unsigned))
    return _fold("ARC-Seal", [*seal_tags, ("b", b)]) + ams + aar


def _make_ams(fields: list[bytes], body: bytes, key: SealKey, i: int, ts: str) -> bytes:
    present = [dk.field_name(f) for f in fields]
    names = [n for n in present if n in AMS_FIELDS]
    bh = base64.b64encode(hashlib.sha256(dk.canon_body(body, True)).digest()).decode()
    tags = [("i", str(i)), ("a", key.algorithm), ("c", "relaxed/relaxed"), ("d", key.domain),
            ("s", key.selector), ("t", ts), ("h", ":".join(names)), ("bh", bh)]
    unsigned = _fold("ARC-Message-Signature", [*tags, ("b", "")])
    sig = dk.Signature(unsigned, dict(tags), key.algorithm, key.domain, key.selector, "",
                       names, True, True, None, b"", b"")
    b = _sign(key.key, dk.header_hash_input(fields, sig))
    return _fold("ARC-Message-Signature", [*tags, ("b", b)])


async def seal(raw: bytes, key: SealKey, resolver: Resolver, *, authserv_id: str,
               auth_results: str, chain: ArcResult | None = None,
               timestamp: int | None = None) -> bytes:
    """Verify the existing chain (unless given) and return the new ARC set to prepend."""
    chain = chain or await verify(raw, resolver)
    cv = "pass" if chain.cv in ("pass", "none") else "fail"
    return seal_headers(raw, key, authserv_id=authserv_id, auth_results=auth_results, cv=cv,
                        timestamp=timestamp)
