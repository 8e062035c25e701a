"""What the SMTP protocol engine asks of policy: the Handler interface.

The engine (protocol.py) speaks SMTP; a Handler decides. The MX policy
(inbound/) and the submission policy (outbound/) are Handlers. Each hook
returns None to accept with the engine's default reply, or a Reply to say
something else (a 4xx/5xx refusal, or a custom 2xx).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .. import mailmsg
from .reply import Reply

if TYPE_CHECKING:
    from ..store.models import Account
    from .address import Path


class RecorderLike(Protocol):
    def new_trace(self, kind: str, parent: str = "", **summary: Any) -> str: ...
    def event(self, trace_id: str, kind: str, **data: Any) -> None: ...
    def update(self, trace_id: str, **summary: Any) -> None: ...


@dataclass
class Envelope:
    """One mail transaction (MAIL FROM … end of data)."""

    trace_id: str
    sender: Path
    params: dict[str, str]
    rcpts: list[Path] = field(default_factory=list)
    rcpt_params: list[dict[str, str]] = field(default_factory=list)
    smtputf8: bool = False
    body_8bit: bool = False
    # Filled by handlers during RCPT, for use at DATA (e.g. resolved mailboxes).
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    """One SMTP connection, as the handler sees it."""

    trace_id: str
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    listener: str                 # "mx", "submission" or "submissions"
    hostname: str                 # our name, for the greeting and Received
    recorder: RecorderLike
    helo: str = ""
    esmtp: bool = False
    tls_version: str = ""
    tls_cipher: str = ""
    account: Account | None = None
    envelope: Envelope | None = None
    started: float = field(default_factory=time.time)
    early_talker: bool = False
    messages: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return bool(self.tls_version)

    def record(self, kind: str, **data: Any) -> None:
        trace = self.envelope.trace_id if self.envelope else self.trace_id
        self.recorder.event(trace, kind, **data)

    def received_header(self, for_rcpt: str | None = None) -> bytes:
        """A Received: trace field (RFC 5321 4.4) naming the trace id."""
        proto = "ESMTP" if self.esmtp else "SMTP"
        if self.tls:
            proto += "S"
        if self.account is not None:
            proto += "A"
        envelope = self.envelope
        if envelope and envelope.smtputf8:
            proto = "UTF8" + proto
        tls = f" ({self.tls_version} {self.tls_cipher})" if self.tls else ""
        trace = envelope.trace_id if envelope else self.trace_id
        helo = self.helo.replace("(", "").replace(")", "") or "unknown"
        lines = [
            f"Received: from {helo} ([{self.peer_ip}])",
            f"\tby {self.hostname} (keepmail) with {proto} id {trace}{tls}",
        ]
        if for_rcpt:
            lines.append(f"\tfor <{for_rcpt}>")
        lines[-1] += f"; {mailmsg.date_now()}"
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")




class Handler:
    """Default policy: accept everything. Subclasses override what they decide."""

    # Listener features the engine advertises and enforces.
    offer_auth: bool = False         # AUTH offered (submission listeners)
    require_tls_for_auth: bool = True
    require_auth: bool = False       # MAIL refused before AUTH (submission)

    async def connect(self, session: Session) -> Reply | None:
        return None

    async def early_talker(self, session: Session) -> Reply | None:
        """The client sent data before our greeting (after connect() returned)."""
        return None

    async def helo(self, session: Session, name: str) -> Reply | None:
        return None

    async def auth(self, session: Session, username: str, password: str) -> Account | Reply:
        from .reply import r
        return r(535, "5.7.8", "Authentication credentials invalid")

    async def mail(self, session: Session, envelope: Envelope) -> Reply | None:
        return None

    async def rcpt(self, session: Session, envelope: Envelope, rcpt: Path,
                   params: dict[str, str]) -> Reply | None:
        return None

    async def data(self, session: Session, envelope: Envelope, message: bytes) -> Reply:
        """Called with the complete message (dot-unstuffed, CRLF line ends).

        Must not return a 2xx before the message is durably stored.
        """
        raise NotImplementedError

    async def disconnect(self, session: Session) -> None:
        return None


def local_hostname() -> str:
    return socket.getfqdn()
