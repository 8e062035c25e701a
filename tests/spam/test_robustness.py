"""Hostile input: malformed MIME, bad charsets, huge and deeply nested messages."""

from __future__ import annotations

import time

import pytest

from keepmail.spam import features
from keepmail.spam.classifier import Classifier

MALFORMED = [
    b"",
    b"\x00\x01\x02\xff" * 100,
    b"no headers at all, just text\n",
    b"Subject: =?x-no-such-charset?B?SGVsbG8=?=\n\nbody",
    b"Subject: =?utf-8?B?!!!notbase64?=\nFrom: =?utf-8?Q?=FF=FE?= <@@@>\n\nbody",
    b"Content-Type: multipart/mixed\n\nno boundary parameter\n--x\n",
    b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain; '
    b'charset="bogus-charset-9"\n\n\xff\xfe\xfd\n--b\nContent-Transfer-Encoding: base64\n\n'
    b"%%%not base64%%%\n--b--",
    b"Content-Type: text/html; charset=utf-16\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"=E2=80=\n<b>unterminated <a href='http://[::1",
    b"Content-Type: text/plain; charset=\"\xff\xfe\"\n\nhello",
    b"From: " + b"A" * 100000 + b"\n\n" + b"x" * 1000,
    b"Subject: test\r\n" + b"X-Long: " + b"y " * 50000 + b"\r\n\r\nbody",
    b"Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nSubject: inner\n\nhi",
]


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_messages_score(raw: bytes, empty: Classifier) -> None:
    result = empty.score(raw, auth={"spf": "???"})
    assert 0.0 <= result.probability <= 1.0
    empty.learn(raw, True)


def test_twenty_megabyte_message_in_bounded_time(empty: Classifier) -> None:
    body = (b"Lorem ipsum dolor sit amet http://example.com/ " * 20) + b"\r\n"
    raw = b"Subject: big\r\nContent-Type: text/plain\r\n\r\n" + body * (20_000_000 // len(body))
    assert len(raw) >= 19_000_000
    start = time.perf_counter()
    empty.score(raw)
    empty.learn(raw, False)
    assert time.perf_counter() - start < 20.0  # bounded input: far below this


def test_big_base64_attachment_in_bounded_time(empty: Classifier) -> None:
    chunk = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=" * 2 + b"\r\n"
    raw = (b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n'
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nsee attachment\r\n--zz\r\n"
           b"Content-Type: application/octet-stream; name=a.exe\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + chunk * 200_000 + b"--zz--\r\n")
    start = time.perf_counter()
    f = empty.features(raw, names=True)
    assert time.perf_counter() - start < 10.0  # bounded input: far below this
    assert "attach:exe" in f.names.values()


@pytest.mark.parametrize("depth", [10, 3000])
def test_deeply_nested_multiparts(depth: int, empty: Classifier) -> None:
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
                    for i in range(depth))
    tail = b"".join(b"\n--b%d--\n" % i for i in reversed(range(depth)))
    raw = b"Subject: nested\n" + head + b"Content-Type: text/plain\n\ndeep text" + tail
    start = time.perf_counter()
    result = empty.score(raw)
    assert 0.0 <= result.probability <= 1.0
    assert time.perf_counter() - start < 10.0  # bounded, not exponential in depth
    if depth <= 10:
        assert "w:deep" in empty.features(raw, names=True).names.values()


def test_html_is_turned_into_text_and_structure() -> None:
    raw = (b"Content-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: "
           b"quoted-printable\n\n<html><body><font color=3Dred>Caf=E9 &amp; <b>bar</b></font>"
           b'<a href=3D"http://www.shop.example.co.uk/x">here</a><script>evil()</script>')
    names = set(features.extract(raw, names=True).names.values())
    assert {"w:café", "w:bar", "tag:font", "attr:font.color", "url:example.co.uk"} <= names
    assert "w:evil" not in names


def test_headers_are_decoded_by_field() -> None:
    raw = ("Subject: =?utf-8?B?" + "R3LDvMOfZSBhdXMgTcO8bmNoZW4=" + "?=\n"
           "From: =?iso-8859-1?Q?J=F6rg?= <joerg@mail.example.de>\nX-Mailer: Foo 1.2\n\nx").encode()
    names = set(features.extract(raw, names=True).names.values())
    assert {"s:grüße", "s:münchen", "fn:jörg", "fd:mail.example.de", "fr:example.de",
            "x-mailer:foo 0.0"} <= names


def test_an_8bit_received_field_keeps_the_rest_of_the_header() -> None:
    """Raw 8-bit bytes in a Received field (common in spam) come back from the parser
    as a Header object; the hops, the sender identity and the later fields must still
    be read, not dropped as a broken header."""
    from keepmail.spam import features

    raw = ("Received: from mail.sp\u00e4m.example (mail.spam.example [203.0.113.9])\r\n"
           "\tby mx.example.test with ESMTP; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
           "From: Sales <sales@offers.example>\r\nX-Mailer: BulkBlaster 9\r\n"
           "Subject: hi\r\n\r\nbody text here\r\n").encode("latin-1")
    f = features.extract(raw, names=True, received_ip=True)
    names = set(f.names.values())
    assert "hdr:broken" not in names
    assert "rnet:203.0" in names
    assert any(n.startswith("x-mailer:") for n in names)
    assert f.sender == "sales@offers.example"
    assert f.sender_domain == "offers.example"
