"""COMPRESS=DEFLATE (RFC 4978), QUOTA (RFC 9208), UTF8=ACCEPT (RFC 6855), shutdown BYE."""

from __future__ import annotations

import zlib

from keepmail.store import accounts

from .conftest import ALICE, ImapEnv, message


def test_compress_deflate(imap: ImapEnv) -> None:
    imap.deliver(message("z" * 10))
    raw = imap.raw()
    raw.login()
    assert raw.cmd("a COMPRESS DEFLATE") == [b"a OK DEFLATE active"]
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    decomp = zlib.decompressobj(-15)
    raw.send(comp.compress(b"b SELECT INBOX\r\nc FETCH 1 BODY[]\r\n")
             + comp.flush(zlib.Z_SYNC_FLUSH))
    out = b""
    while b"c OK" not in out:
        out += decomp.decompress(raw.sock.recv(65536))
    assert b"* 1 EXISTS" in out and b"Subject: zzzzzzzzzz" in out
    raw.close()


def test_quota(imap: ImapEnv) -> None:
    imap.store.write_sync(lambda c: c.execute(
        "UPDATE accounts SET quota_bytes = 2048 WHERE address = ?", (ALICE,)))
    raw = imap.raw()
    raw.login()
    reply = raw.cmd("a GETQUOTAROOT INBOX")
    assert reply[:2] == [b'* QUOTAROOT INBOX ""', b'* QUOTA "" (STORAGE 0 2)']
    assert raw.cmd('b GETQUOTA ""')[0] == b'* QUOTA "" (STORAGE 0 2)'
    assert raw.cmd('c SETQUOTA "" (STORAGE 10)')[-1].startswith(b"c NO")
    big = message(body="x" * 3000)
    reply = raw.cmd(b"d APPEND INBOX {%d+}\r\n%s" % (len(big), big))
    assert reply[-1].startswith(b"d NO [OVERQUOTA]")
    raw.close()
    assert accounts.get_account is not None


def test_utf8_accept(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    assert raw.cmd("a ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT"
    assert raw.cmd('b CREATE "Échanges"'.encode())[-1].startswith(b"b OK")
    reply = raw.cmd('c LIST "" "É*"'.encode())
    assert reply[0] == '* LIST (\\HasNoChildren) "/" "Échanges"'.encode()
    raw.close()
    raw = imap.raw()
    raw.login()
    reply = raw.cmd('d LIST "" "*"')
    assert b'&AMk-changes' in b"\n".join(reply)
    raw.close()


def test_shutdown_says_bye(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    raw.send(b"b IDLE\r\n")
    raw.line()
    for srv in imap.servers:
        imap.call(srv.close())
    assert raw.line().startswith(b"* BYE")
    raw.close()
