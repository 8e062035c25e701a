"""Benchmark: whole `check_message` runs per second, DNS on loopback (test DNS server).

Prints checks/s with the resolver cache off (every check asks the DNS server:
the worst case) and on (the usual case for a busy MX), and, as the peer, the
DKIM part alone with dkimpy (pure-Python RSA) vs keepmail's verifier, in the
same process.  Usage: python bench/mailauth_bench.py [seconds-per-run]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dkim

from keepmail.dnsx.resolver import Resolver
from keepmail.mailauth import dkim_verify
from keepmail.mailauth.check import check_message
from tests.mailauth.helpers import MESSAGE, ed_record, key_zone, rsa_record, sign_ed, sign_rsa
from tests.support.dnsserver import DnsServer

ZONE = {**key_zone(), "example.test": [("TXT", "v=spf1 mx ip4:192.0.2.0/24 -all"),
                                       ("MX", "10 mx.example.test.")],
        "mx.example.test": [("A", "198.51.100.1")],
        "_dmarc.example.test": [("TXT", "v=DMARC1; p=reject")]}
CONCURRENCY = 8


async def _checks(resolver: Resolver, raw: bytes, seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            rep = await check_message(raw, client_ip="192.0.2.5", helo="mta.example.test",
                                      mail_from="b@example.test", resolver=resolver,
                                      authserv_id="mx.bench.test")
            assert rep.dmarc.result == "pass", rep
            done += 1
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done / (time.perf_counter() - start)


def _dkim_rates(raw: bytes, seconds: float, server: DnsServer) -> tuple[float, float]:
    records = {b"r._domainkey.example.test.": rsa_record().encode(),
               b"e._domainkey.example.test.": ed_record().encode()}
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        d = dkim.DKIM(raw)
        assert d.verify(idx=0, dnsfunc=lambda name, timeout=5: records[name])
        n += 1
    theirs = n / (time.perf_counter() - start)
    resolver = Resolver([server.nameserver])

    async def ours() -> float:
        m, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            res = await dkim_verify.verify(raw, resolver)
            assert res[0].result == "pass"
            m += 1
        return m / (time.perf_counter() - t0)
    return asyncio.run(ours()), theirs


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    raw = sign_rsa(sign_ed(MESSAGE))
    with DnsServer(ZONE, host="127.0.0.1") as server:
        cold = asyncio.run(_checks(Resolver([server.nameserver], cache=False), raw, seconds))
        warm = asyncio.run(_checks(Resolver([server.nameserver]), raw, seconds))
        ours, theirs = _dkim_rates(sign_rsa(MESSAGE), seconds, server)
    print(f"check_message (SPF+DKIM rsa&ed25519+DMARC+ARC), DNS cache off: {cold:8.1f} checks/s")
    print(f"check_message, DNS cache on:                                  {warm:8.1f} checks/s")
    print(f"DKIM rsa-sha256 verify, keepmail (cryptography): {ours:8.1f}/s")
    print(f"DKIM rsa-sha256 verify, dkimpy (peer):           {theirs:8.1f}/s"
          f"   ratio keepmail/dkimpy = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
