"""Whole-server flow: a message received over SMTP shows up in an IDLE IMAP session."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
import time
from pathlib import Path

from tests.smtp.conftest import make_server
from tests.support.server import PASSWORD


def test_idle_sees_smtp_delivery_promptly(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    try:
        ctx = ssl._create_unverified_context()
        imap = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=ctx)
        imap.login("bob@example.test", PASSWORD)
        imap.select("INBOX")
        tag = imap._new_tag().decode()
        imap.send(f"{tag} IDLE\r\n".encode())
        assert imap.readline().startswith(b"+")
        sent = time.monotonic()
        with smtplib.SMTP(srv.host, srv.port("smtp"), local_hostname="mail.sender.test") as c:
            c.sendmail("a@sender.test", ["bob@example.test"],
                       b"Subject: ping\r\nMessage-ID: <p@sender.test>\r\n\r\nhello\r\n")
        imap.sock.settimeout(5)
        line = imap.readline()
        elapsed = time.monotonic() - sent
        assert line.strip() == b"* 1 EXISTS", line
        # Woken by the store, not by the 30 s backstop poll (latency: bench/imap_bench.py).
        assert elapsed < 10.0, f"IDLE reported after {elapsed:.2f} s"
        imap.send(b"DONE\r\n")
        while not imap.readline().startswith(tag.encode()):
            pass
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: ping" in data[0][1]
        imap.logout()
    finally:
        srv.stop()


def test_imap_starttls_required_before_login(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    try:
        imap = imaplib.IMAP4(srv.host, srv.port("imap"))
        assert "LOGINDISABLED" in imap.capabilities
        imap.starttls(ssl_context=ssl._create_unverified_context())
        imap.login("bob@example.test", PASSWORD)
        assert imap.select("Junk")[0] == "OK"
        imap.logout()
    finally:
        srv.stop()
