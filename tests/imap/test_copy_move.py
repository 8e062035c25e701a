"""COPY, MOVE, UIDPLUS COPYUID (RFC 9051 6.4.7-6.4.8, RFC 6851, RFC 4315), training events."""

from __future__ import annotations

from keepmail.store import mail as mailq

from .conftest import ImapEnv, message


def test_copy_with_copyuid(imap: ImapEnv) -> None:
    for i in range(3):
        imap.deliver(message(f"m{i}"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    reply = raw.cmd("b COPY 2:3 Archive")
    box = imap.mailbox("Archive")
    assert reply[-1] == b"b OK [COPYUID %d 2:3 1:2] COPY completed" % box.uidvalidity
    assert raw.cmd("c COPY 1 Nope")[-1].startswith(b"c NO [TRYCREATE]")
    raw.close()


def test_move(imap: ImapEnv) -> None:
    for i in range(3):
        imap.deliver(message(f"m{i}"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    reply = raw.cmd("b MOVE 1:2 Archive")
    assert reply[0].startswith(b"* OK [COPYUID ")
    assert reply[1:3] == [b"* 2 EXPUNGE", b"* 1 EXPUNGE"]
    assert reply[-1] == b"b OK MOVE completed"
    assert b"UID 3" in raw.cmd("c FETCH 1 UID")[0]
    raw.cmd("d ENABLE QRESYNC")
    raw.close()
    raw = imap.raw()
    raw.login()
    raw.cmd("e ENABLE QRESYNC")
    raw.cmd("f SELECT INBOX")
    reply = raw.cmd("g UID MOVE 3 Archive")
    assert reply[1] == b"* VANISHED 3"
    raw.close()


def _training(imap: ImapEnv) -> list[tuple[int, str]]:
    rows = imap.store.read_now(lambda c: mailq.pending_training(c))
    return [(r["is_spam"], r["source"]) for r in rows]


def test_move_to_and_from_junk_records_training(imap: ImapEnv) -> None:
    imap.deliver(message("spam"))
    imap.deliver(message("ham"), mailbox="Junk")
    imap.deliver(message("trash"), mailbox="Junk")
    c = imap.connect()
    c.select("INBOX")
    assert c.uid("MOVE", "1", "Junk")[0] == "OK"
    assert _training(imap) == [(1, "imap-move")]
    c.select("Junk")
    assert c.uid("MOVE", "1", "INBOX")[0] == "OK"
    assert c.uid("MOVE", "2", "Trash")[0] == "OK"
    assert _training(imap) == [(1, "imap-move"), (0, "imap-move")]
    c.logout()
