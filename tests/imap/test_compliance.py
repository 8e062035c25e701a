"""Protocol details found by running an IMAP compliance tester (Dovecot's imaptest) against
keepmail; each test pins one fix, over a real socket."""

from __future__ import annotations

import re

from .conftest import ImapEnv, RawClient

NESTED_RFC822 = (
    b"From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nMime-Version: 1.0\r\n"
    b"Content-Type: message/rfc822\r\n\r\n"
    b"From: user2@domain.org\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: sub@domain.org\r\nSubject: submsg\r\n\r\nHello world\r\n")

QP = (
    b"From: a@b.test\r\nMime-Version: 1.0\r\nContent-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"hello  \r\nbar=\r\n\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\n")


def _selected(imap: ImapEnv) -> RawClient:
    raw = imap.raw()
    raw.login()
    assert raw.cmd("S1 SELECT INBOX")[-1].startswith(b"S1 OK")
    return raw


def _literal(reply: list[bytes], item: bytes) -> bytes:
    line = next(x for x in reply if item in x)
    m = re.search(re.escape(item) + rb" ~?\{(\d+)\}\r\n", line)
    assert m, line
    return line[m.end():m.end() + int(m.group(1))]


def test_tilde_is_an_atom_char_not_literal8(imap: ImapEnv) -> None:
    # RFC 9051 9: only "~{" starts a literal8; "~foo" is an ordinary astring.
    raw = imap.raw()
    raw.login()
    assert raw.cmd('A1 LIST "" ~foo')[-1].startswith(b"A1 OK")
    assert raw.cmd("A2 SELECT ~foo")[-1].startswith(b"A2 NO")
    assert raw.cmd("A3 SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}")[-1].startswith(b"A3 NO")
    assert raw.cmd("A4 NOOP")[-1].startswith(b"A4 OK")


def test_body_sections_under_top_level_message_rfc822(imap: ImapEnv) -> None:
    # RFC 9051 6.4.5: numbers after a MESSAGE/RFC822 part index the encapsulated message.
    imap.deliver(NESTED_RFC822)
    raw = _selected(imap)
    assert _literal(raw.cmd("F1 FETCH 1 BODY.PEEK[1.1.1]"), b"BODY[1.1.1]") == b"Hello world\r\n"
    assert _literal(raw.cmd("F2 FETCH 1 BODY.PEEK[1.1.HEADER]"), b"BODY[1.1.HEADER]") == (
        b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n")
    assert _literal(raw.cmd("F3 FETCH 1 BODY.PEEK[1.1]"), b"BODY[1.1]").startswith(
        b"From: sub@domain.org")


def test_binary_quoted_printable_drops_transport_padding(imap: ImapEnv) -> None:
    # RFC 2045 6.7 rule (3): trailing whitespace is not content, also before a soft break.
    imap.deliver(QP)
    raw = _selected(imap)
    assert _literal(raw.cmd("B1 FETCH 1 (BINARY.PEEK[1])"), b"BINARY[1]") == (
        b"hello\r\nbar\r\nfoo\t \tb\r\nfoo bar\r\n")


def test_envelope_takes_comment_as_name_and_search_sees_the_address(imap: ImapEnv) -> None:
    imap.deliver(b"From: user@domain (Real Name)\r\nSubject: x\r\n\r\nbody\r\n")
    imap.deliver(b"From: <user (c)@ (c) domain>\r\nSubject: y\r\n\r\nbody\r\n")
    raw = _selected(imap)
    env = next(x for x in raw.cmd("E1 FETCH 1 ENVELOPE") if b"ENVELOPE" in x)
    assert b'(("Real Name" NIL "user" "domain"))' in env
    # RFC 9051 6.4.4: FROM searches the envelope's address, comments and spaces aside.
    assert b"* SEARCH 1 2" in raw.cmd("E2 SEARCH FROM user@domain")


def test_sort_uses_ascii_casemap_and_group_names(imap: ImapEnv) -> None:
    for subject, to in ((b"_", b"a: x@y.test;"), (b"[xyz]", b"b@c.test"),
                        (b"apple", b"zed <a@b.test>")):
        imap.deliver(b"From: f@x.test\r\nTo: " + to + b"\r\nSubject: " + subject
                     + b"\r\n\r\nbody\r\n")
    raw = _selected(imap)
    # i;ascii-casemap compares upper case: letters < "[" < "_".
    assert b"* SORT 3 2 1" in raw.cmd("O1 SORT (SUBJECT) US-ASCII ALL")
    # The group "a" comes first (RFC 5256 uses the envelope's first address: the group).
    assert b"* SORT 1 2 3" in raw.cmd("O2 SORT (DISPLAYTO) US-ASCII ALL")


def test_thread_references_with_a_dummy_parent(imap: ImapEnv) -> None:
    imap.deliver(b"Message-ID: <a@x>\r\nSubject: one\r\n\r\nbody\r\n")
    for mid in (b"<b@x>", b"<c@x>"):
        imap.deliver(b"Message-ID: " + mid + b"\r\nReferences: <missing@x>\r\nSubject: two"
                     b"\r\n\r\nbody\r\n")
    raw = _selected(imap)
    reply = raw.cmd("T1 THREAD REFERENCES US-ASCII ALL")
    assert reply[-1].startswith(b"T1 OK"), reply
    assert b"* THREAD (1)((2)(3))" in reply


def test_recent_after_append_and_examine(imap: ImapEnv) -> None:
    raw = imap.raw()
    raw.login()
    assert raw.cmd("C1 CREATE box")[-1].startswith(b"C1 OK")
    msg = b"From: a@b.test\r\nSubject: r\r\n\r\nbody\r\n"
    for tag in (b"P1", b"P2"):
        raw.send(tag + b" APPEND box {%d+}\r\n" % len(msg) + msg + b"\r\n")
        assert raw.until_tagged(tag)[-1].startswith(tag + b" OK")
    # EXAMINE shows \Recent but does not take it away from the next SELECT (RFC 3501 6.3.2).
    assert b"* 2 RECENT" in raw.cmd("X1 EXAMINE box")
    assert b"* STATUS box (RECENT 2)" in raw.cmd("X2 STATUS box (RECENT)")
    reply = raw.cmd("X3 SELECT box")
    assert b"* 2 RECENT" in reply
    assert b"* SEARCH 1 2" in raw.cmd("X4 SEARCH NEW")
    other = imap.raw()
    other.login()
    assert b"* STATUS box (RECENT 0)" in other.cmd("Y1 STATUS box (RECENT)")


def test_condstore_enabling_fetch_reports_highestmodseq(imap: ImapEnv) -> None:
    imap.deliver(b"From: a@b.test\r\nSubject: m\r\n\r\nbody\r\n")
    imap.deliver(b"From: a@b.test\r\nSubject: m\r\n\r\nbody\r\n")
    raw = _selected(imap)
    reply = raw.cmd("M1 FETCH 1 MODSEQ")
    assert any(x.startswith(b"* OK [HIGHESTMODSEQ ") for x in reply), reply
    raw.cmd("M2 STORE 1 +FLAGS (\\Seen)")
    raw.cmd("M3 STORE 2 +FLAGS (\\Seen)")
    modseqs = {}
    for line in raw.cmd("M4 FETCH 1:2 MODSEQ"):
        m = re.match(rb"\* (\d) FETCH \(MODSEQ \((\d+)\)\)", line)
        if m:
            modseqs[int(m.group(1))] = int(m.group(2))
    # RFC 7162 3.1.5: with MIN only, the MODSEQ is that of the MIN message.
    reply = raw.cmd("M5 SEARCH RETURN (MIN) MODSEQ 1")
    assert b'* ESEARCH (TAG "M5") MIN 1 MODSEQ %d' % modseqs[1] in reply


def test_keyword_from_another_session_is_announced_in_flags_first(imap: ImapEnv) -> None:
    imap.deliver(b"From: a@b.test\r\nSubject: k\r\n\r\nbody\r\n")
    one = _selected(imap)
    two = _selected(imap)
    assert two.cmd("K1 STORE 1 +FLAGS ($Label2)")[-1].startswith(b"K1 OK")
    reply = one.cmd("K2 FETCH 1 FLAGS")
    flags_at = next(i for i, x in enumerate(reply) if x.startswith(b"* FLAGS"))
    fetch_at = next(i for i, x in enumerate(reply) if b"FETCH" in x and b"$Label2" in x)
    assert flags_at < fetch_at and b"$Label2" in reply[flags_at], reply


def _append8(raw: RawClient, tag: bytes, msg: bytes) -> list[bytes]:
    raw.send(tag + b" APPEND INBOX ~{%d}\r\n" % len(msg))
    assert raw.line().startswith(b"+")
    raw.send(msg + b"\r\n")
    return raw.until_tagged(tag)


def test_append_binary_nul_content_becomes_base64(imap: ImapEnv) -> None:
    # RFC 3516 4.3: a normal literal cannot carry NUL (RFC 9051 4.3), so binary content
    # appended in a literal8 is stored base64-encoded; BINARY[] still returns the bytes.
    content = b"\x00-\xe4\n\r\n\n"
    binary_msg = (b"From: user@domain.org\r\nContent-Transfer-Encoding: binary\r\n"
                  b"Mime-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\r\n"
                  + content)
    multipart = (b"From: a@b.test\r\nMime-Version: 1.0\r\n"
                 b'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n'
                 b"--xx\r\nContent-Type: text/plain\r\n\r\nplain \xe4 8bit\r\n"
                 b"--xx\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: binary\r\n"
                 b"\r\n\x89PNG\x00\x01\x02\r\n--xx--\r\n")
    raw = imap.raw()
    raw.login()
    assert _append8(raw, b"A1", binary_msg)[-1].startswith(b"A1 OK")
    assert _append8(raw, b"A2", multipart)[-1].startswith(b"A2 OK")
    # A NUL where no transfer encoding can carry it is refused.
    reply = _append8(raw, b"A3", b"From: a@b.test\r\nX-Bad: a\x00b\r\n\r\nbody\r\n")
    assert reply[-1].startswith(b"A3 NO [UNKNOWN-CTE]"), reply
    # Content without NUL is stored exactly as sent, even from a literal8.
    eight = b"From: a@b.test\r\nContent-Transfer-Encoding: binary\r\n\r\n\xe4\xf6\r\n"
    assert _append8(raw, b"A4", eight)[-1].startswith(b"A4 OK")
    assert raw.cmd("S1 SELECT INBOX")[-1].startswith(b"S1 OK")
    whole = _literal(raw.cmd("F1 FETCH 1 BODY.PEEK[]"), b"BODY[]")
    assert b"\x00" not in whole and b"Content-Transfer-Encoding: base64\r\n\r\n" in whole
    assert b"Content-Transfer-Encoding: binary" not in whole
    assert whole.startswith(b"From: user@domain.org\r\nMime-Version: 1.0\r\n")
    assert b"\x00" not in _literal(raw.cmd("F2 FETCH 1 BODY.PEEK[1]"), b"BODY[1]")
    assert b"\x00" not in _literal(raw.cmd("F3 FETCH 1 RFC822"), b"RFC822")
    reply = raw.cmd("F4 FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")
    assert b"BINARY.SIZE[1] 7" in reply[0] and _literal(reply, b"BINARY[1]") == content
    size = re.search(rb"RFC822\.SIZE (\d+)", raw.cmd("F5 FETCH 1 RFC822.SIZE")[0])
    assert size and int(size.group(1)) == len(whole)
    body = raw.cmd("F6 FETCH 2 BODYSTRUCTURE")[0]
    assert b'"image" "png" NIL NIL NIL "base64"' in body and b'"8bit"' not in body
    assert _literal(raw.cmd("F7 FETCH 2 BODY.PEEK[1]"), b"BODY[1]") == b"plain \xe4 8bit"
    assert _literal(raw.cmd("F8 FETCH 2 BINARY.PEEK[2]"), b"BINARY[2]") == b"\x89PNG\x00\x01\x02"
    assert _literal(raw.cmd("F9 FETCH 3 BODY.PEEK[]"), b"BODY[]") == eight


def test_envelope_keeps_the_source_route(imap: ImapEnv) -> None:
    # RFC 9051 7.5.2: an address is (name adl mailbox host); adl is the obsolete route.
    imap.deliver(b"From: Joe <@r1.test,@r2.test:joe@example.test>\r\n"
                 b"To: plain@example.test\r\nSubject: route\r\n\r\nx\r\n")
    raw = _selected(imap)
    line = b"".join(raw.cmd("E1 FETCH 1 ENVELOPE"))
    assert b'(("Joe" "@r1.test,@r2.test" "joe" "example.test"))' in line, line
    assert b'((NIL NIL "plain" "example.test"))' in line, line
