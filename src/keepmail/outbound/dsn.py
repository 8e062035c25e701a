"""Delivery status notifications (RFC 3464) in a multipart/report (RFC 6522).

Two kinds: "failed" (permanent failure or queue lifetime exceeded) and
"delayed" (still retrying after delay_notice_hours, RFC 3464 2.3.3). The
third part carries only the original header (text/rfc822-headers, RET=HDRS
in RFC 3461 terms) so a bounce never re-sends a large attachment. The human
part is ASCII-only so the notice itself can travel to any server.
DSNs go out with a null reverse-path (RFC 5321 4.5.5) and are never sent about
a message that itself had a null reverse-path (no bounce loops).
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass
from email.utils import format_datetime, formatdate

from .. import mailmsg


@dataclass(frozen=True)
class RcptReport:
    rcpt: str
    status: str            # RFC 3463 code, e.g. 5.1.1
    diagnostic: str        # the remote reply, or our own explanation
    remote_mta: str = ""   # host name of the server that answered
    last_attempt: float = 0.0


def _date(ts: float) -> str:
    return format_datetime(dt.datetime.fromtimestamp(ts, dt.UTC))


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " ")


def _fold(name: str, value: str) -> str:
    return mailmsg.format_field(name, _ascii(value)).decode("ascii")


def build(*, kind: str, hostname: str, sender: str, original: bytes, arrival: float,
          reports: list[RcptReport], retry_until: float = 0.0,
          now: float | None = None) -> bytes:
    """The DSN message bytes (CRLF line ends), addressed to sender."""
    now = time.time() if now is None else now
    boundary = "km-" + secrets.token_hex(12)
    failed = kind == "failed"
    subject = ("Undelivered Mail Returned to Sender" if failed
               else "Delayed Mail (still being retried)")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {formatdate(now, usegmt=True)}",
        f"Message-ID: <dsn.{secrets.token_hex(10)}@{hostname}>",
        "Auto-Submitted: auto-replied",                       # RFC 3834 5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
    ]
    human = _human(kind, hostname, reports, original, retry_until)
    status = _status_part(kind, hostname, arrival, reports, retry_until)
    headers = mailmsg.header_block(original).rstrip(b"\r\n") + b"\r\n"
    header_type = "text/rfc822-headers" if headers.isascii() else \
        "message/global-headers"                             # RFC 6533 3.3
    parts = [
        "\r\n".join(head) + "\r\n\r\nThis is a MIME-encapsulated delivery status notification.\r\n",
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        f"Content-Description: Notification\r\n\r\n{human}\r\n",
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n"
        f"Content-Description: Delivery report\r\n\r\n{status}\r\n",
        f"--{boundary}\r\nContent-Type: {header_type}\r\n"
        f"Content-Description: Undelivered message headers\r\n\r\n",
    ]
    return "".join(parts).encode("ascii") + headers + f"\r\n--{boundary}--\r\n".encode()


def _human(kind: str, hostname: str, reports: list[RcptReport], original: bytes,
           retry_until: float) -> str:
    subject = _ascii(mailmsg.header(original, "Subject") or "(no subject)")[:200]
    if kind == "failed":
        intro = [f"This is the mail system at {hostname}.", "",
                 f'Your message "{subject}" could not be delivered to',
                 "one or more recipients. The reasons are below.", ""]
    else:
        intro = [f"This is the mail system at {hostname}.", "",
                 f'Your message "{subject}" has not been delivered yet to the',
                 "recipients below. Nothing needs to be done: delivery is retried",
                 f"until {_date(retry_until)}, and you will be told if it fails.", ""]
    lines = intro
    for rep in reports:
        server = f" (server {rep.remote_mta})" if rep.remote_mta else ""
        lines += [f"<{_ascii(rep.rcpt)}>{server}:", f"    {_ascii(rep.diagnostic)[:900]}", ""]
    return "\r\n".join(lines)


def _status_part(kind: str, hostname: str, arrival: float, reports: list[RcptReport],
                 retry_until: float) -> str:
    blocks = [f"Reporting-MTA: dns; {hostname}\r\nArrival-Date: {_date(arrival)}\r\n"]
    for rep in reports:
        fields = [
            f"Final-Recipient: rfc822; {_ascii(rep.rcpt)}\r\n",
            f"Action: {'failed' if kind == 'failed' else 'delayed'}\r\n",
            f"Status: {rep.status}\r\n",
        ]
        if rep.remote_mta:
            fields.append(f"Remote-MTA: dns; {rep.remote_mta}\r\n")
        kind_of = "smtp" if rep.remote_mta else "x-keepmail"
        fields.append(_fold("Diagnostic-Code", f"{kind_of}; {rep.diagnostic[:900]}"))
        if rep.last_attempt:
            fields.append(f"Last-Attempt-Date: {_date(rep.last_attempt)}\r\n")
        if kind != "failed" and retry_until:
            fields.append(f"Will-Retry-Until: {_date(retry_until)}\r\n")
        blocks.append("".join(fields))
    return "\r\n".join(blocks)
