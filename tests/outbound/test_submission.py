"""Submission policy (RFC 6409, RFC 8314): TLS before AUTH, AUTH data, sender ownership,
header fixes (Message-ID, Date, Bcc) and local delivery."""

from __future__ import annotations

import asyncio
import base64
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from keepmail import mailmsg
from keepmail.outbound.submission import strip_bcc
from keepmail.store import accounts
from tests.support.server import PASSWORD

from .conftest import CA, Org, asubmit, client_context, make_org, message, run

HOST = "127.0.0.41"
T = TypeVar("T")


async def _org(tmp_path: Path, ca: CA) -> Org:
    org = make_org(tmp_path, "a", HOST, "a.test", "127.0.0.1:9", ["alice@a.test", "bob@a.test",
                   "carol@a.test"], aliases={"team@a.test": ["alice@a.test", "bob@a.test"],
                                             "@a.test": ["carol@a.test"]})
    return await org.start(ca)


def test_auth_before_tls_refused_and_bad_auth(tmp_path: Path, ca: CA) -> None:
    async def go() -> None:
        org = await _org(tmp_path, ca)
        try:
            def plain_session() -> list[tuple[int, bytes]]:
                with smtplib.SMTP(HOST, org.port) as s:
                    s.ehlo()
                    assert not s.has_extn("auth"), "AUTH must not be offered before TLS"
                    token = base64.b64encode(b"\0alice@a.test\0" + PASSWORD.encode()).decode()
                    out = [s.docmd("AUTH", f"PLAIN {token}")]
                    out.append(s.docmd("MAIL", "FROM:<alice@a.test>"))
                    return out

            (auth, mail) = await asyncio_thread(plain_session)
            assert auth[0] == 538 and b"5.7.11" in auth[1]
            assert mail[0] == 530

            def tls_session() -> list[tuple[int, bytes]]:
                with smtplib.SMTP(HOST, org.port) as s:
                    s.starttls(context=client_context())
                    s.ehlo()
                    assert s.has_extn("auth")
                    out = [s.docmd("AUTH", "PLAIN !!notbase64")]
                    out.append(s.docmd("AUTH", "PLAIN " + base64.b64encode(b"only-one").decode()))
                    bad = base64.b64encode(b"\0alice@a.test\0wrong").decode()
                    out.append(s.docmd("AUTH", f"PLAIN {bad}"))
                    out.append(s.docmd("AUTH", "LOGIN " + base64.b64encode(b"alice@a.test")
                                       .decode()))
                    out.append(s.docmd(base64.b64encode(PASSWORD.encode()).decode()))
                    return out

            bad64, short, wrong, login1, login2 = await asyncio_thread(tls_session)
            assert bad64[0] == 501 and short[0] == 501
            assert wrong[0] == 535
            assert login1[0] == 334 and login2[0] == 235
        finally:
            await org.stop()

    run(go())


def test_sender_ownership(tmp_path: Path, ca: CA) -> None:
    async def go() -> None:
        org = await _org(tmp_path, ca)
        try:
            # Envelope sender of someone else: refused at MAIL.
            with pytest.raises(smtplib.SMTPSenderRefused) as exc:
                await asubmit(HOST, org.port, "alice@a.test", "bob@a.test", ["carol@a.test"],
                              message("bob@a.test", "carol@a.test"))
            assert exc.value.smtp_code == 550 and b"5.7.1" in exc.value.smtp_error
            # Own envelope, someone else's From: refused at end of data.
            with pytest.raises(smtplib.SMTPDataError) as exc2:
                await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["carol@a.test"],
                              message("Bob <bob@a.test>", "carol@a.test"))
            assert exc2.value.smtp_code == 550 and b"bob@a.test" in exc2.value.smtp_error
            # Catch-all does not make carol the owner of every address.
            with pytest.raises(smtplib.SMTPSenderRefused):
                await asubmit(HOST, org.port, "carol@a.test", "ceo@a.test", ["bob@a.test"],
                              message("ceo@a.test", "bob@a.test"))
            # An alias that targets alice, and a +tag form, are hers.
            await asubmit(HOST, org.port, "alice@a.test", "team@a.test", ["carol@a.test"],
                          message("Team <team@a.test>", "carol@a.test"))
            await asubmit(HOST, org.port, "alice@a.test", "alice+news@a.test",
                          ["carol@a.test"], message("alice+news@a.test", "carol@a.test"))
            assert len(org.inbox("carol@a.test")) == 2
        finally:
            await org.stop()

    run(go())


def test_headers_added_bcc_stripped_local_delivery(tmp_path: Path, ca: CA) -> None:
    async def go() -> None:
        org = await _org(tmp_path, ca)
        try:
            raw = (b"From: Alice <alice@a.test>\r\nTo: bob@a.test\r\n"
                   b"Bcc: carol@a.test,\r\n secret@a.test\r\nSubject: plans\r\n\r\nHi\r\n")
            await asubmit(HOST, org.port, "alice@a.test", "alice@a.test",
                          ["bob@a.test", "carol@a.test"], raw)
            for user in ("bob@a.test", "carol@a.test"):
                [got] = org.inbox(user)
                assert b"Bcc" not in got and b"secret@a.test" not in got
                assert mailmsg.has_header(got, "Message-ID")
                assert mailmsg.has_header(got, "Date")
                assert got.endswith(b"Subject: plans\r\n\r\nHi\r\n")
                assert b"DKIM-Signature: v=1; a=rsa-sha256" in got
                assert b"a=ed25519-sha256" in got
            # Nothing queued: every recipient was local.
            assert org.queue_size() == (0, 0)
            # Unknown local recipient (once the catch-all is gone): refused at RCPT.
            org.store.write_sync(lambda c: accounts.delete_alias(c, "@a.test"))
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["x@a.test"],
                              message("alice@a.test", "x@a.test"))
        finally:
            await org.stop()

    run(go())


def test_implicit_tls_465(tmp_path: Path, ca: CA) -> None:
    async def go() -> None:
        org = await _org(tmp_path, ca)
        try:
            def send() -> None:
                with smtplib.SMTP_SSL(HOST, org.tls_port, context=client_context()) as s:
                    s.login("bob@a.test", PASSWORD)
                    s.sendmail("bob@a.test", ["alice@a.test"], message("bob@a.test",
                                                                         "alice@a.test"))
            await asyncio_thread(send)
            assert len(org.inbox("alice@a.test")) == 1
        finally:
            await org.stop()

    run(go())


def test_strip_bcc_keeps_other_bytes() -> None:
    raw = b"From: a@a.test\r\nBCC: x@y\r\n\tz@y\r\nSubject: s\r\n\r\nBcc: body stays\r\n"
    assert strip_bcc(raw) == b"From: a@a.test\r\nSubject: s\r\n\r\nBcc: body stays\r\n"
    assert strip_bcc(b"From: a\r\n\r\nbody") == b"From: a\r\n\r\nbody"


async def asyncio_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)
