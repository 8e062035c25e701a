"""STORE and UID STORE: FLAGS, +FLAGS, -FLAGS, .SILENT, keywords (RFC 9051 6.4.6)."""

from __future__ import annotations

from .conftest import ImapEnv, message


def test_store_modes(imap: ImapEnv) -> None:
    for i in range(3):
        imap.deliver(message(f"m{i}"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    reply = raw.cmd("b STORE 1:2 +FLAGS (\\Seen \\Flagged)")
    assert reply[:2] == [b"* 1 FETCH (FLAGS (\\Flagged \\Seen))",
                         b"* 2 FETCH (FLAGS (\\Flagged \\Seen))"]
    reply = raw.cmd("c STORE 1 -FLAGS.SILENT (\\Flagged)")
    assert reply == [b"c OK STORE completed"]
    reply = raw.cmd("d UID STORE 3 FLAGS ($Forwarded \\Draft)")
    text = b"\n".join(reply)
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)" in text
    assert b"* 3 FETCH (UID 3 FLAGS (\\Draft $Forwarded))" in text
    assert raw.cmd("e STORE 1 +FLAGS (\\Bogus)")[-1].startswith(b"e BAD")
    assert raw.cmd("f STORE 1 FLAGS (\\seen)")[0] == b"* 1 FETCH (FLAGS (\\Seen))"
    assert raw.cmd("g STORE 9 FLAGS (\\Seen)")[-1].startswith(b"g BAD")
    assert raw.cmd("h STORE 1 XFLAGS (\\Seen)")[-1].startswith(b"h BAD")
    assert raw.cmd("i STORE 1 +FLAGS \\Answered \\Seen")[0] == (
        b"* 1 FETCH (FLAGS (\\Answered \\Seen))")
    raw.close()


def test_other_session_sees_flag_change(imap: ImapEnv) -> None:
    imap.deliver(message("x"))
    a, b = imap.raw(), imap.raw()
    a.login()
    b.login()
    a.cmd("a SELECT INBOX")
    b.cmd("b SELECT INBOX")
    a.cmd("c STORE 1 +FLAGS (\\Flagged)")
    reply = b.cmd("d NOOP")
    assert reply[0] == b"* 1 FETCH (UID 1 FLAGS (\\Flagged))"
    assert a.cmd("e NOOP") == [b"e OK NOOP completed"]  # no echo of its own change
    a.close()
    b.close()
