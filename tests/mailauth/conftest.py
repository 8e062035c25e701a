"""Fixtures for tests/mailauth: the loopback DNS server."""

from tests.support.dns_fixture import dns_server  # noqa: F401  (pytest fixture)
