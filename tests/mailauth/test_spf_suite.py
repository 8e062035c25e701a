"""The openspf RFC 7208 test suite, each scenario's zone served by the loopback DNS server.

A test passes when keepmail's result is the expected one or one of the
suite's accepted alternatives, and (where the suite names one) the
explanation matches; "DEFAULT" stands for "no exp= explanation".
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keepmail.dnsx.resolver import Resolver
from keepmail.mailauth.spf import check_spf
from tests.mailauth import spf_suite
from tests.support.dnsserver import DnsServer

# Deliberate deviations from the suite: test id → why. (Empty: full agreement.)
DEVIATIONS: dict[str, str] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "spf_case" not in metafunc.fixturenames:
        return
    cache = getattr(metafunc.config, "cache", None)   # absent with -p no:cacheprovider
    where = cache.mkdir("spf-suite") if cache else Path(tempfile.gettempdir()) / "keepmail-spf"
    path = spf_suite.locate(where)
    if path is None:
        metafunc.parametrize("spf_case", [pytest.param(None, id="suite-unavailable", marks=(
            pytest.mark.skip(reason="rfc7208-tests.yml not found and pip download failed")))])
        return
    metafunc.parametrize("spf_case", [pytest.param(case, id=case[0])
                                      for case in spf_suite.load(path)])


@pytest.fixture(scope="module")
def suite_dns() -> Iterator[DnsServer]:
    with DnsServer(host="127.0.0.54") as server:
        yield server


def test_rfc7208_suite(suite_dns: DnsServer, spf_case: tuple[str, dict[str, Any],
                                                             dict[str, Any]]) -> None:
    test_id, test, zone = spf_case
    if test_id in DEVIATIONS:
        pytest.skip(DEVIATIONS[test_id])
    spf_suite.serve(suite_dns, zone)
    # Generous enough for a loaded CI machine; the suite's TIMEOUT cases pay it.
    resolver = Resolver([suite_dns.nameserver], timeout=0.5, lifetime=1.5, cache=False)
    res = asyncio.run(check_spf(resolver, test["host"], test.get("mailfrom", ""),
                                test.get("helo", ""), receiver=test.get("receiver", "")))
    expected = test["result"]
    accepted = expected if isinstance(expected, list) else [expected]
    assert res.result in accepted, f"{test_id}: {res.result} ({res.reason}), want {accepted}"
    if "explanation" in test and res.result == "fail":
        assert (res.explanation or "DEFAULT") == test["explanation"], res
