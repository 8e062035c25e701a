"""Fixtures: a real keepmail MX on loopback, in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keepmail import config as configmod
from tests.support.server import InProcessServer, add_users, free_port_offset, write_config

USERS = ("alice@example.test", "bob@example.test", "carol@example.test")
ALIASES = {
    "team@example.test": ["alice@example.test", "bob@example.test"],
    "@other.test": ["carol@example.test"],
    "fwd@example.test": ["team@example.test"],
}


def make_server(tmp_path: Path, host: str = "127.0.0.1", **extra: dict) -> InProcessServer:
    path = write_config(tmp_path, host=host, domains=["example.test", "other.test"],
                        extra=extra or None)
    cfg = configmod.load(path)
    add_users(cfg, *USERS, aliases=ALIASES)
    return InProcessServer(cfg, free_port_offset(host)).start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    srv = make_server(tmp_path)
    yield srv
    srv.stop()
