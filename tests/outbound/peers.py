"""Loopback peers for the outbound tests: a DNS server and a scripted SMTP server.

The DNS server is a real dnslib server (UDP and TCP) serving zone text, with
a per-name "secure" switch that sets the AD bit, so DANE paths run as they
would behind a validating resolver. (When tests/support/dnsserver.py lands,
these tests can move to it.) The SMTP peer answers from a script, so tests
can make a server refuse, defer or misbehave on demand.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSServer


def parse_zone(zone: str) -> list[RR]:
    # Lines are taken whole (no owner continuation), so tests may indent zones.
    return RR.fromZone("\n".join(line.strip() for line in zone.splitlines()))


class ZoneResolver(BaseResolver):
    def __init__(self, zone: str, secure: set[str] | None = None) -> None:
        self.records = parse_zone(zone)
        self.secure = {s.rstrip(".").lower() for s in (secure or set())}

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        names = {str(rr.rname).rstrip(".").lower() for rr in self.records}
        found = [rr for rr in self.records if str(rr.rname).rstrip(".").lower() == qname
                 and (QTYPE[rr.rtype] == qtype)]
        for rr in found:
            reply.add_answer(rr)
        if qname not in names:
            reply.header.rcode = RCODE.NXDOMAIN
        # reply() copies the query's flags, AD included: set it from the zone only.
        reply.header.ad = 1 if qname in self.secure else 0
        return reply


class QuietLogger:
    """dnslib logs every query to stdout by default; tests want silence."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class LocalDns:
    """dnslib DNS server on host:port (UDP+TCP) serving a zone in master-file syntax."""

    def __init__(self, zone: str, host: str = "127.0.0.1", port: int = 0,
                 secure: set[str] | None = None) -> None:
        self.resolver = ZoneResolver(zone, secure)
        self.host = host
        for attempt in range(20):
            # UDP picks a free port; TCP must get the same number (may be taken).
            self.udp = DNSServer(self.resolver, address=host, port=port, tcp=False,
                                 logger=QuietLogger())
            self.port = self.udp.server.server_address[1]
            try:
                self.tcp = DNSServer(self.resolver, address=host, port=self.port, tcp=True,
                                     logger=QuietLogger())
                return
            except OSError:
                self.udp.server.server_close()
                if port or attempt == 19:
                    raise

    @property
    def nameserver(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> LocalDns:
        self.udp.start_thread()
        self.tcp.start_thread()
        return self

    def set_zone(self, zone: str, secure: set[str] | None = None) -> None:
        self.resolver.records = parse_zone(zone)
        if secure is not None:
            self.resolver.secure = {s.rstrip(".").lower() for s in secure}

    def stop(self) -> None:
        self.udp.stop()
        self.tcp.stop()


# -- a scripted SMTP server ---------------------------------------------------------
Script = Callable[["PeerSession", str], str | None]


@dataclass
class Received:
    sender: str
    rcpts: list[str]
    data: bytes
    tls: bool


@dataclass
class PeerSession:
    peer: ScriptedSmtp
    tls: bool = False
    sender: str = ""
    rcpts: list[str] = field(default_factory=list)


HANG_UP = "(hang up)"


class ScriptedSmtp:
    """An SMTP server whose replies come from `script(session, command)`.

    The script returns a reply line ("451 4.3.0 try later") or None for the
    default, or HANG_UP to close the connection without a reply. Messages
    accepted at end of data are appended to `messages`.
    """

    def __init__(self, host: str, *, script: Script | None = None,
                 tls: ssl.SSLContext | None = None, extensions: tuple[str, ...] = (
                     "PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 100000000")) -> None:
        self.host = host
        self.script = script or (lambda s, c: None)
        self.tls = tls
        self.extensions = extensions
        self.messages: list[Received] = []
        self.data_delay = 0.0        # seconds before answering the end of data
        self.gate: asyncio.Event | None = None   # when set: hold end-of-data replies till open
        self.commands: list[str] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> ScriptedSmtp:
        self.server = await asyncio.start_server(self._serve, self.host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        session = PeerSession(self)
        try:
            await self._run(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _say(self, writer: asyncio.StreamWriter, session: PeerSession, command: str,
                   default: str) -> bool:
        line = self.script(session, command) or default
        if line == HANG_UP:
            raise ConnectionResetError("the script hangs up")
        writer.write((line.replace("\n", "\r\n") + "\r\n").encode())
        await writer.drain()
        if line.startswith("421"):
            raise ConnectionResetError("421: closing")   # RFC 5321 3.8: and close
        return line[:1] in "23"

    async def _run(self, session: PeerSession, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        await self._say(writer, session, "(greeting)", "220 peer.test ESMTP")
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            self.commands.append(line)
            verb = line.split(" ")[0].upper()
            if verb == "EHLO":
                ext = list(self.extensions) + (["STARTTLS"] if self.tls and not session.tls
                                               else [])
                text = "\n".join(f"250-{e}" for e in ["peer.test", *ext[:-1]]) + \
                    f"\n250 {ext[-1]}" if ext else "250 peer.test"
                await self._say(writer, session, line, text)
            elif verb == "STARTTLS" and self.tls:
                if await self._say(writer, session, line, "220 2.0.0 go ahead"):
                    await writer.start_tls(self.tls)
                    session.tls = True
            elif verb == "MAIL":
                session.sender, session.rcpts = line.split("<", 1)[1].split(">")[0], []
                await self._say(writer, session, line, "250 2.1.0 ok")
            elif verb == "RCPT":
                if await self._say(writer, session, line, "250 2.1.5 ok"):
                    session.rcpts.append(line.split("<", 1)[1].split(">")[0])
            elif verb == "DATA":
                default = "354 go" if session.rcpts else "554 5.5.1 no valid recipients"
                if not await self._say(writer, session, line, default):
                    continue
                data = await self._read_data(reader)
                if self.gate is not None:
                    await self.gate.wait()
                if self.data_delay:
                    await asyncio.sleep(self.data_delay)
                if await self._say(writer, session, "(end of data)", "250 2.0.0 queued"):
                    self.messages.append(Received(session.sender, list(session.rcpts),
                                                  data, session.tls))
            elif verb == "QUIT":
                await self._say(writer, session, line, "221 bye")
                return
            else:
                await self._say(writer, session, line, "250 ok")

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionResetError("connection closed during DATA")
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)
