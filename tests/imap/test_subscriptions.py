"""Subscriptions are a list of names (RFC 9051 6.3.7-6.3.9, RFC 3501 6.3.6/6.3.9) and
LIST-EXTENDED's SUBSCRIBED / RECURSIVEMATCH / CHILDINFO (RFC 5258); the scenarios of
Dovecot imaptest's listext and subscribe groups, over a real socket."""

from __future__ import annotations

from .conftest import ImapEnv, RawClient


def _lines(raw: RawClient, cmd: str) -> list[bytes]:
    reply = raw.cmd(cmd)
    tag = cmd.split(" ", 1)[0].encode()
    assert reply[-1].startswith(tag + b" OK"), reply
    return [x for x in reply if x.startswith((b"* LIST", b"* LSUB"))]


def _setup(imap: ImapEnv) -> RawClient:
    raw = imap.raw()
    raw.login()
    for name in ("t/a", "t/b/", "t/b/c", "t/d", "t/e/f", "t/g/g", "t/h/h", "t/h/i"):
        assert raw.cmd(f"C CREATE {name}")[-1].startswith(b"C OK")
    for name in ("t/a", "t/b/c", "t/d", "t/g/g", "t/h/h", "t/h/i"):
        assert raw.cmd(f"S SUBSCRIBE {name}")[-1].startswith(b"S OK")
    assert raw.cmd("D DELETE t/d")[-1].startswith(b"D OK")
    return raw


def test_delete_keeps_the_subscription_and_list_shows_it_nonexistent(imap: ImapEnv) -> None:
    raw = _setup(imap)
    assert _lines(raw, 'A LIST (SUBSCRIBED) "" "t/*"') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/a',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/b/c',
        b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" t/d',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/g/g',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/h/h',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/h/i',
    ]
    lsub = _lines(raw, 'B LSUB "" "t/*"')
    assert b'* LSUB (\\Noselect) "/" t/d' in lsub and b'* LSUB () "/" t/a' in lsub
    # Recreating the mailbox finds it subscribed again.
    raw.cmd("C CREATE t/d")
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" t/d' in _lines(
        raw, 'D LIST "" "t/d" RETURN (SUBSCRIBED)')
    raw.close()


def test_create_does_not_subscribe_and_return_subscribed(imap: ImapEnv) -> None:
    raw = _setup(imap)
    assert _lines(raw, 'A LIST "" "t/%" RETURN (CHILDREN SUBSCRIBED)') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/a',
        b'* LIST (\\HasChildren) "/" t/b',     # created explicitly, not subscribed
        b'* LIST (\\HasChildren) "/" t/e',     # implied parents are not subscribed either
        b'* LIST (\\HasChildren) "/" t/g',
        b'* LIST (\\HasChildren) "/" t/h',
    ]
    raw.close()


def test_recursivematch_childinfo(imap: ImapEnv) -> None:
    raw = _setup(imap)
    assert _lines(raw, 'A LIST (SUBSCRIBED RECURSIVEMATCH) "" "t/b%" RETURN (CHILDREN)') == [
        b'* LIST (\\HasChildren) "/" t/b ("CHILDINFO" ("SUBSCRIBED"))']
    # t/g's only subscribed child is listed itself: no CHILDINFO for t/g.
    assert _lines(raw, 'B LIST (SUBSCRIBED RECURSIVEMATCH) "" "t*g"') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/g/g']
    # t/h/i does not match, so t/h carries CHILDINFO.
    assert _lines(raw, 'C LIST (SUBSCRIBED RECURSIVEMATCH) "" "t*h"') == [
        b'* LIST (\\HasChildren) "/" t/h ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/h/h']
    assert _lines(raw, 'D LIST (SUBSCRIBED RECURSIVEMATCH) "" (t/b t/b/c)') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" t/b/c']
    raw.close()


def test_subscribe_nonexistent_lsub_and_rename(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    assert raw.cmd("A SUBSCRIBE later/box")[-1].startswith(b"A OK")
    assert raw.cmd('B SUBSCRIBE "bad*name"')[-1].startswith(b"B NO")
    raw.cmd("C CREATE p/q")
    raw.cmd("D SUBSCRIBE p/q")
    assert _lines(raw, 'E LSUB "" "p/%"') == [b'* LSUB () "/" p/q']
    # New accounts' folders are subscribed; unsubscribed levels above subscribed
    # names (existing "p", never-created "later") show as \\Noselect (RFC 3501 6.3.9).
    assert set(_lines(raw, 'F LSUB "" "%"')) == {
        b'* LSUB () "/" Archive', b'* LSUB () "/" Drafts', b'* LSUB () "/" INBOX',
        b'* LSUB () "/" Junk', b'* LSUB () "/" Sent', b'* LSUB () "/" Trash',
        b'* LSUB (\\Noselect) "/" later', b'* LSUB (\\Noselect) "/" p'}
    # RENAME takes the subscriptions of the mailbox and its children along.
    assert raw.cmd("G RENAME p r")[-1].startswith(b"G OK")
    assert _lines(raw, 'H LSUB "" "*/q"') == [b'* LSUB () "/" r/q']
    assert raw.cmd("I UNSUBSCRIBE r/q")[-1].startswith(b"I OK")
    assert raw.cmd("J UNSUBSCRIBE never/subscribed")[-1].startswith(b"J OK")
    assert _lines(raw, 'K LSUB "" "*/q"') == []
    raw.close()
