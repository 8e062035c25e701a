"""Greeting, CAPABILITY, LOGIN, AUTHENTICATE PLAIN (SASL-IR), STARTTLS, LOGOUT, recorder events."""

from __future__ import annotations

import base64
import imaplib
import socket

import pytest

from tests.support.server import PASSWORD

from .conftest import ALICE, ImapEnv, RawClient


def test_greeting_has_capabilities(imap: ImapEnv) -> None:
    raw = imap.raw()
    assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2")
    assert b"AUTH=PLAIN" in raw.greeting
    raw.close()


def test_login_and_capabilities_after(imap: ImapEnv) -> None:
    raw = imap.raw()
    reply = raw.cmd(f'a LOGIN {ALICE} "{PASSWORD}"')
    assert reply[-1].startswith(b"a OK [CAPABILITY IMAP4rev1 IMAP4rev2")
    for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QRESYNC", b"SPECIAL-USE",
                b"LIST-EXTENDED", b"LIST-STATUS", b"ESEARCH", b"SEARCHRES", b"SORT",
                b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT", b"MULTIAPPEND", b"BINARY",
                b"UTF8=ACCEPT", b"APPENDLIMIT=", b"QUOTA", b"COMPRESS=DEFLATE", b"NAMESPACE",
                b"UNSELECT", b"CHILDREN", b"LITERAL+", b"ENABLE", b"ID", b"SASL-IR"):
        assert cap in reply[-1], cap
    reply = raw.cmd("b LOGOUT")
    assert reply[0].startswith(b"* BYE") and reply[-1].startswith(b"b OK")
    raw.close()
    kinds = imap.recorder.kinds()
    assert "imap.login" in kinds and "imap.logout" in kinds


def test_bad_password(imap: ImapEnv) -> None:
    raw = imap.raw()
    reply = raw.cmd(f'a LOGIN {ALICE} wrong')
    assert reply[-1].startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert "imap.login-failed" in imap.recorder.kinds()
    raw.cmd("b LOGIN nobody@example.test wrong")
    raw.send(b"c LOGIN nobody@example.test wrong\r\n")
    assert raw.line().startswith(b"c NO")
    assert raw.line().startswith(b"* BYE")  # three failures end the connection
    raw.close()


def test_authenticate_plain_sasl_ir_and_continuation(imap: ImapEnv) -> None:
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    raw = imap.raw()
    reply = raw.cmd(f"a AUTHENTICATE PLAIN {token}")
    assert reply[-1].startswith(b"a OK"), reply
    raw.close()
    raw = imap.raw()
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(token.encode() + b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK")
    raw.close()
    raw = imap.raw()
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    raw.line()
    raw.send(b"*\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a BAD")
    raw.close()


def test_authzid_other_user_refused(imap: ImapEnv) -> None:
    token = base64.b64encode(f"bob@example.test\0{ALICE}\0{PASSWORD}".encode()).decode()
    raw = imap.raw()
    assert raw.cmd(f"a AUTHENTICATE PLAIN {token}")[-1].startswith(b"a NO")
    raw.close()


def test_plain_port_requires_starttls(imap: ImapEnv) -> None:
    raw = imap.raw(tls_on=False)
    assert b"LOGINDISABLED" in raw.greeting and b"STARTTLS" in raw.greeting
    assert b"AUTH=PLAIN" not in raw.greeting
    reply = raw.cmd(f'a LOGIN {ALICE} "{PASSWORD}"')
    assert reply[-1].startswith(b"a NO [PRIVACYREQUIRED]")
    raw.close()


def test_starttls_with_imaplib(imap: ImapEnv) -> None:
    c = imaplib.IMAP4(imap.host, imap.plain_port, timeout=10)
    c.starttls(ssl_context=imap.client_context)
    assert "AUTH=PLAIN" in c.capabilities and "LOGINDISABLED" not in c.capabilities
    c.login(ALICE, PASSWORD)
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_starttls_discards_injected_commands(imap: ImapEnv) -> None:
    sock = socket.create_connection((imap.host, imap.plain_port), timeout=10)
    raw = RawClient(sock)
    # A man in the middle appends a command after STARTTLS in the same packet.
    raw.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
    assert raw.line().startswith(b"a OK")
    tls_sock = imap.client_context.wrap_socket(sock, server_hostname="localhost")
    raw2 = RawClient.__new__(RawClient)
    raw2.sock, raw2.buf = tls_sock, b""
    reply = raw2.cmd("c NOOP")
    assert reply == [b"c OK NOOP completed"]
    raw2.close()


def test_commands_in_wrong_state(imap: ImapEnv) -> None:
    raw = imap.raw()
    assert raw.cmd("a SELECT INBOX")[-1].startswith(b"a BAD")
    assert raw.cmd("b FETCH 1 FLAGS")[-1].startswith(b"b BAD")
    raw.login()
    assert raw.cmd("c FETCH 1 FLAGS")[-1].startswith(b"c BAD")
    assert raw.cmd("d LOGIN a b")[-1].startswith(b"d BAD")
    assert raw.cmd("e EXPUNGE")[-1].startswith(b"e BAD")
    raw.close()


def test_id_namespace_noop(imap: ImapEnv) -> None:
    raw = imap.raw()
    reply = raw.cmd('a ID ("name" "test" "version" "1")')
    assert reply[0].startswith(b'* ID ("name" "keepmail"')
    raw.login()
    assert raw.cmd("b NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL'
    assert raw.cmd("c NOOP") == [b"c OK NOOP completed"]
    raw.close()


def test_enable(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    reply = raw.cmd("a ENABLE CONDSTORE X-UNKNOWN")
    assert reply[0] == b"* ENABLED CONDSTORE"
    reply = raw.cmd("b ENABLE QRESYNC CONDSTORE")
    assert reply[0] == b"* ENABLED QRESYNC"
    raw.close()


@pytest.mark.parametrize("user", ["ALICE@EXAMPLE.TEST"])
def test_login_case_insensitive_address(imap: ImapEnv, user: str) -> None:
    c = imap.connect(user=user)
    c.logout()
