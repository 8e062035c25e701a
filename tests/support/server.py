"""Running real keepmail servers for tests: in-process (fast) or as a subprocess.

Every server gets its own data folder, loopback address and port offset, so
tests never collide with each other or with system daemons on standard ports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keepmail import config as configmod
from keepmail.config import STANDARD_PORTS, Config
from keepmail.store import Store, accounts
from keepmail.store import mail as mailq
from keepmail.store.passwords import hash_password

PASSWORD = "correct horse battery"
_HASH_CACHE: dict[str, str] = {}


def password_hash(password: str = PASSWORD) -> str:
    # argon2 is deliberately slow; tests reuse one hash per password.
    if password not in _HASH_CACHE:
        _HASH_CACHE[password] = hash_password(password)
    return _HASH_CACHE[password]


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _offset_range() -> tuple[int, int]:
    """Each pytest-xdist worker searches its own range of offsets, so two workers
    never pick the same one between checking the ports and binding them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker[2:].isdigit() else 4 + os.getpid() % 4
    low = 20000 + (index % 8) * 4000
    return low, low + 4000


_offset_lock = threading.Lock()
_offset_low, _offset_high = _offset_range()
_next_offset = _offset_low + (os.getpid() % 100) * 17


def free_port_offset(host: str = "127.0.0.1") -> int:
    """An offset N such that every standard port P+N is free on host."""
    global _next_offset
    with _offset_lock:
        for _ in range(2000):
            _next_offset += 17
            if _next_offset >= _offset_high:
                _next_offset = _offset_low
            offset = _next_offset
            if all(port_free(host, p + offset) for p in STANDARD_PORTS.values()):
                return offset
    raise RuntimeError("no free port offset")


_shared_dns: Any = None


def shared_dns() -> Any:
    """One loopback DNS server per test process; tests add the zones they need.

    Tests never ask the machine's own resolver: every name they look up is
    served here (unknown names get NXDOMAIN at once).
    """
    global _shared_dns
    if _shared_dns is None:
        from tests.support.dnsserver import DnsServer
        _shared_dns = DnsServer(host="127.0.0.53").start()
    return _shared_dns


def write_config(directory: Path, *, host: str = "127.0.0.1", domains: list[str] | None = None,
                 extra: dict[str, dict[str, Any]] | None = None) -> Path:
    overrides: dict[str, dict[str, Any]] = {
        "server": {"hostname": "mx.example.test", "data_dir": "data", "listen": [host],
                   "domains": domains or ["example.test"]},
        # Tests send a lot from one address; the tests of these limits turn them on.
        "inbound": {"max_connections_per_minute": 0, "max_messages_per_minute": 0,
                    "greylisting": False},
        "dns": {"nameservers": [shared_dns().nameserver], "timeout": 2.0}}
    for section, values in (extra or {}).items():
        overrides.setdefault(section, {}).update(values)
    path = directory / "keepmail.toml"
    path.write_text(configmod.render_default_config(overrides))
    return path


def add_users(cfg: Config, *addresses: str, aliases: dict[str, list[str]] | None = None) -> None:
    store = Store.open(cfg.data_dir, cfg.key_file)
    try:
        def txn(conn: Any) -> None:
            for domain in cfg.server.domains:
                if accounts.get_domain(conn, domain) is None:
                    accounts.add_domain(conn, domain)
            for address in addresses:
                domain = address.split("@")[1]
                if accounts.get_domain(conn, domain) is None:
                    accounts.add_domain(conn, domain)
                accounts.add_account(conn, address, password_hash())
            for address, targets in (aliases or {}).items():
                accounts.add_alias(conn, address, targets)
        store.write_sync(txn)
    finally:
        store.close()


def mailbox_messages(store: Store, address: str, mailbox: str = "INBOX") -> list[bytes]:
    """The raw bytes of every message in a user's mailbox, by UID."""
    acct = store.read_now(lambda c: accounts.get_account(c, address))
    assert acct is not None, address
    box = store.read_now(lambda c: mailq.get_mailbox(c, acct.id, mailbox))
    assert box is not None
    msgs = store.read_now(lambda c: mailq.list_messages(c, box.id))
    return [store.read_blob_now(m.blob_id) for m in msgs]


@dataclass
class InProcessServer:
    """A keepmail App running on its own event loop thread."""

    config: Config
    port_offset: int
    tweak: Callable[[Any], None] | None = None
    app: Any = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.config.server.listen[0]

    def port(self, name: str) -> int:
        return self.config.port(name, self.port_offset)

    def start(self) -> InProcessServer:
        from keepmail.app import App

        ready = threading.Event()
        errors: list[BaseException] = []

        async def boot() -> None:
            self.app = App(self.config, self.port_offset)
            self.app.build()
            if self.tweak is not None:
                self.tweak(self.app)
            await self.app.start()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(boot())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    @property
    def store(self) -> Store:
        return self.app.store

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.app is not None:
            self.call(self.app.stop(), timeout=90)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)


@dataclass
class ServerProcess:
    """`keepmail serve` as a child process (for signal and crash tests)."""

    config_path: Path
    port_offset: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, wait_port: int = 25, timeout: float = 30) -> ServerProcess:
        self.log_path = self.config_path.parent / "server.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keepmail.cli", "serve", "--config", str(self.config_path),
             "--port-offset", str(self.port_offset)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        port = wait_port + self.port_offset
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not listen on {port}")

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
