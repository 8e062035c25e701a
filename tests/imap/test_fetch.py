"""FETCH: BODYSTRUCTURE, ENVELOPE, BODY[section]<partial>, BINARY, RFC822.*, \\Seen side effect
(RFC 9051 6.4.5, 7.5.2; RFC 3516)."""

from __future__ import annotations

import imapclient

from keepmail.imap import mime, wire
from tests.support.server import PASSWORD

from .conftest import ALICE, ImapEnv, message

NESTED = (
    b"From: \"Joe Q. Public\" <john.q.public@example.com>\r\n"
    b"To: Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>\r\n"
    b"Cc: group: a@b.test, c@d.test;, undisclosed:;\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= nested\r\n"
    b"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    b"Message-ID: <5678.21-Nov-1997@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 plain\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@x.test\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--outer\r\n"
    b"Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
    b"Content-Disposition: attachment; filename=\"a.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQ=\r\n"
    b"--outer--\r\n"
    b"epilogue\r\n"
)


def _client(imap: ImapEnv) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient(imap.host, port=imap.tls_port, ssl=True,
                              ssl_context=imap.client_context, timeout=20)
    c.login(ALICE, PASSWORD)
    return c


def test_bodystructure_nested(imap: ImapEnv) -> None:
    imap.deliver(NESTED)
    c = _client(imap)
    c.select_folder("INBOX")
    data = c.fetch([1], ["BODYSTRUCTURE", "ENVELOPE", "BODY"])[1]
    bs = data[b"BODYSTRUCTURE"]
    assert bs.is_multipart
    parts, subtype = bs[0], bs[1]
    assert subtype == b"mixed"
    alt = parts[0]
    assert alt[1] == b"alternative"
    assert alt[0][0][:2] == (b"text", b"plain")
    msg = parts[1]
    assert msg[:2] == (b"message", b"rfc822")
    assert msg[7][1] == b"inner"
    att = parts[2]
    assert att[:2] == (b"application", b"octet-stream")
    assert att[8] == (b"attachment", (b"filename", b"a.bin"))
    env = data[b"ENVELOPE"]
    assert env.subject == b"=?utf-8?q?caf=C3=A9?= nested"
    assert env.from_[0].name == b"Joe Q. Public" and env.from_[0].host == b"example.com"
    assert [a.mailbox for a in env.to] == [b"mary", b"jdoe", b"one"]
    assert env.cc[0].mailbox == b"group" and env.cc[0].host is None
    assert env.message_id == b"<5678.21-Nov-1997@example.com>"
    c.logout()


def test_sections(imap: ImapEnv) -> None:
    imap.deliver(NESTED)
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")

    def one(item: str) -> bytes:
        reply = raw.cmd(f"b FETCH 1 ({item})")
        assert reply[-1].startswith(b"b OK"), reply
        line = reply[0]
        return line[line.index(b"}\r\n") + 3:-1] if b"}\r\n" in line else line

    assert one("BODY.PEEK[1.1]") == b"caf=C3=A9 plain"
    assert one("BODY.PEEK[1.2.MIME]") == b"Content-Type: text/html\r\n\r\n"
    assert one("BODY.PEEK[2.HEADER]") == b"From: inner@x.test\r\nSubject: inner\r\n\r\n"
    assert one("BODY.PEEK[2.TEXT]") == b"inner body"
    assert one("BODY.PEEK[2.1]") == b"inner body"
    assert one("BODY.PEEK[3]") == b"AAECAwQ="
    assert one("BINARY.PEEK[3]") == b"\x00\x01\x02\x03\x04"
    assert b"BINARY.SIZE[3] 5" in one("BINARY.SIZE[3]")
    assert b"BINARY[1.1] {11}" in raw.cmd("c FETCH 1 (BINARY.PEEK[1.1])")[0]
    assert one("BODY.PEEK[HEADER.FIELDS (subject DATE)]") == (
        b"Subject: =?utf-8?q?caf=C3=A9?= nested\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\n")
    assert b"BODY[HEADER.FIELDS.NOT (To Cc)]" in raw.cmd(
        "d FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (To Cc)])")[0]
    assert one("BODY.PEEK[]<0.4>") == b"From"
    assert b"BODY[]<0> {4}" in raw.cmd("e FETCH 1 BODY.PEEK[]<0.4>")[0]
    assert one("BODY.PEEK[1.1]<2.3>") == b"f=C"
    assert b'BODY[]<99999> ""' in raw.cmd("f FETCH 1 BODY.PEEK[]<99999.10>")[0]
    assert b"BODY[9] NIL" in one("BODY.PEEK[9]")
    assert one("RFC822.SIZE").endswith(b"RFC822.SIZE %d)" % len(NESTED))
    for bad in ("BODY[", "BODY[1.]", "BODY[HEADER.FIELDS ()]", "BODY[0]", "BINARY[TEXT]",
                "BOGUS", "BODY[]<1>", "BODY[MIME]"):
        assert raw.cmd(f"g FETCH 1 ({bad})")[-1].startswith(b"g BAD"), bad
    raw.close()


def test_seen_side_effect(imap: ImapEnv) -> None:
    imap.deliver(message("a"))
    imap.deliver(message("b"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a EXAMINE INBOX")
    assert b"\\Seen" not in b"".join(raw.cmd("b FETCH 1 (BODY[TEXT] FLAGS)"))
    raw.cmd("c SELECT INBOX")
    reply = raw.cmd("d FETCH 1 BODY[TEXT]")
    assert b"FLAGS (\\Seen)" in reply[0]
    assert b"\\Seen" not in b"".join(raw.cmd("e FETCH 2 (BODY.PEEK[] FLAGS)"))
    assert b"\\Seen" in b"".join(raw.cmd("f FETCH 2 (RFC822 FLAGS)"))
    raw.close()


def test_macros_uid_internaldate(imap: ImapEnv) -> None:
    imap.deliver(message("a"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    line = raw.cmd("b FETCH 1 FULL")[0]
    for item in (b"FLAGS", b"INTERNALDATE \"", b"RFC822.SIZE", b"ENVELOPE", b"BODY ("):
        assert item in line
    line = raw.cmd("c UID FETCH 1:* FLAGS")[0]
    assert line.startswith(b"* 1 FETCH (UID 1 FLAGS")
    assert raw.cmd("d FETCH 2 FLAGS")[-1].startswith(b"d BAD")
    assert raw.cmd("e UID FETCH 5 FLAGS") == [b"e OK FETCH completed"]
    assert raw.cmd("f FETCH 1:* (UID RFC822.HEADER)")[0].startswith(b"* 1 FETCH (UID 1 RFC822")
    raw.close()


MALFORMED = [
    b"",
    b"no header separator at all",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n"
    b"unterminated",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary param",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed;"
    b" boundary=a\r\n\r\n--a\r\n\r\nx\r\n--a--\r\n",
    b"Content-Type: ;;;\r\nContent-Disposition: ;\r\nFrom: <<<@@>\r\nTo: :;,,\r\n\r\nbody",
    b"From: \"unterminated\r\nSubject: (comment\r\n\r\n",
    b"\r\n\r\n",
    b"X: y\n\nlf only",
]


def test_malformed_mime_never_fails() -> None:
    for raw in MALFORMED:
        root = mime.parse(raw)
        wire.render(mime.body_structure(root, True))
        wire.render(mime.envelope(root))
        for path in ([], [1], [1, 1], [2]):
            mime.section_bytes(root, path, "", [])


def test_deep_nesting_bounded() -> None:
    raw = b""
    for i in range(200):
        raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    raw += b"\r\nleaf\r\n"
    root = mime.parse(raw)
    out = wire.render(mime.body_structure(root, True))
    assert out.count(b"(") < 200


def test_fetch_malformed_over_imap(imap: ImapEnv) -> None:
    for raw in MALFORMED[1:]:
        imap.deliver(raw)
    c = _client(imap)
    c.select_folder("INBOX")
    data = c.fetch(c.search(), ["BODYSTRUCTURE", "ENVELOPE", "BODY.PEEK[1]", "RFC822.SIZE"])
    assert len(data) == len(MALFORMED) - 1
    c.logout()
