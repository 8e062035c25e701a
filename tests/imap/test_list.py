"""LIST, LSUB, CREATE, DELETE, RENAME, SUBSCRIBE (RFC 9051 6.3.4-6.3.9, RFC 5258, 5819, 6154)."""

from __future__ import annotations

from .conftest import ImapEnv, message


def _list(raw, cmd: str) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [line for line in raw.cmd(cmd) if line.startswith((b"* LIST", b"* LSUB",
                                                              b"* STATUS"))]


def test_list_special_use_and_children(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    lines = _list(raw, 'a LIST "" "*"')
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" INBOX'
    assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent' in lines
    assert b'* LIST (\\HasNoChildren \\Junk) "/" Junk' in lines
    assert raw.cmd('b LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""'
    raw.cmd("c CREATE Projects/2024/Q1")
    lines = _list(raw, 'd LIST "" "Projects/%"')
    assert lines == [b'* LIST (\\HasChildren) "/" Projects/2024']
    lines = _list(raw, 'e LIST "" "Proj*"')
    assert len(lines) == 3
    lines = _list(raw, 'f LIST (SPECIAL-USE) "" "*"')
    assert len(lines) == 5 and all(b"\\HasNoChildren \\" in line for line in lines)
    raw.close()


def test_list_extended_and_status(imap: ImapEnv) -> None:
    imap.deliver(message("x"))
    raw = imap.raw()
    raw.login()
    lines = _list(raw, 'a LIST "" (INBOX Sent) RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))')
    assert lines[0] == b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX'
    assert lines[1] == b"* STATUS INBOX (MESSAGES 1 UNSEEN 1)"
    raw.cmd("b UNSUBSCRIBE Sent")
    lines = _list(raw, 'c LIST (SUBSCRIBED) "" "*"')
    assert not any(b"Sent" in line for line in lines)
    lines = _list(raw, 'd LSUB "" "*"')
    assert b'* LSUB () "/" INBOX' in lines and not any(b"Sent" in x for x in lines)
    raw.close()


def test_create_delete_rename(imap: ImapEnv) -> None:
    c = imap.connect()
    assert c.create("Work")[0] == "OK"
    assert c.create("Work")[0] == "NO"
    assert c.create("Work/Sub/")[0] == "OK"
    assert c.delete("Work")[0] == "NO"  # has children
    assert c.rename("Work", "Job")[0] == "OK"
    names = [line.split(b' "/" ')[1] for line in c.list()[1]]
    assert b"Job/Sub" in names and b"Work" not in names
    assert c.rename("Job", "Job/Inner")[0] == "NO"
    assert c.delete("Job/Sub")[0] == "OK"
    assert c.delete("Job")[0] == "OK"
    assert c.delete("INBOX")[0] == "NO"
    assert c.delete("Nope")[0] == "NO"
    c.logout()


def test_rename_inbox_moves_mail(imap: ImapEnv) -> None:
    imap.deliver(message("a"))
    imap.deliver(message("b"))
    c = imap.connect()
    assert c.rename("INBOX", "Old")[0] == "OK"
    assert c.select("INBOX")[1] == [b"0"]
    assert c.select("Old")[1] == [b"2"]
    c.logout()


def test_bad_names(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    for name in ('"a/../b"', '"../etc"', '"/abs"', '"a//b"', '".."', '"a/./b"', '"x*"',
                 '"bad&Jjo"', '"&AGE-"'):
        reply = raw.cmd(f"a CREATE {name}")
        assert reply[-1].startswith((b"a NO", b"a BAD")), (name, reply)
    assert raw.cmd('b CREATE "&ZeVnLIqe-"')[-1].startswith(b"b OK")
    lines = _list(raw, 'c LIST "" "&ZeVnLIqe-"')
    assert lines == [b'* LIST (\\HasNoChildren) "/" &ZeVnLIqe-']
    raw.cmd("d ENABLE UTF8=ACCEPT")
    lines = _list(raw, 'e LIST "" "*"')
    assert '"日本語"'.encode() in b"\n".join(lines)
    raw.close()


def test_inbox_case_insensitive(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    assert raw.cmd("a CREATE inbox/child")[-1].startswith(b"a OK")
    lines = _list(raw, 'b LIST "" "inbox/*"')
    assert lines == [b'* LIST (\\HasNoChildren) "/" INBOX/child']
    raw.close()
