"""SMTP listeners: accept connections, apply connection limits, shut down gently.

At shutdown a listener stops accepting, tells idle clients 421 (RFC 5321
3.8) and waits for sessions in the middle of a command — a DATA being stored —
to finish, so nothing acknowledged is lost and nothing half-received is
acknowledged.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field

from ..gctuning import tune_for_serving
from .handler import Handler, RecorderLike, Session
from .protocol import Limits, SmtpConnection

# Read buffer per connection; also the piece size for very long DATA lines.
STREAM_LIMIT = 1024 * 1024


@dataclass
class ListenerConfig:
    name: str                       # "mx", "submission", "submissions"
    hosts: list[str]
    port: int
    implicit_tls: bool = False
    limits: Limits = field(default_factory=Limits)
    max_connections: int = 1000
    max_connections_per_ip: int = 20
    # Several processes serve one port (mxworkers.py); the kernel spreads connections.
    reuse_port: bool = False


class SmtpServer:
    def __init__(self, config: ListenerConfig, handler: Handler, *, hostname: str,
                 recorder: RecorderLike, tls_context: ssl.SSLContext | None) -> None:
        self.config = config
        self.handler = handler
        self.hostname = hostname
        self.recorder = recorder
        self.tls_context = tls_context
        self._server: asyncio.Server | None = None
        self._connections: set[SmtpConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_ip: Counter[str] = Counter()
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        tune_for_serving()
        cfg = self.config
        self._server = await asyncio.start_server(
            self._accept, host=cfg.hosts, port=cfg.port, limit=STREAM_LIMIT,
            ssl=self.tls_context if cfg.implicit_tls else None, backlog=1024,
            reuse_address=True, reuse_port=cfg.reuse_port or None)
        self._watchdog = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Hang up on peers silent past their deadline (RFC 5321 4.5.3.2)."""
        period = max(0.05, min(5.0, self.config.limits.command_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self._connections):
                if conn.deadline and now > conn.deadline:
                    conn.expire()

    @property
    def ports(self) -> list[int]:
        assert self._server is not None
        return [sock.getsockname()[1] for sock in self._server.sockets]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        ip = str(peer[0])
        try:
            if not await self._admit(ip, writer):
                return
            self._per_ip[ip] += 1
            try:
                await self._serve(reader, writer, peer, local)
            finally:
                self._per_ip[ip] -= 1
                if self._per_ip[ip] <= 0:
                    del self._per_ip[ip]
        finally:
            self._tasks.discard(task)

    async def _admit(self, ip: str, writer: asyncio.StreamWriter) -> bool:
        cfg = self.config
        reason = ""
        if len(self._connections) >= cfg.max_connections:
            reason = "Too many connections, try again later"
        elif self._per_ip[ip] >= cfg.max_connections_per_ip:
            reason = "Too many connections from your address, try again later"
        if not reason:
            return True
        trace = self.recorder.new_trace("session", ip=ip, status="refused", detail=reason)
        self.recorder.event(trace, "connect-refused", ip=ip, reason=reason)
        try:
            writer.write(f"421 4.7.0 {reason}\r\n".encode())
            await writer.drain()
            writer.close()
        except (ConnectionError, ssl.SSLError):
            pass
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: tuple[str, int], local: tuple[str, int]) -> None:
        trace = self.recorder.new_trace("session", ip=str(peer[0]))
        session = Session(trace_id=trace, peer_ip=str(peer[0]), peer_port=int(peer[1]),
                          local_ip=str(local[0]), local_port=int(local[1]),
                          listener=self.config.name, hostname=self.hostname,
                          recorder=self.recorder)
        starttls = None if self.config.implicit_tls else self.tls_context
        conn = SmtpConnection(reader, writer, self.handler, session, self.config.limits,
                              starttls)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)

    async def close(self, grace: float = 60.0) -> None:
        """Stop accepting; finish sessions in flight; hang up idle ones with 421."""
        if self._server is not None:
            self._server.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
        for conn in list(self._connections):
            await conn.interrupt()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
