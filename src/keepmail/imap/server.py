"""IMAP listeners: 993 (implicit TLS, RFC 8314) and 143 (STARTTLS, RFC 9051 6.2.1).

Each connection is an asyncio.Protocol with its own small input buffer and
its own TLS layer (ssl.MemoryBIO): asyncio's stock TLS transport keeps a
256 KiB read buffer per connection, which alone would be ten times the
memory budget of an idle IDLE session. COMPRESS=DEFLATE (RFC 4978) sits
between TLS and the IMAP parser.

At shutdown the listener stops accepting, lets commands in progress finish
for a moment and tells every client `* BYE` (RFC 9051 7.1.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import weakref
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..gctuning import tune_for_serving
from ..store import Store
from . import cmd_mailbox, cmd_message, cmd_session, msgcache  # noqa: F401  (register commands)
from .parser import Limits
from .session import NOT_AUTHENTICATED, Bye, RecorderLike, Session

log = logging.getLogger(__name__)

READ_HIGH_WATER = 256 * 1024   # stop reading from a client that sends faster than we parse
TLS_RECORD = 16 * 1024


@dataclass
class ImapConfig:
    hostname: str = "localhost"
    limits: Limits = field(default_factory=Limits)
    max_connections: int = 10_000
    max_connections_per_ip: int = 200
    plaintext_auth: bool = False          # allow LOGIN without TLS (tests, loopback only)
    fail_delay: float = 1.0               # seconds before answering a failed login
    preauth_timeout: float = 60.0
    autologout: float = 31 * 60.0         # RFC 9051 5.4: at least 30 minutes
    shutdown_grace: float = 5.0
    # Decrypted headers kept in memory; small whole messages get half as much again.
    cache_bytes: int = msgcache.DEFAULT_MAX_BYTES


class NullRecorder:
    def new_trace(self, kind: str, parent: str = "", **summary: Any) -> str:
        return ""

    def event(self, trace_id: str, kind: str, **data: Any) -> None:
        pass


class TlsLayer:
    """Server-side TLS over memory BIOs (no per-connection 256 KiB buffer)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.ready = False
        self.closed = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Decrypt what arrived: (plaintext, bytes to send back)."""
        self.incoming.write(data)
        if not self.ready:
            try:
                self.obj.do_handshake()
                self.ready = True
            except ssl.SSLWantReadError:
                return b"", self.outgoing.read()
        chunks = []
        while True:
            try:
                chunk = self.obj.read(TLS_RECORD)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            if not chunk:  # the peer's close_notify
                self.closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks), self.outgoing.read()

    def encrypt(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        with contextlib.suppress(ssl.SSLError):
            self.obj.unwrap()
        return self.outgoing.read()


class Connection(asyncio.Protocol):
    """One client: buffering, TLS, compression; the Session does the IMAP."""

    def __init__(self, server: ImapServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.peer_ip = ""
        self.tls: TlsLayer | None = None
        self.secure = False
        self.tls_available = server.tls_context is not None
        self.compressed = False
        self._inflate: Any = None
        self._deflate: Any = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._drain: asyncio.Future[None] | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._discarding = False
        self.session: Session | None = None
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's is no subclass)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer_ip = str(peer[0])
        if not self.server.admit(self):
            transport.write(b"* BYE Too many connections\r\n")
            transport.close()
            return
        if self.server.implicit_tls and self.server.tls_context is not None:
            # Before any byte can arrive: with uvloop the ClientHello may be delivered before
            # _run gets to start_tls, and would otherwise be taken for plaintext and dropped.
            self._begin_tls(self.server.tls_context)
        self.session = Session(self.server, self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self.session is not None
        try:
            if self.server.implicit_tls:
                await self.start_tls()
            await self.session.run()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
        except Bye as exc:  # raised outside the session loop (e.g. TLS handshake)
            with contextlib.suppress(Exception):
                self.write(f"* BYE {exc}\r\n".encode())
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("IMAP connection failed")
        finally:
            self.close()
            self.server.release(self)

    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            try:
                data, reply = self.tls.feed(data)
            except ssl.SSLError:
                self.eof = True
                self._wake()
                if self.transport is not None:
                    self.transport.abort()
                return
            if reply and self.transport is not None:
                self.transport.write(reply)
            if self.tls.ready and self._handshake is not None and not self._handshake.done():
                self._handshake.set_result(None)
            if self.tls.closed:
                self.eof = True
        if data and self._inflate is not None:
            self._inflate_into(data)
        elif data:
            self._append(data)
        self._wake()

    def _append(self, data: bytes) -> None:
        if self._discarding:  # dropping an over-long line: keep only what follows it
            nl = data.find(b"\n")
            if nl < 0:
                return
            self._discarding = False
            data = data[nl + 1:]
        self.buf += data
        if len(self.buf) > READ_HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()

    def _inflate_into(self, data: bytes) -> None:
        try:
            out = self._inflate.decompress(data, READ_HIGH_WATER)
            self._append(out)
            while self._inflate.unconsumed_tail:
                self._append(self._inflate.decompress(self._inflate.unconsumed_tail,
                                                      READ_HIGH_WATER))
        except zlib.error:
            self.eof = True
            if self.transport is not None:
                self.transport.abort()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("connection lost"))
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- input for the session ---------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _more(self) -> None:
        if self.eof:
            raise ConnectionResetError("client closed the connection")
        if self._paused_reading and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def wait_readable(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self.buf or self.eof:
            fut: asyncio.Future[None] = loop.create_future()
            fut.set_result(None)
            return fut
        if self._waiter is None or self._waiter.done():
            self._waiter = loop.create_future()
        return self._waiter

    async def read_line(self, limit: int) -> tuple[bytes, bool]:
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                if nl > limit + 1:
                    head = bytes(self.buf[:100])
                    del self.buf[:nl + 1]
                    return head, False
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                return (line[:-1] if line.endswith(b"\r") else line), True
            if len(self.buf) > limit + 1:
                # Too long: drop what we have and everything up to the next LF.
                head = bytes(self.buf[:100])  # enough to name the tag in the reply
                self.buf.clear()
                self._discarding = True
                while self._discarding:
                    await self._more()
                return head, False
            await self._more()

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._more()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    # -- output --------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        if self.tls is not None:
            data = self.tls.encrypt(data)
        self.transport.write(data)

    async def drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            await self._drain

    async def start_tls(self) -> None:
        context = self.server.tls_context
        if context is None:
            raise Bye("TLS is not configured")
        if self.tls is None:
            self._begin_tls(context)
        assert self._handshake is not None
        await asyncio.wait_for(self._handshake, self.server.config.preauth_timeout)
        self.secure = True

    def write_then_begin_tls(self, data: bytes) -> None:
        """Send the last plaintext (STARTTLS's OK) and switch to TLS at once.

        No await between the two: the client's handshake may arrive on the very
        next loop iteration and must already find the TLS layer in place.
        """
        self.write(data)
        if self.tls is None and self.server.tls_context is not None:
            self._begin_tls(self.server.tls_context)

    def _begin_tls(self, context: ssl.SSLContext) -> None:
        self.buf.clear()  # never let plaintext sent before the handshake count (RFC 9051 11.1)
        self.tls = TlsLayer(context)
        self._handshake = asyncio.get_running_loop().create_future()

    def start_compress(self) -> None:
        self.compressed = True
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
        self._inflate = zlib.decompressobj(-15)
        pending = bytes(self.buf)
        self.buf.clear()
        if pending:
            self._inflate_into(pending)

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.tls is not None and self.tls.ready:
            with contextlib.suppress(Exception):
                self.transport.write(self.tls.close_notify())
        self.transport.close()

    def say_bye(self, text: str) -> None:
        with contextlib.suppress(Exception):
            self.write(f"* BYE {text}\r\n".encode())
        self.close()


_RECENT_FLOORS: weakref.WeakKeyDictionary[Any, dict[int, int]] = weakref.WeakKeyDictionary()


def recent_floors(store: Store) -> dict[int, int]:
    """The \\Recent floors shared by every IMAP listener on one store (memory only)."""
    return _RECENT_FLOORS.setdefault(store, {})


class ImapServer:
    """One IMAP listener (993 or 143) on the shared store."""

    def __init__(self, store: Store, authenticator: Any, tls_context: ssl.SSLContext | None,
                 host: str | list[str], port: int, implicit_tls: bool,
                 recorder: RecorderLike | None = None, config: ImapConfig | None = None) -> None:
        self.store = store
        self.authenticator = authenticator
        self.tls_context = tls_context
        self.host = host
        self.port = port
        self.implicit_tls = implicit_tls
        self.recorder: RecorderLike = recorder or NullRecorder()
        self.config = config or ImapConfig()
        self.auth_guard: Any = None   # set by the app: keepmail.abuse.authguard.AuthGuard
        self.connections: set[Connection] = set()
        # mailbox id → highest UID claimed as \Recent; shared by the listeners on this store,
        # so a message is \Recent in one session only, whichever port it came in on.
        self.recent_floor = recent_floors(store)
        # Decrypted headers, shared by every listener on this store (memory only).
        self.cache = msgcache.cache_for(store, self.config.cache_bytes)
        self._per_ip: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        if implicit_tls and tls_context is None:
            raise ValueError("implicit TLS needs a TLS context")

    async def start(self) -> None:
        tune_for_serving()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host=self.host,
                                                port=self.port, backlog=1024,
                                                reuse_address=True)
        self._watchdog = loop.create_task(self._watch())

    @property
    def ports(self) -> list[int]:
        assert self._server is not None
        return [sock.getsockname()[1] for sock in self._server.sockets]

    def admit(self, conn: Connection) -> bool:
        if len(self.connections) >= self.config.max_connections:
            return False
        if self._per_ip[conn.peer_ip] >= self.config.max_connections_per_ip:
            return False
        self.connections.add(conn)
        self._per_ip[conn.peer_ip] += 1
        return True

    def release(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self._per_ip[conn.peer_ip] -= 1
            if self._per_ip[conn.peer_ip] <= 0:
                del self._per_ip[conn.peer_ip]

    async def _watch(self) -> None:
        """Log out sessions that have been silent too long (RFC 9051 5.4)."""
        while True:
            await asyncio.sleep(min(10.0, self.config.preauth_timeout / 2))
            now = time.monotonic()
            for conn in list(self.connections):
                s = conn.session
                if s is None or s.busy:
                    continue
                limit = (self.config.preauth_timeout if s.state == NOT_AUTHENTICATED
                         else self.config.autologout)
                if now - s.last_active > limit:
                    conn.say_bye("Autologout; idle for too long")

    def capabilities(self, s: Session) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2"]
        login_ok = s.conn.secure or self.config.plaintext_auth
        if s.state == NOT_AUTHENTICATED:
            if not s.conn.secure and self.tls_context is not None:
                caps.append("STARTTLS")
            caps += ["AUTH=PLAIN", "SASL-IR"] if login_ok else ["LOGINDISABLED"]
            caps += ["ID", "ENABLE", "IDLE", "LITERAL+"]
            if not s.conn.compressed:
                caps.append("COMPRESS=DEFLATE")
            return caps
        caps += ["LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT",
                 "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "SPECIAL-USE", "LIST-EXTENDED",
                 "LIST-STATUS", "CHILDREN", "ESEARCH", "SEARCHRES", "SORT", "SORT=DISPLAY",
                 "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "MULTIAPPEND", "BINARY",
                 "UTF8=ACCEPT", f"APPENDLIMIT={self.config.limits.max_append}", "QUOTA",
                 "QUOTA=RES-STORAGE", "STATUS=SIZE"]
        if not s.conn.compressed:
            caps.append("COMPRESS=DEFLATE")
        return caps

    async def close(self) -> None:
        """Stop accepting, let running commands finish briefly, then BYE everyone."""
        if self._server is not None:
            self._server.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
        deadline = time.monotonic() + self.config.shutdown_grace
        for conn in list(self.connections):
            s = conn.session
            if s is None or not s.busy or _idling(s):
                conn.say_bye("Server shutting down")
        # Polling is fine here: a few rounds at most, once, at shutdown.
        while time.monotonic() < deadline and self._busy():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.say_bye("Server shutting down")
        tasks = [c.task for c in self.connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        for t in tasks:
            t.cancel()
        if self._server is not None:
            await self._server.wait_closed()


    def _busy(self) -> bool:
        return any(c.session is not None and c.session.busy and not _idling(c.session)
                   for c in self.connections if not (c.transport and c.transport.is_closing()))


def _idling(s: Session) -> bool:
    return s.busy and s.in_idle
