"""IDLE (RFC 2177): new mail within 1 s, expunges and flag changes from other sessions."""

from __future__ import annotations

import time

from .conftest import ImapEnv, message


def test_idle_reports_delivery_quickly(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    raw.send(b"b IDLE\r\n")
    assert raw.line() == b"+ idling"
    start = time.monotonic()
    imap.deliver(message("new"))
    assert raw.line() == b"* 1 EXISTS"
    # The latency itself is measured by bench/imap_bench.py; here only a bound that
    # no loaded CI machine should reach unless the wake-up is broken (a poll).
    assert time.monotonic() - start < 10.0
    assert raw.line() == b"* 1 RECENT"
    raw.send(b"DONE\r\n")
    assert raw.line() == b"b OK IDLE terminated"
    raw.close()


def test_idle_sees_other_sessions(imap: ImapEnv) -> None:
    imap.deliver(message("one"))
    imap.deliver(message("two"))
    idler, actor = imap.raw(), imap.raw()
    idler.login()
    actor.login()
    idler.cmd("a SELECT INBOX")
    actor.cmd("b SELECT INBOX")
    idler.send(b"c IDLE\r\n")
    assert idler.line() == b"+ idling"
    actor.cmd("d STORE 2 +FLAGS (\\Deleted)")
    assert idler.line() == b"* 2 FETCH (UID 2 FLAGS (\\Deleted))"
    actor.cmd("e EXPUNGE")
    assert idler.line() == b"* 2 EXPUNGE"
    idler.send(b"DONE\r\n")
    assert idler.line() == b"c OK IDLE terminated"
    idler.close()
    actor.close()


def test_idle_bad_continuation(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.send(b"a IDLE\r\n")
    raw.line()
    raw.send(b"NOTDONE\r\n")
    assert raw.line().startswith(b"a BAD")
    assert raw.cmd("b NOOP")[-1] == b"b OK NOOP completed"
    raw.close()


def test_three_sessions_exists_and_vanished(imap: ImapEnv) -> None:
    s1, s2, s3 = imap.raw(), imap.raw(), imap.raw()
    for i, s in enumerate((s1, s2, s3)):
        s.login()
        if i == 2:
            s.cmd("q ENABLE QRESYNC")
        s.cmd("a SELECT INBOX")
    imap.deliver(message("x"))
    imap.deliver(message("y"))
    assert b"* 2 EXISTS" in s2.cmd("b NOOP")
    s1.cmd("c NOOP")
    s3.cmd("c NOOP")
    s1.cmd("d STORE 1 +FLAGS.SILENT (\\Deleted)")
    s1.cmd("e EXPUNGE")
    reply = s2.cmd("f NOOP")
    assert reply[0] == b"* 1 EXPUNGE"  # flags of a message already gone are not reported
    reply = s3.cmd("g NOOP")
    assert reply[0] == b"* VANISHED 1"
    for s in (s1, s2, s3):
        s.close()
