"""pytest fixture `dns_server`: a test DNS server on 127.0.0.53 with a free port.

Use it as::

    def test_x(dns_server):
        dns_server.set_zone({"example.test": [("TXT", "v=spf1 -all")]})
        resolver = Resolver([dns_server.nameserver])

Import it into a conftest.py (``from tests.support.dns_fixture import dns_server``)
or a test module. `LocalDns` keeps the constructor the outbound tests used
(``LocalDns(zone_text, host=..., port=..., secure=...)``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dnsserver import DnsServer

DNS_HOST = "127.0.0.53"


class LocalDns(DnsServer):
    """DnsServer under the name the outbound and abuse tests import."""


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer(host=DNS_HOST).start()
    try:
        yield server
    finally:
        server.stop()
