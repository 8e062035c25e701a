"""Sender Rewriting Scheme (SRS) for forwarded mail.

When an alias forwards mail outside, the envelope sender is rewritten to an
address in our domain so the next hop's SPF check (RFC 7208) sees our
servers, and bounces come back to us to be routed to the original sender.

Formats (after Shevek's SRS paper, as used by Postfix's postsrsd):
    SRS0=HHHHHHHH=TT=orig-domain=orig-local@our.domain
    SRS1=HHHHHHHH=first-forwarder==HHHHHHHH=TT=orig-domain=orig-local@our.domain
TT is the day number modulo 1024 in two base32 characters; HHHHHHHH is an
HMAC-SHA256 (keyed with our secret) of the rest, in base32. Base32, not the
paper's base64, because a hop may change the case of a local part: the hash
is computed over lower-cased data and compared case-insensitively, and 8
base32 characters still carry 40 bits. Only keepmail reverses its own
addresses, so interoperability with other SRS hashes is not needed.
"""

from __future__ import annotations

import base64
import hmac
import time
from dataclasses import dataclass
from hashlib import sha256

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
HASH_LEN = 8
DAY = 86400
TS_MOD = 1024


class SrsError(ValueError):
    """Not one of our SRS addresses, a bad hash, or too old."""


@dataclass(frozen=True)
class Srs:
    secret: bytes
    domain: str                 # our domain, the right side of rewritten addresses
    max_age_days: int = 21

    def _hash(self, *parts: str) -> str:
        mac = hmac.new(self.secret, "\0".join(parts).lower().encode(), sha256).digest()
        return base64.b32encode(mac).decode()[:HASH_LEN]

    def _check_hash(self, got: str, *parts: str) -> None:
        if not hmac.compare_digest(got.upper(), self._hash(*parts)):
            raise SrsError("SRS hash does not match")

    @staticmethod
    def _timestamp(now: float) -> str:
        day = int(now // DAY) % TS_MOD
        return _B32[day >> 5] + _B32[day & 31]

    def _check_age(self, ts: str, now: float) -> None:
        ts = ts.upper()
        if len(ts) != 2 or any(c not in _B32 for c in ts):
            raise SrsError(f"bad SRS timestamp {ts!r}")
        then = _B32.index(ts[0]) << 5 | _B32.index(ts[1])
        age = (int(now // DAY) - then) % TS_MOD
        if age > self.max_age_days:
            raise SrsError(f"SRS address is {age} days old")

    def forward(self, sender: str, *, now: float | None = None) -> str:
        """Rewrite an envelope sender for forwarding (null sender stays null)."""
        if not sender:
            return sender
        local, _, dom = sender.rpartition("@")
        if not local or not dom:
            raise SrsError(f"not an address: {sender!r}")
        if dom.lower() == self.domain.lower() and local[:5].upper() in ("SRS0=", "SRS1="):
            return sender        # already ours: forwarding it again changes nothing
        upper = local[:5].upper()
        if upper in ("SRS0=", "SRS1="):
            return self._srs1(local, dom)
        ts = self._timestamp(time.time() if now is None else now)
        return f"SRS0={self._hash(ts, dom, local)}={ts}={dom}={local}@{self.domain}"

    def _srs1(self, local: str, dom: str) -> str:
        if local[:5].upper() == "SRS1=":
            # SRS1=H=first==rest: keep the first forwarder, re-hash (paper, "SRS1").
            _, _, rest = local.partition("=")
            _, _, rest = rest.partition("=")
            first, sep, tail = rest.partition("==")
            if not sep:
                raise SrsError(f"bad SRS1 address {local!r}")
            return f"SRS1={self._hash(first, tail)}={first}=={tail}@{self.domain}"
        tail = local[5:]
        return f"SRS1={self._hash(dom, tail)}={dom}=={tail}@{self.domain}"

    def reverse(self, address: str, *, now: float | None = None) -> str:
        """The address a bounce to `address` must go to; SrsError if not valid."""
        local, _, dom = address.rpartition("@")
        if dom.lower() != self.domain.lower():
            raise SrsError(f"not our domain: {dom!r}")
        tag = local[:5].upper()
        if tag == "SRS0=":
            return self._reverse0(local[5:], time.time() if now is None else now)
        if tag == "SRS1=":
            h, _, rest = local[5:].partition("=")
            first, sep, tail = rest.partition("==")
            if not sep or not first:
                raise SrsError(f"bad SRS1 address {address!r}")
            self._check_hash(h, first, tail)
            return f"SRS0{tail if tail.startswith('=') else '=' + tail}@{first}"
        raise SrsError(f"not an SRS address: {address!r}")

    def _reverse0(self, rest: str, now: float) -> str:
        parts = rest.split("=", 3)
        if len(parts) != 4 or not all(parts):
            raise SrsError("bad SRS0 address")
        h, ts, dom, local = parts
        self._check_hash(h, ts, dom, local)
        self._check_age(ts, now)
        return f"{local}@{dom}"

    def is_srs(self, address: str) -> bool:
        local, _, dom = address.rpartition("@")
        return dom.lower() == self.domain.lower() and local[:5].upper() in ("SRS0=", "SRS1=")
