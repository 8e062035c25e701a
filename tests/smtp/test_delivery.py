"""Delivery to one and several recipients, aliases, unknown users, relay attempts."""

from __future__ import annotations

import smtplib

import pytest

from keepmail.store import mail as mailq
from tests.support.server import InProcessServer, mailbox_messages

MSG = b"From: x@remote.test\r\nSubject: test\r\nMessage-ID: <m1@remote.test>\r\n\r\nHello\r\n"


def smtp(server: InProcessServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port("smtp"), timeout=10)


def test_one_recipient_gets_original_bytes_with_received(server: InProcessServer) -> None:
    with smtp(server) as c:
        c.sendmail("x@remote.test", ["bob@example.test"], MSG)
    [stored] = mailbox_messages(server.store, "bob@example.test")
    assert stored.endswith(MSG), "the original bytes must follow our headers untouched"
    assert stored.startswith(b"Received: from ")
    assert b"for <bob@example.test>" in stored
    assert b"X-Keepmail-Verdict: inbox" in stored


def test_several_recipients_share_one_blob(server: InProcessServer) -> None:
    with smtp(server) as c:
        c.sendmail("x@remote.test", ["alice@example.test", "bob@example.test"], MSG)
    a = mailbox_messages(server.store, "alice@example.test")
    b = mailbox_messages(server.store, "bob@example.test")
    assert a == b and len(a) == 1
    blobs = server.store.read_now(lambda c: c.execute("SELECT COUNT(*) FROM blobs").fetchone()[0])
    assert blobs == 1


def test_alias_expands_to_members_once(server: InProcessServer) -> None:
    with smtp(server) as c:
        # fwd -> team -> alice, bob; alice also named directly: still one copy each.
        c.sendmail("x@remote.test", ["fwd@example.test", "alice@example.test"], MSG)
    assert len(mailbox_messages(server.store, "alice@example.test")) == 1
    assert len(mailbox_messages(server.store, "bob@example.test")) == 1


def test_plus_addressing_and_catch_all(server: InProcessServer) -> None:
    with smtp(server) as c:
        c.sendmail("x@remote.test", ["bob+news@example.test"], MSG)
        c.sendmail("x@remote.test", ["anything@other.test"], MSG)
    assert len(mailbox_messages(server.store, "bob@example.test")) == 1
    assert len(mailbox_messages(server.store, "carol@example.test")) == 1


def test_recipient_case_is_ignored(server: InProcessServer) -> None:
    with smtp(server) as c:
        c.sendmail("x@remote.test", ["BOB@Example.TEST"], MSG)
    assert len(mailbox_messages(server.store, "bob@example.test")) == 1


def test_unknown_recipient_refused_at_rcpt(server: InProcessServer) -> None:
    with smtp(server) as c:
        c.ehlo()
        c.mail("x@remote.test")
        code, text = c.rcpt("nobody@example.test")
        assert code == 550 and text.startswith(b"5.1.1")
        assert c.rcpt("bob@example.test")[0] == 250
        assert c.data(MSG)[0] == 250
    assert len(mailbox_messages(server.store, "bob@example.test")) == 1


@pytest.mark.parametrize("rcpt", [
    "victim@elsewhere.test", "victim%elsewhere.test@example.test",
    "elsewhere.test!victim@example.test", "@example.test:victim@elsewhere.test",
    "victim@[192.0.2.1]", '"victim@elsewhere.test"@example.test',
])
def test_relay_attempts_refused(server: InProcessServer, rcpt: str) -> None:
    with smtp(server) as c:
        c.ehlo()
        c.mail("x@remote.test")
        code, _text = c.docmd(f"RCPT TO:<{rcpt}>")
        assert code in (550, 554, 501), (rcpt, code)
        assert c.docmd("DATA")[0] in (503, 554)


def test_nothing_stored_when_no_recipient(server: InProcessServer) -> None:
    with smtp(server) as c, pytest.raises(smtplib.SMTPRecipientsRefused):
        c.sendmail("x@remote.test", ["nobody@example.test"], MSG)
    count = server.store.read_now(lambda c: c.execute("SELECT COUNT(*) FROM messages").fetchone())
    assert count[0] == 0


def test_uids_increase_per_mailbox(server: InProcessServer) -> None:
    with smtp(server) as c:
        for _ in range(3):
            c.sendmail("x@remote.test", ["bob@example.test"], MSG)
    acct = server.store.read_now(
        lambda c: c.execute("SELECT id FROM accounts WHERE address='bob@example.test'").fetchone())
    box = server.store.read_now(lambda c: mailq.get_mailbox(c, acct[0], "INBOX"))
    uids = [m.uid for m in server.store.read_now(lambda c: mailq.list_messages(c, box.id))]
    assert uids == [1, 2, 3]
