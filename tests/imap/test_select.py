"""SELECT, EXAMINE, STATUS, UNSELECT, CLOSE (RFC 9051 6.3.2, 6.3.3, 6.3.11, 6.4.2; RFC 3691)."""

from __future__ import annotations

from .conftest import ImapEnv, message


def test_select_responses(imap: ImapEnv) -> None:
    imap.deliver(message("one"))
    imap.deliver(message("two"), flags=frozenset({"\\Seen"}))
    raw = imap.raw()
    raw.login()
    reply = raw.cmd("a SELECT INBOX")
    text = b"\n".join(reply)
    assert b"* 2 EXISTS" in text
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" in text
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in text
    assert b"* OK [UIDVALIDITY " in text and b"* OK [UIDNEXT 3]" in text
    assert b"* OK [UNSEEN 1]" in text and b"* OK [HIGHESTMODSEQ " in text
    assert reply[-1].startswith(b"a OK [READ-WRITE]")
    reply = raw.cmd("b EXAMINE INBOX")
    assert reply[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert b"* OK [PERMANENTFLAGS ()]" in b"\n".join(reply)
    assert reply[-1].startswith(b"b OK [READ-ONLY]")
    assert raw.cmd("c STORE 1 +FLAGS (\\Seen)")[-1].startswith(b"c NO")
    raw.close()


def test_select_missing_mailbox_deselects(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    assert raw.cmd("b SELECT Nope")[-1].startswith(b"b NO [NONEXISTENT]")
    assert raw.cmd("c FETCH 1 FLAGS")[-1].startswith(b"c BAD")
    raw.close()


def test_rev2_select_has_list_and_no_recent(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.cmd("a ENABLE IMAP4rev2")
    text = b"\n".join(raw.cmd("b SELECT inbox"))
    assert b'* LIST () "/" INBOX' in text
    assert b"RECENT" not in text and b"UNSEEN" not in text
    raw.close()


def test_status(imap: ImapEnv) -> None:
    imap.deliver(message("one"), flags=frozenset({"\\Deleted"}))
    imap.deliver(message("two"))
    raw = imap.raw()
    raw.login()
    reply = raw.cmd("a STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY DELETED SIZE "
                    "HIGHESTMODSEQ APPENDLIMIT RECENT)")
    line = reply[0]
    assert line.startswith(b"* STATUS INBOX (MESSAGES 2 UNSEEN 2 UIDNEXT 3 UIDVALIDITY ")
    assert b"DELETED 1" in line and b"SIZE " in line and b"APPENDLIMIT 10485760" in line
    assert raw.cmd("b STATUS INBOX (BOGUS)")[-1].startswith(b"b BAD")
    assert raw.cmd("c STATUS Nope (MESSAGES)")[-1].startswith(b"c NO")
    raw.close()


def test_unselect_and_close(imap: ImapEnv) -> None:
    imap.deliver(message("one"))
    c = imap.connect()
    c.select("INBOX")
    c.store("1", "+FLAGS", "\\Deleted")
    assert c.unselect()[0] == "OK"
    c.select("INBOX")
    assert c.close()[0] == "OK"
    assert c.select("INBOX")[1] == [b"0"]
    c.logout()


def test_recent(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    imap.deliver(message("new"))
    text = b"\n".join(raw.cmd("b NOOP"))
    assert b"* 1 EXISTS" in text and b"* 1 RECENT" in text
    assert b"\\Recent" in b"\n".join(raw.cmd("c FETCH 1 FLAGS"))
    other = imap.raw()
    other.login()
    text = b"\n".join(other.cmd("d SELECT INBOX"))
    assert b"* 0 RECENT" in text
    raw.close()
    other.close()
