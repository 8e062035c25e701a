"""Running the console: uvicorn inside keepmail's event loop, over TLS.

WebService binds one socket per configured listen address itself (so
"0.0.0.0" and "::" can both be served, and a busy port fails at start) and
runs uvicorn.Server on them as a task. uvicorn's own signal handling is
switched off: keepmail's App owns SIGTERM/SIGINT and shuts services down in
order. The TLS context comes from keepmail.tls (TLS 1.2+, the same
certificate as SMTP and IMAP), with HTTP/1.1 offered by ALPN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

from ..tls import server_context
from .app import create_app

log = logging.getLogger("keepmail.web")
START_TIMEOUT = 10.0
STOP_GRACE = 2.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers (App owns the process's signals)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # "::" serves IPv6 only, so a separate "0.0.0.0" entry does not collide with it.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class WebService:
    def __init__(self, kapp: Any, port: int, *, asgi_app: Any = None) -> None:
        self.kapp = kapp
        self.port = port
        self.asgi_app = asgi_app
        self.server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []

    async def start(self) -> None:
        app = self.asgi_app or create_app(self.kapp)
        self.asgi_app = app
        config = uvicorn.Config(app, log_level="warning", lifespan="off", proxy_headers=False,
                                server_header=False, access_log=False,
                                timeout_graceful_shutdown=int(STOP_GRACE) + 3)
        config.load()
        ctx = server_context(self.kapp.tls_files)
        ctx.set_alpn_protocols(["http/1.1"])
        config.ssl = ctx   # set after load(): works with every uvicorn since 0.29
        self._sockets = [bind(h, self.port) for h in self.kapp.config.server.listen]
        self.server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self.server.serve(sockets=self._sockets),
                                         name="web")
        await self._wait_started()

    async def _wait_started(self) -> None:
        assert self.server is not None and self._task is not None
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not self.server.started:
            if self._task.done():
                self._close_sockets()
                self._task.result()   # raises what stopped it
                raise RuntimeError("the web server stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("the web server did not start in time")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.server is None or self._task is None:
            return
        self.server.should_exit = True
        if not await self._finished(STOP_GRACE):
            # Idle keep-alive TLS connections wait for the client's close_notify, which
            # a client that keeps its pool open never sends: cut them.
            for connection in list(self.server.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()
            if not await self._finished(2.0):
                self.server.force_exit = True
                await self._finished(2.0)
        self._close_sockets()

    async def _finished(self, seconds: float) -> bool:
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=seconds)
        return bool(done)

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._sockets = []
