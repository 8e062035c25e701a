"""CONDSTORE and QRESYNC (RFC 7162): MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, VANISHED (EARLIER)."""

from __future__ import annotations

import re

from .conftest import ImapEnv, message


def _modseq(line: bytes) -> int:
    m = re.search(rb"MODSEQ \((\d+)\)", line)
    assert m, line
    return int(m.group(1))


def test_condstore_fetch_and_store(imap: ImapEnv) -> None:
    for i in range(3):
        imap.deliver(message(f"m{i}"))
    raw = imap.raw()
    raw.login()
    reply = raw.cmd("a SELECT INBOX (CONDSTORE)")
    highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(reply)).group(1))  # type: ignore
    m2 = _modseq(raw.cmd("b FETCH 2 (MODSEQ)")[0])
    reply = raw.cmd("c STORE 1 +FLAGS (\\Seen)")
    assert _modseq(reply[0]) > highest
    reply = raw.cmd(f"d STORE 1,2 (UNCHANGEDSINCE {m2}) +FLAGS (\\Flagged)")
    assert reply[-1].startswith(b"d OK [MODIFIED 1]")
    assert reply[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ")
    reply = raw.cmd(f"e FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    assert [line.split(b" ")[1] for line in reply[:-1]] == [b"1", b"2"]
    assert all(b"MODSEQ" in line for line in reply[:-1])
    reply = raw.cmd(f"f SEARCH MODSEQ {highest + 1}")
    assert reply[0].startswith(b"* SEARCH 1 2 (MODSEQ ")
    reply = raw.cmd("g STATUS INBOX (HIGHESTMODSEQ)")
    assert b"HIGHESTMODSEQ" in reply[0]
    reply = raw.cmd("h STORE 3 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Seen)")
    assert reply[-1].startswith(b"h OK [MODIFIED 3]")
    raw.close()


def test_qresync_select_and_vanished(imap: ImapEnv) -> None:
    for i in range(4):
        imap.deliver(message(f"m{i}"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a ENABLE QRESYNC")
    reply = raw.cmd("b SELECT INBOX")
    text = b"".join(reply)
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", text).group(1))  # type: ignore
    highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", text).group(1))  # type: ignore
    raw.cmd("c STORE 2 +FLAGS.SILENT (\\Deleted)")
    raw.cmd("d STORE 3 +FLAGS.SILENT (\\Flagged)")
    assert raw.cmd("e EXPUNGE")[0] == b"* VANISHED 2"
    raw.cmd("f UNSELECT")
    reply = raw.cmd(f"g SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:4))")
    assert b"* VANISHED (EARLIER) 2" in reply
    assert any(line.startswith(b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ") for line in reply)
    reply = raw.cmd(f"h UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest} VANISHED)")
    assert reply[0] == b"* VANISHED (EARLIER) 2"
    assert raw.cmd("i FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)")[-1].startswith(b"i BAD")
    reply = raw.cmd("j SELECT Archive")
    assert reply[0] == b"* OK [CLOSED] Previous mailbox closed"
    raw.close()


def test_qresync_select_requires_enable(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    assert raw.cmd("a SELECT INBOX (QRESYNC (1 1))")[-1].startswith(b"a BAD")
    raw.close()
