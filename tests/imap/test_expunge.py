"""EXPUNGE, UID EXPUNGE (RFC 4315), and when other sessions learn about expunges (RFC 9051 7.5.1)."""

from __future__ import annotations

from .conftest import ImapEnv, message


def test_expunge(imap: ImapEnv) -> None:
    for i in range(4):
        imap.deliver(message(f"m{i}"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    raw.cmd("b STORE 1,3,4 +FLAGS.SILENT (\\Deleted)")
    reply = raw.cmd("c UID EXPUNGE 1:3")
    assert reply[:2] == [b"* 3 EXPUNGE", b"* 1 EXPUNGE"]
    reply = raw.cmd("d EXPUNGE")
    assert reply[0] == b"* 2 EXPUNGE"
    raw.close()


def test_expunge_not_announced_during_fetch(imap: ImapEnv) -> None:
    for i in range(3):
        imap.deliver(message(f"m{i}"))
    a, b = imap.raw(), imap.raw()
    a.login()
    b.login()
    a.cmd("a SELECT INBOX")
    b.cmd("b SELECT INBOX")
    a.cmd("c STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.cmd("d EXPUNGE")
    reply = b.cmd("e FETCH 1:3 UID")
    assert not any(line.endswith(b" EXPUNGE") for line in reply)
    assert reply[-1].startswith(b"e NO [EXPUNGEISSUED]")
    assert [line for line in reply if line.startswith(b"* ")][:2] == [
        b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)"]
    reply = b.cmd("f SEARCH ALL")
    assert reply[0] == b"* SEARCH 1 3" and len(reply) == 2
    reply = b.cmd("g NOOP")
    assert reply[0] == b"* 2 EXPUNGE"
    assert b.cmd("h SEARCH ALL")[0] == b"* SEARCH 1 2"
    a.close()
    b.close()


def test_read_only_refuses_expunge(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.cmd("a EXAMINE INBOX")
    assert raw.cmd("b EXPUNGE")[-1].startswith(b"b NO")
    raw.close()
