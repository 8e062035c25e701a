"""MTA-STS (RFC 8461): fetch, cache and apply a domain's TLS policy.

Discovery (3.1): a TXT record at _mta-sts.<domain> with v=STSv1 and an id.
Fetch (3.3): https://mta-sts.<domain>/.well-known/mta-sts.txt over HTTPS with
a PKIX-valid certificate, no redirects, at most 64 KiB. Cache (5.1): a policy
is kept for max_age and refetched only when the TXT id changes; without a
TXT record a cached, unexpired policy still applies. Application (5): in
"enforce" mode only MX hosts matching the policy are used, and only over TLS
with a valid certificate for the MX name; failures defer, never fall back to
clear text. "testing" mode records failures and delivers anyway.

For tests the HTTPS address and CA bundle are settings (mta_sts_address,
ca_file); the Host header and TLS server name stay mta-sts.<domain>.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import ssl
import time
from dataclasses import asdict, dataclass

from ..store import Store, migrations
from .mxlookup import Dns, DnsNoDomain, DnsTemporary

SCHEMA = [
    """
    CREATE TABLE mta_sts_policies (
        domain TEXT PRIMARY KEY,
        policy TEXT NOT NULL,
        fetched REAL NOT NULL
    )
    """,
]
migrations.register("mtasts", SCHEMA)

MAX_POLICY_SIZE = 64 * 1024
MAX_AGE_LIMIT = 31557600       # RFC 8461 3.2: at most one year


@dataclass(frozen=True)
class Policy:
    id: str
    mode: str                  # enforce | testing | none
    mx: tuple[str, ...]
    max_age: int
    fetched: float

    def expired(self, now: float) -> bool:
        return now >= self.fetched + self.max_age

    def allows(self, host: str) -> bool:
        """RFC 8461 4.1: exact match, or '*.' matching exactly one leftmost label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            pattern = pattern.lower().rstrip(".")
            if pattern.startswith("*."):
                label, _, rest = host.partition(".")
                if label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


class PolicyError(Exception):
    pass


def parse_policy(text: str, policy_id: str, now: float) -> Policy:
    """Parse the policy body (RFC 8461 3.2); raises PolicyError when invalid."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"bad line {line[:80]!r}")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("version must be STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"bad mode {mode!r}")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise PolicyError("max_age must be a number") from None
    mx = tuple(fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("no mx lines")
    return Policy(policy_id, mode, mx, min(max(max_age, 0), MAX_AGE_LIMIT), now)


def parse_txt(values: list[str]) -> str | None:
    """The id of the one v=STSv1 TXT record (RFC 8461 3.1), or None."""
    found = []
    for value in values:
        text = "".join(part.strip('"') for part in value.split('" "'))
        tags = dict(t.strip().partition("=")[::2] for t in text.split(";") if "=" in t)
        if tags.get("v", "").strip() == "STSv1":
            found.append(tags.get("id", "").strip())
    if len(found) != 1 or not found[0]:
        return None
    return found[0]


class MtaSts:
    def __init__(self, store: Store, dns: Dns, *, ca_file: str = "", address: str = "",
                 timeout: float = 30.0) -> None:
        self.store = store
        self.dns = dns
        self.ca_file = ca_file
        self.address = address
        self.timeout = timeout

    def _cached(self, domain: str) -> Policy | None:
        row = self.store.read_now(lambda c: c.execute(
            "SELECT policy FROM mta_sts_policies WHERE domain = ?", (domain,)).fetchone())
        if row is None:
            return None
        data = json.loads(row[0])
        data["mx"] = tuple(data["mx"])
        return Policy(**data)

    async def _save(self, domain: str, policy: Policy) -> None:
        text = json.dumps(asdict(policy))

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO mta_sts_policies(domain, policy, fetched)"
                         " VALUES (?, ?, ?)", (domain, text, policy.fetched))

        await self.store.write(txn)

    async def policy(self, domain: str, now: float | None = None) -> tuple[Policy | None, str]:
        """The policy in force for domain and a note on where it came from."""
        now = time.time() if now is None else now
        domain = domain.lower().rstrip(".")
        cached = self._cached(domain)
        live = cached if cached is not None and not cached.expired(now) else None
        try:
            txt = await self.dns.query(f"_mta-sts.{domain}", "TXT")
            policy_id = parse_txt(txt.values)
        except DnsNoDomain:
            policy_id = None
        except DnsTemporary as exc:
            return live, f"TXT look-up failed ({exc}); using cache" if live else str(exc)
        if policy_id is None:
            return live, "cached (no TXT record)" if live else "no policy"
        if live is not None and live.id == policy_id:
            return live, "cached"
        try:
            body = await self.fetch(domain)
            fresh = parse_policy(body, policy_id, now)
        except (PolicyError, OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
            return live, f"policy fetch failed: {exc}" + ("; using cache" if live else "")
        await self._save(domain, fresh)
        return fresh, "fetched"

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    async def fetch(self, domain: str) -> str:
        """GET the policy file (RFC 8461 3.3): HTTPS, valid certificate, 200, no redirects."""
        host = f"mta-sts.{domain}"
        ip, port = host, 443
        if self.address:
            ip, _, p = self.address.rpartition(":")
            port = int(p)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            ip, port, ssl=self._context(), server_hostname=host), self.timeout)
        try:
            request = (f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                       "User-Agent: keepmail\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
            writer.write(request.encode("ascii"))
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(MAX_POLICY_SIZE + 8192), self.timeout)
        finally:
            writer.close()
        return _http_body(raw)


def _http_body(raw: bytes) -> str:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise PolicyError("malformed HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ")
    if len(status) < 2 or status[1] != "200":
        raise PolicyError(f"HTTP status {' '.join(status[1:])[:60]} (redirects not followed)")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers:
        body = body[:int(headers["content-length"])]
    if len(body) > MAX_POLICY_SIZE:
        raise PolicyError("policy larger than 64 KiB")
    return body.decode("utf-8")


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)
