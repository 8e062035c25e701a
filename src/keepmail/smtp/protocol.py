"""The SMTP protocol engine shared by the MX and submission listeners.

RFC 5321 with PIPELINING (RFC 2920), SIZE (1870), 8BITMIME (6152), SMTPUTF8
(6531), ENHANCEDSTATUSCODES (2034/3463), STARTTLS (3207), CHUNKING (3030) and
AUTH PLAIN/LOGIN with initial response (4954, 4616). Policy lives in a Handler;
this module only speaks the protocol, enforces its limits and records every
command and reply in the flight recorder.

Why not aiosmtpd: it buffers DATA whole, has no CHUNKING, and gives no hook
per reply for the recorder; the engine here is about as long as the glue we
would otherwise write around it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import reply as R
from .address import PathError, parse_path_and_params
from .data import BARE_CR, NUL, SMUGGLING, TOO_BIG, check_chunked, read_chunk, read_data
from .handler import Envelope, Handler, Session
from .reply import Reply, r


@dataclass(frozen=True)
class Limits:
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 1000
    max_line: int = 4096            # command line (RFC 5321 4.5.3.1.4 says at least 512)
    max_errors: int = 20
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2.7
    data_timeout: float = 600.0
    max_messages: int = 1000        # per connection


_DATA_PROBLEMS = {
    TOO_BIG: r(552, "5.3.4", "Message too big for system"),
    SMUGGLING: r(554, "5.5.2", "Message refused: a '.' line next to a bare LF is ambiguous "
                 "(SMTP smuggling protection); send CRLF line endings"),
    BARE_CR: r(554, "5.6.0", "Message refused: bare CR in message; send CRLF line endings"),
    NUL: r(554, "5.6.0", "Message refused: NUL byte in message"),
}


_GO_AHEAD = r(354, "", "End data with <CR><LF>.<CR><LF>")


class _Closed(Exception):
    """The peer went away or we decided to hang up."""


class SmtpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handler: Handler, session: Session, limits: Limits,
                 tls_context: ssl.SSLContext | None) -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.session = session
        self.limits = limits
        self.tls_context = tls_context
        self.errors = 0
        self.idle = False          # waiting for a command: safe to interrupt at shutdown
        # Checked by the listener's watchdog: one timer per listener instead of
        # one per command keeps the per-command cost low.
        self.deadline = 0.0
        self.shutting_down = False
        self._out: list[bytes] = []
        # The command awaiting its reply: recorded together as one event.
        self._cmd: tuple[str, float] | None = None
        self._bdat: list[bytes] | None = None
        self._bdat_size = 0
        self._commands: dict[str, Callable[[str], Awaitable[None]]] = {
            "EHLO": self.cmd_ehlo, "HELO": self.cmd_helo, "MAIL": self.cmd_mail,
            "RCPT": self.cmd_rcpt, "DATA": self.cmd_data, "BDAT": self.cmd_bdat,
            "RSET": self.cmd_rset, "NOOP": self.cmd_noop, "QUIT": self.cmd_quit,
            "STARTTLS": self.cmd_starttls, "AUTH": self.cmd_auth, "VRFY": self.cmd_vrfy,
            "EXPN": self.cmd_expn, "HELP": self.cmd_help,
        }

    # -- output ---------------------------------------------------------------
    async def send(self, rep: Reply, *, record: bool = True) -> None:
        self._out.append(rep.wire)
        if record:
            self._record_reply(rep)
        # PIPELINING: hold replies while another complete command is waiting,
        # so a pipelined batch is answered with one write.
        if rep.close or b"\n" not in self._buffered():
            await self.flush()
        if rep.close:
            raise _Closed()

    def _record_reply(self, rep: Reply) -> None:
        cmd = self._cmd
        if cmd is None:
            self.session.record("reply", reply=rep.logged)
            return
        self._cmd = None
        self.session.record("smtp", cmd=cmd[0], reply=rep.logged,
                            ms=round((time.monotonic() - cmd[1]) * 1000, 2))

    def _buffered(self) -> bytes | bytearray:
        # StreamReader has no public peek; its buffer is the only way to know
        # whether more pipelined input is already here.
        return self.reader._buffer  # type: ignore[attr-defined]

    async def flush(self) -> None:
        out = self._out
        if out:
            writer = self.writer
            writer.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            # A reply to a small command almost always leaves at once; drain()
            # (a coroutine) is only needed while the kernel's buffer is full
            # or the connection is going away.
            transport = writer.transport
            if transport.get_write_buffer_size() or transport.is_closing():
                await writer.drain()

    # -- main loop --------------------------------------------------------------
    async def run(self) -> None:
        s = self.session
        s.record("connect", ip=s.peer_ip, port=s.peer_port, listener=s.listener,
                 local=f"{s.local_ip}:{s.local_port}")
        self._note_tls()
        try:
            await self._greet()
            while True:
                if self.shutting_down:
                    await self.send(R.SHUTTING_DOWN)
                line = await self._read_command()
                await self._dispatch(line)
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, TimeoutError,
                ssl.SSLError):
            pass
        finally:
            await self._finish()

    async def _greet(self) -> None:
        s = self.session
        refusal = await self.handler.connect(s)  # may pause to catch early talkers
        if refusal is None and self._buffered():
            s.early_talker = True
            s.record("early-talker", bytes=len(self._buffered()))
            refusal = await self.handler.early_talker(s)
        if refusal is not None:
            await self.send(refusal)
            if refusal.code >= 400:
                raise _Closed()
            return
        await self.send(r(220, "", f"{s.hostname} ESMTP keepmail ready"))

    async def _finish(self) -> None:
        s = self.session
        if s.envelope is not None:
            self._abandon("connection closed")
        s.record("disconnect", duration=round(time.time() - s.started, 3), messages=s.messages)
        s.recorder.update(s.trace_id, ended=time.time())
        try:
            await self.handler.disconnect(s)
        finally:
            try:
                self.writer.close()
            except Exception:
                pass

    async def interrupt(self) -> None:
        """At shutdown: tell an idle client to come back later and hang up."""
        self.shutting_down = True
        if self.idle:
            try:
                self.writer.write(R.SHUTTING_DOWN.render())
                self.writer.close()
            except Exception:
                pass

    async def _read_command(self) -> str:
        self.idle = True
        self.deadline = time.monotonic() + self.limits.command_timeout
        try:
            # One command line; an over-long one is consumed and reported as "\0toolong".
            try:
                data = await self.reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                await self.reader.readexactly(exc.consumed)
                await self._discard_to_newline()
                return "\0toolong"
            if len(data) > self.limits.max_line:
                return "\0toolong"
            return data.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
        finally:
            self.idle = False
            self.deadline = 0.0

    def expire(self) -> None:
        """Called by the watchdog when the peer was silent too long."""
        self.session.record("timeout")
        try:
            self.writer.write(r(421, "4.4.2", "Timeout: closing connection").render())
            self.writer.close()
        except Exception:
            pass

    async def _discard_to_newline(self) -> None:
        while True:
            try:
                await self.reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self.reader.readexactly(exc.consumed)

    async def _dispatch(self, line: str) -> None:
        if line == "\0toolong":
            self._cmd = ("(over-long line)", time.monotonic())
            await self._error(R.LINE_TOO_LONG)
            return
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        self._cmd = (_redact(verb, line), time.monotonic())
        if verb in ("GET", "POST", "HEAD", "PUT", "CONNECT") and "HTTP/" in arg:
            # Cross-protocol request (a browser tricked into talking to us).
            await self.send(r(421, "5.7.0", "This is an SMTP server, not HTTP", close=True))
        handler = self._commands.get(verb)
        if handler is None:
            await self._error(R.UNKNOWN_COMMAND)
            return
        if self._bdat is not None and verb not in ("BDAT", "RSET", "QUIT", "NOOP"):
            await self._error(r(503, "5.5.1", "BDAT transaction in progress: send BDAT or RSET"))
            return
        await handler(arg.strip())

    async def _error(self, rep: Reply) -> None:
        self.errors += 1
        if self.errors >= self.limits.max_errors:
            await self.send(r(421, "4.7.0", "Too many errors, closing connection", close=True))
        await self.send(rep)

    # -- greeting and session commands ------------------------------------------
    async def cmd_ehlo(self, arg: str) -> None:
        await self._hello(arg, esmtp=True)

    async def cmd_helo(self, arg: str) -> None:
        await self._hello(arg, esmtp=False)

    async def _hello(self, name: str, *, esmtp: bool) -> None:
        s = self.session
        if not name or " " in name:
            await self._error(r(501, "5.5.4", "Syntax: EHLO hostname"))
            return
        refusal = await self.handler.helo(s, name)
        if refusal is not None and refusal.code >= 400:
            await self._error(refusal)
            return
        self._reset()
        s.helo, s.esmtp = name, esmtp
        s.recorder.update(s.trace_id, helo=name)
        greeting = f"{s.hostname} greets {name}"
        if not esmtp:
            await self.send(r(250, "", greeting))
            return
        await self.send(r(250, "", "\n".join([greeting, *self._extensions()])))

    def _extensions(self) -> list[str]:
        s, h = self.session, self.handler
        ext = ["PIPELINING", f"SIZE {self.limits.max_message_size}", "8BITMIME", "SMTPUTF8",
               "ENHANCEDSTATUSCODES", "CHUNKING"]
        if self.tls_context is not None and not s.tls:
            ext.append("STARTTLS")
        if h.offer_auth and s.account is None and (s.tls or not h.require_tls_for_auth):
            ext.append("AUTH PLAIN LOGIN")
        return ext

    async def cmd_noop(self, arg: str) -> None:
        await self.send(R.OK)

    async def cmd_rset(self, arg: str) -> None:
        if self.session.envelope is not None:
            self._abandon("RSET")
        self._reset()
        await self.send(R.OK)

    async def cmd_quit(self, arg: str) -> None:
        await self.send(r(221, "2.0.0", f"{self.session.hostname} closing connection",
                          close=True))

    async def cmd_vrfy(self, arg: str) -> None:
        # Answering would let anyone enumerate accounts (RFC 5321 3.5.3 allows 252).
        await self.send(r(252, "2.5.2", "Cannot VRFY user; send mail and we will try"))

    async def cmd_expn(self, arg: str) -> None:
        await self.send(r(502, "5.5.1", "EXPN not available"))

    async def cmd_help(self, arg: str) -> None:
        await self.send(r(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA "
                          "BDAT RSET NOOP QUIT STARTTLS AUTH VRFY HELP"))

    async def cmd_starttls(self, arg: str) -> None:
        s = self.session
        if self.tls_context is None or s.tls:
            await self._error(r(503, "5.5.1", "TLS not available" if not s.tls
                                else "TLS already active"))
            return
        if arg:
            await self._error(R.SYNTAX)
            return
        await self.send(r(220, "2.0.0", "Ready to start TLS"))
        await self.flush()
        # Anything the client pipelined after STARTTLS arrived in clear text and
        # must not be executed inside the TLS session (CVE-2011-0411 class).
        buffered = self._buffered()
        if buffered:
            s.record("starttls-injection-discarded", bytes=len(buffered))
            buffered.clear()
        await self.writer.start_tls(self.tls_context)
        self._note_tls()
        self._reset()
        s.helo, s.esmtp = "", False

    def _note_tls(self) -> None:
        ssl_obj = self.writer.get_extra_info("ssl_object")
        if ssl_obj is None:
            return
        s = self.session
        s.tls_version = ssl_obj.version() or ""
        s.tls_cipher = (ssl_obj.cipher() or ("",))[0]
        s.record("tls", version=s.tls_version, cipher=s.tls_cipher)

    # -- AUTH (RFC 4954) ----------------------------------------------------------
    async def cmd_auth(self, arg: str) -> None:
        s, h = self.session, self.handler
        if not h.offer_auth:
            await self._error(r(502, "5.5.1", "AUTH not available on this port; use the "
                                "submission port"))
            return
        if h.require_tls_for_auth and not s.tls:
            await self._error(r(538, "5.7.11", "Encryption required for authentication: "
                                "STARTTLS first"))
            return
        if s.account is not None or s.envelope is not None:
            await self._error(R.BAD_SEQUENCE)
            return
        mechanism, _, initial = arg.partition(" ")
        creds = await self._sasl(mechanism.upper(), initial.strip())
        if creds is None:
            return
        username, password = creds
        result = await h.auth(s, username, password)
        if isinstance(result, Reply):
            s.record("auth", mechanism=mechanism.upper(), user=username, result="fail")
            await self._error(result)
            return
        s.account = result
        s.record("auth", mechanism=mechanism.upper(), user=username, result="ok")
        s.recorder.update(s.trace_id, account=result.address)
        await self.send(r(235, "2.7.0", "Authentication successful"))

    async def _sasl(self, mechanism: str, initial: str) -> tuple[str, str] | None:
        if mechanism == "PLAIN":
            data = initial if initial else await self._challenge("")
            if data is None:
                return None
            return await self._plain(data)
        if mechanism == "LOGIN":
            user = initial if initial else await self._challenge("VXNlcm5hbWU6")
            if user is None:
                return None
            password = await self._challenge("UGFzc3dvcmQ6")
            if password is None:
                return None
            decoded = [_b64(user), _b64(password)]
            if None in decoded:
                await self._error(r(501, "5.5.2", "Invalid base64 data"))
                return None
            return decoded[0] or "", decoded[1] or ""
        await self._error(r(504, "5.5.4", "Unrecognized authentication mechanism"))
        return None

    async def _challenge(self, text: str) -> str | None:
        await self.send(r(334, "", text), record=False)
        line = await self._read_command()
        if line == "*":
            await self._error(r(501, "5.7.0", "Authentication cancelled"))
            return None
        return line

    async def _plain(self, data: str) -> tuple[str, str] | None:
        decoded = _b64(data) if data != "=" else ""
        parts = decoded.split("\0") if decoded is not None else []
        if len(parts) != 3:
            await self._error(r(501, "5.5.2", "Invalid AUTH PLAIN data"))
            return None
        authzid, authcid, password = parts
        if authzid and authzid.lower() != authcid.lower():
            await self._error(r(535, "5.7.8", "Authorization identity not allowed"))
            return None
        return authcid, password

    # -- mail transaction ---------------------------------------------------------
    async def cmd_mail(self, arg: str) -> None:
        s, h = self.session, self.handler
        if not s.helo:
            await self._error(r(503, "5.5.1", "Send EHLO/HELO first"))
            return
        if s.envelope is not None:
            await self._error(r(503, "5.5.1", "Nested MAIL command"))
            return
        if h.require_auth and s.account is None:
            await self._error(R.AUTH_REQUIRED)
            return
        if s.messages >= self.limits.max_messages:
            await self.send(r(421, "4.7.0", "Too many messages in one connection",
                              close=True))
        try:
            sender, params = parse_path_and_params(arg, "FROM")
        except PathError as exc:
            await self._error(r(501, "5.1.7", str(exc)))
            return
        problem = self._mail_params(params)
        if problem is None and "SMTPUTF8" not in params and not sender.address.isascii():
            problem = r(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        if problem is not None:
            await self._error(problem)
            return
        trace = s.recorder.new_trace("message", parent=s.trace_id, ip=s.peer_ip, helo=s.helo,
                                     mail_from=sender.address.lower(),
                                     account=s.account.address if s.account else "")
        env = Envelope(trace, sender, params, smtputf8="SMTPUTF8" in params,
                       body_8bit=params.get("BODY", "").upper() == "8BITMIME")
        s.envelope = env
        refusal = await h.mail(s, env)
        if refusal is not None and refusal.code >= 400:
            try:
                await self._error(refusal)  # recorded in the message's own trace
            finally:
                self._abandon(str(refusal))
            return
        await self.send(refusal or R.SENDER_OK)

    def _mail_params(self, params: dict[str, str]) -> Reply | None:
        for key, value in params.items():
            if key == "SIZE":
                if not value.isdigit():
                    return r(501, "5.5.4", "SIZE needs a number")
                if int(value) > self.limits.max_message_size:
                    return r(552, "5.3.4", f"Message size exceeds fixed limit of "
                             f"{self.limits.max_message_size} bytes")
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    return r(555, "5.5.4", "BODY must be 7BIT or 8BITMIME")
            elif key == "SMTPUTF8":
                if value or not self.session.esmtp:
                    return r(555, "5.5.4", "SMTPUTF8 takes no value and needs EHLO")
            elif key == "AUTH":
                continue  # RFC 4954 5: accepted and not trusted
            else:
                return r(555, "5.5.4", f"Unsupported MAIL parameter {key}")
        return None

    async def cmd_rcpt(self, arg: str) -> None:
        s = self.session
        env = s.envelope
        if env is None:
            await self._error(r(503, "5.5.1", "Need MAIL before RCPT"))
            return
        if len(env.rcpts) >= self.limits.max_recipients:
            await self.send(R.TOO_MANY_RCPTS)
            return
        try:
            rcpt, params = parse_path_and_params(arg, "TO")
        except PathError as exc:
            await self._error(r(501, "5.1.3", str(exc)))
            return
        if params:
            await self._error(r(555, "5.5.4", f"Unsupported RCPT parameter "
                                f"{next(iter(params))}"))
            return
        if not rcpt.address.isascii() and not env.smtputf8:
            await self._error(r(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"))
            return
        refusal = await self.handler.rcpt(s, env, rcpt, params)
        if refusal is not None and refusal.code >= 400:
            s.record("rcpt-refused", rcpt=rcpt.address, reply=str(refusal))
            await self._error(refusal)
            return
        env.rcpts.append(rcpt)
        env.rcpt_params.append(params)
        s.recorder.update(env.trace_id, rcpts=rcpt.address.lower())
        await self.send(refusal or R.RCPT_OK)

    async def cmd_data(self, arg: str) -> None:
        env = self.session.envelope
        if arg:
            await self._error(R.SYNTAX)
            return
        if env is None or not env.rcpts:
            await self._error(r(503 if env is None else 554, "5.5.1",
                                "No valid recipients" if env else "Need MAIL and RCPT first"))
            return
        await self.send(_GO_AHEAD)
        self.deadline = time.monotonic() + self.limits.data_timeout
        try:
            content = await read_data(self.reader, self.limits.max_message_size)
        finally:
            self.deadline = 0.0
        self._cmd = ("(message data)", time.monotonic())
        await self._complete(content.message, content.problem, content.size)

    async def cmd_bdat(self, arg: str) -> None:
        parts = arg.split()
        if not parts or not parts[0].isdigit() or len(parts) > 2 or (
                len(parts) == 2 and parts[1].upper() != "LAST"):
            # Without a valid size we cannot know where the chunk ends: hang up.
            await self.send(r(501, "5.5.4", "Syntax: BDAT size [LAST]", close=True))
        length, last = int(parts[0]), len(parts) == 2
        env = self.session.envelope
        ok = env is not None and bool(env.rcpts)
        over = self._bdat_size + length > self.limits.max_message_size
        self.deadline = time.monotonic() + self.limits.data_timeout
        try:
            chunk = await read_chunk(self.reader, length, keep=ok and not over)
        finally:
            self.deadline = 0.0
        if not ok:
            await self._error(r(503, "5.5.1", "Need MAIL and RCPT before BDAT"))
            return
        if self._bdat is None:
            self._bdat, self._bdat_size = [], 0
        self._bdat.append(chunk)
        self._bdat_size += length
        if not last:
            await self.send(r(250, "2.0.0", f"{length} bytes received"))
            return
        size = self._bdat_size
        message, problem = check_chunked(b"".join(self._bdat))
        if self._bdat_size > self.limits.max_message_size:
            problem = TOO_BIG
        self._bdat, self._bdat_size = None, 0
        await self._complete(message, problem, size)

    async def _complete(self, message: bytes, problem: str, size: int) -> None:
        s = self.session
        env = s.envelope
        assert env is not None
        s.record("data", size=size, problem=problem or None)
        if problem:
            rep = _DATA_PROBLEMS[problem]
            s.recorder.update(env.trace_id, status="rejected", detail=str(rep), ended=time.time())
        else:
            rep = await self.handler.data(s, env, message)
            status = "accepted" if rep.positive else (
                "deferred" if rep.code < 500 else "rejected")
            s.recorder.update(env.trace_id, status=status, ended=time.time(),
                              **({} if rep.positive else {"detail": str(rep)}))
            s.messages += int(rep.positive)
        await self.send(rep)
        s.envelope = None

    def _abandon(self, why: str) -> None:
        env = self.session.envelope
        if env is not None:
            self.session.recorder.update(env.trace_id, status="abandoned", detail=why,
                                         ended=time.time())
        self.session.envelope = None

    def _reset(self) -> None:
        self.session.envelope = None
        self._bdat, self._bdat_size = None, 0


def _b64(data: str) -> str | None:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _redact(verb: str, line: str) -> str:
    # Never write credentials into the recorder.
    if verb == "AUTH":
        return " ".join(line.split()[:2])
    return line[:1000]
