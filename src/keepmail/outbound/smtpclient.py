"""A small SMTP client for the delivery agent (RFC 5321 client side).

EHLO with HELO fallback, STARTTLS (RFC 3207), PIPELINING (RFC 2920) of MAIL,
RCPT and DATA, dot-stuffing (RFC 5321 4.5.2). Every command and reply goes
to a `record` callback so the flight recorder holds the whole conversation.
Why not aiosmtplib: we need the raw TLS object for DANE, pipelined
transactions, and one record per command; the protocol part is small.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_REPLY_LINES = 200
_STREAM_LIMIT = 64 * 1024


class SmtpClientError(Exception):
    """The connection failed or the peer broke the protocol (a temporary failure)."""


@dataclass(frozen=True)
class ServerReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status code at the start of the text, if any."""
        first = self.lines[0].split(" ", 1)[0] if self.lines and self.lines[0] else ""
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] == str(self.code)[0]:
            return first
        return ""

    @property
    def status(self) -> str:
        """Enhanced status, or one derived from the reply class."""
        return self.enhanced or f"{self.code // 100}.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


Recorder = Callable[..., None]


class SmtpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 timeout: float, record: Recorder) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.record = record
        self.extensions: dict[str, str] = {}
        self.closed = False
        self.replies = 0      # replies read so far (a reused connection's liveness test)
        # The reply timeout: a deadline moved forward by each wait, and one timer per
        # connection that checks it (see _wait_from_now), instead of a timer per reply.
        self._deadline = 0.0  # loop time the pending read must finish by; 0: no read
        self._watchdog: asyncio.TimerHandle | None = None
        self._expired = False

    @classmethod
    async def connect(cls, ip: str, port: int, *, timeout: float, record: Recorder,  # noqa: ASYNC109
                      local_addr: str = "") -> SmtpClient:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                ip, port, limit=_STREAM_LIMIT,
                local_addr=(local_addr, 0) if local_addr else None), timeout)
        except (OSError, TimeoutError) as exc:
            raise SmtpClientError(f"cannot connect to {ip} port {port}: "
                                  f"{exc or type(exc).__name__}") from None
        return cls(reader, writer, timeout=timeout, record=record)

    # -- replies -----------------------------------------------------------------
    async def read_reply(self, what: str = "") -> ServerReply:
        return (await self.read_replies([what]))[0]

    async def read_replies(self, whats: Sequence[str]) -> list[ServerReply]:
        """One reply per command in whats (a pipelined group), in order."""
        replies: list[ServerReply] = []
        what = ""
        # One deadline for the group: its replies usually come in one packet.
        self._wait_from_now()
        try:
            for what in whats:
                reply = await self._read_lines([])
                self.replies += 1
                self.record("smtp", command=what, reply=str(reply)[:2000])
                replies.append(reply)
                if reply.code == 421:
                    # The server is closing the connection (RFC 5321 3.8): no more
                    # replies will come; the rest of the group shares this one.
                    self.closed = True
                    replies += [reply] * (len(whats) - len(replies))
                    break
        except (SmtpClientError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.closed = True
            if not self._expired and isinstance(exc, SmtpClientError):
                raise
            why = f"no reply within {self.timeout:g} s" if self._expired else \
                str(exc) or type(exc).__name__
            raise SmtpClientError(f"no reply{' to ' + what if what else ''}: {why}") \
                from None
        finally:
            self._deadline = 0.0
        return replies

    def _wait_from_now(self) -> None:
        """Start the reply timeout. Not asyncio.timeout: that pushes and cancels a
        timer (and wait_for adds a task) for every group of replies; here a wait
        only moves the deadline, and the one timer re-arms itself when it fires
        early."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.timeout
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._deadline:
            return   # no read pending: the next wait arms a new timer
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._watchdog = loop.call_at(self._deadline, self._check_deadline)
            return
        # Time is up: dropping the connection ends the pending read (it sees the
        # end of the stream), which read_replies reports as a timeout.
        self._expired = True
        self.writer.transport.abort()

    async def _read_lines(self, lines: list[str]) -> ServerReply:
        while True:
            raw = await self.reader.readline()
            if not raw:
                raise SmtpClientError("connection closed by the server")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit() or len(lines) > MAX_REPLY_LINES:
                raise SmtpClientError(f"malformed reply: {line[:200]!r}")
            code = int(line[:3])
            lines.append(line[4:])
            if len(line) == 3 or line[3] != "-":
                return ServerReply(code, tuple(lines))

    async def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            transport = self.writer.transport
            if not transport.get_write_buffer_size() and not transport.is_closing():
                return   # all sent at once: nothing to wait for (the usual case)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            self.closed = True
            raise SmtpClientError(f"write failed: {exc or type(exc).__name__}") from None

    async def command(self, line: str) -> ServerReply:
        await self._write(line.encode("utf-8") + b"\r\n")
        return await self.read_reply(line)

    # -- session -------------------------------------------------------------------
    async def greeting(self) -> ServerReply:
        return await self.read_reply("(greeting)")

    async def ehlo(self, name: str) -> ServerReply:
        reply = await self.command(f"EHLO {name}")
        self.extensions = {}
        if reply.code == 250:
            for line in reply.lines[1:]:
                key, _, value = line.partition(" ")
                self.extensions[key.upper()] = value
            return reply
        if reply.code == 421:
            return reply
        return await self.command(f"HELO {name}")

    def offers(self, extension: str) -> bool:
        return extension.upper() in self.extensions

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> ServerReply:
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return reply
        try:
            await asyncio.wait_for(self.writer.start_tls(
                context, server_hostname=server_hostname), self.timeout)
        except (OSError, TimeoutError, ssl.SSLError, ssl.CertificateError) as exc:
            self.closed = True
            raise SmtpClientError(f"TLS handshake failed: {exc or type(exc).__name__}") \
                from None
        return reply

    @property
    def ssl_object(self) -> Any:
        return self.writer.get_extra_info("ssl_object")

    def peer_chain(self) -> list[bytes]:
        """DER certificates the server sent, leaf first (for DANE)."""
        obj = self.ssl_object
        if obj is None:
            return []
        inner = getattr(obj, "_sslobj", None)
        chain = getattr(inner, "get_unverified_chain", None)
        if chain is not None:
            try:
                import _ssl
                return [c.public_bytes(_ssl.ENCODING_DER) for c in (chain() or [])]
            except Exception:
                pass
        leaf = obj.getpeercert(binary_form=True)
        return [leaf] if leaf else []

    # -- mail transaction ------------------------------------------------------------
    async def transaction(self, sender: str, params: Sequence[str], rcpts: Sequence[str],
                          message: bytes) -> tuple[ServerReply, list[ServerReply | None],
                                                   ServerReply | None]:
        """Send one message; returns (MAIL reply, per-RCPT replies, final reply).

        A RCPT reply is None when it was never sent (MAIL failed without
        pipelining); the final reply is None when DATA was not reached.
        """
        mail = f"MAIL FROM:<{sender}>" + "".join(" " + p for p in params)
        rcpt_lines = [f"RCPT TO:<{r}>" for r in rcpts]
        if self.offers("PIPELINING"):
            return await self._pipelined(mail, rcpt_lines, message)
        return await self._lockstep(mail, rcpt_lines, message)

    async def _pipelined(self, mail: str, rcpt_lines: list[str], message: bytes
                         ) -> tuple[ServerReply, list[ServerReply | None], ServerReply | None]:
        lines = [mail, *rcpt_lines, "DATA"]
        await self._write("".join(line + "\r\n" for line in lines).encode("utf-8"))
        replies = await self.read_replies(lines)
        mail_reply, data_reply = replies[0], replies[-1]
        rcpt_replies: list[ServerReply | None] = list(replies[1:-1])
        accepted = mail_reply.code == 250 and any(r and r.code < 300 for r in rcpt_replies)
        if data_reply.code != 354:
            return mail_reply, rcpt_replies, data_reply if accepted else None
        if not accepted:
            # RFC 2920 3.1: DATA was accepted although no recipient was: end it empty.
            await self._write(b".\r\n")
            await self.read_reply("(end of empty data)")
            await self.reset()
            return mail_reply, rcpt_replies, None
        return mail_reply, rcpt_replies, await self._send_data(message)

    async def _lockstep(self, mail: str, rcpt_lines: list[str], message: bytes
                        ) -> tuple[ServerReply, list[ServerReply | None], ServerReply | None]:
        mail_reply = await self.command(mail)
        if mail_reply.code != 250:
            return mail_reply, [None] * len(rcpt_lines), None
        rcpt_replies: list[ServerReply | None] = []
        for line in rcpt_lines:
            rcpt_replies.append(await self.command(line))
            if self.closed:
                rcpt_replies += [None] * (len(rcpt_lines) - len(rcpt_replies))
                return mail_reply, rcpt_replies, None
        if not any(r and r.code < 300 for r in rcpt_replies):
            await self.reset()
            return mail_reply, rcpt_replies, None
        data_reply = await self.command("DATA")
        if data_reply.code != 354:
            return mail_reply, rcpt_replies, data_reply
        return mail_reply, rcpt_replies, await self._send_data(message)

    async def _send_data(self, message: bytes) -> ServerReply:
        await self._write(dot_stuff(message) + b".\r\n")
        return await self.read_reply("(end of data)")

    async def reset(self) -> None:
        if not self.closed:
            try:
                await self.command("RSET")
            except SmtpClientError:
                pass

    async def quit(self) -> None:
        if not self.closed:
            try:
                await asyncio.wait_for(self.command("QUIT"), 5.0)
            except (SmtpClientError, TimeoutError):
                pass
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        try:
            self.writer.close()
        except Exception:
            pass


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 4.5.2 transparency, with the message ending in CRLF."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..")
