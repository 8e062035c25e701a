"""APPEND, MULTIAPPEND, APPENDUID, APPENDLIMIT, UTF8 APPEND, literals (RFC 9051 6.3.12,
RFC 3502, RFC 4315, RFC 7889, RFC 6855, RFC 7888)."""

from __future__ import annotations

from .conftest import ImapEnv, message


def test_append_sent_and_drafts(imap: ImapEnv) -> None:
    c = imap.connect()
    typ, data = c.append("Sent", "(\\Seen)", '"01-Jan-2020 10:00:00 +0100"', message("sent"))
    assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = c.append("Drafts", "(\\Draft)", None, message("draft"))
    assert typ == "OK"
    c.select("Sent")
    typ, data = c.fetch("1", "(FLAGS INTERNALDATE)")
    assert b"\\Seen" in data[0] and b'1-Jan-2020 09:00:00 +0000"' in data[0]
    assert c.append("Nope", None, None, message("x"))[0] == "NO"
    c.logout()


def test_multiappend_and_literal_plus(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    m1, m2 = message("one"), message("two")
    raw.send(b"a APPEND INBOX (\\Seen) {%d+}\r\n%s (\\Flagged) {%d+}\r\n%s\r\n"
             % (len(m1), m1, len(m2), m2))
    reply = raw.until_tagged(b"a")
    uidvalidity = imap.mailbox("INBOX").uidvalidity
    assert reply[-1] == b"a OK [APPENDUID %d 1:2] APPEND completed" % uidvalidity
    raw.send(b"b APPEND INBOX UTF8 (~{%d+}\r\n%s)\r\n" % (len(m1), m1))
    assert raw.until_tagged(b"b")[-1].startswith(b"b OK [APPENDUID")
    raw.close()


def test_append_sync_literal_too_big(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.send(b"a APPEND INBOX {2147483648}\r\n")
    assert raw.line().startswith(b"a NO [TOOBIG]")
    assert raw.cmd("b NOOP")[-1] == b"b OK NOOP completed"
    raw.send(b"c APPEND INBOX {99999999999999999999}\r\n")
    assert raw.line().startswith((b"c NO", b"c BAD"))
    raw.close()


def test_append_nonsync_literal_too_big_closes(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.send(b"a APPEND INBOX {2147483648+}\r\nxxxx")
    assert raw.line().startswith(b"* BYE")
    raw.close()


def test_append_to_selected_mailbox_reports_exists(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    m = message("x")
    reply = raw.cmd(b"b APPEND INBOX {%d+}\r\n%s" % (len(m), m))
    assert b"* 1 EXISTS" in reply
    raw.close()


def test_empty_and_bad_date(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    assert raw.cmd(b"a APPEND INBOX {0+}\r\n")[-1].startswith(b"a NO")
    m = message("x")
    reply = raw.cmd(b'b APPEND INBOX "99-Foo-2020 10:00:00 +0000" {%d+}\r\n%s' % (len(m), m))
    assert reply[-1].startswith(b"b BAD")
    raw.close()
