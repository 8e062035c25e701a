"""The classifier's own header-section reader agrees with the stdlib parser."""

from __future__ import annotations

import email.parser
from email import policy

from hypothesis import given, settings
from hypothesis import strategies as st

from keepmail.spam import features

from .conftest import HAMMY, SPAMMY, make_mail

STDLIB = email.parser.BytesParser(policy=policy.compat32)

PIECES = [b"From ", b"From: a@b.example", b"Subject:", b": x", b"X-A: 1", b"to:", b" ",
          b"\t", b"\r\n", b"\n", b"\r", b"cont", b"\xe9t\xe9", b"\x0b", b"\x0c", b"\x1c",
          b"no colon", b"=?utf-8?q?x?=", b"Content-Type: multipart/mixed; boundary=z",
          b"Content-Type: text/plain"]


def check(data: bytes) -> None:
    end = features._header_end(data)
    if end < 0:
        return
    block = data[:end]
    expected = STDLIB.parsebytes(block, headersonly=True)
    got = features._parse_head(block)
    if expected.get_payload():        # the stdlib parser starts the body early
        assert got is None
    else:
        assert got is not None
        assert got.items() == expected.items()
        assert got.get_unixfrom() == expected.get_unixfrom()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.binary(max_size=20))
def test_header_reader_matches_stdlib(pieces: list[bytes], tail: bytes) -> None:
    check(b"".join(pieces) + b"\n\nbody" + tail)
    check(b"".join(pieces) + tail)


def test_header_reader_on_real_shapes() -> None:
    for subject, body in SPAMMY + HAMMY:
        check(make_mail(subject, body))
    check(b"From someone Mon Sep  2 10:00:00 2002\nFrom: a@b.example\n\n.")
    check(b"From: a@b.example\nFrom x\n\nbody")           # envelope line last: body
    check(b" leading continuation\nA: b\n  folded\n\tmore\n\n")
    check(b"A: b\r\nB: c\r\n\r\nbody")
    check(b"A: b\rB: c\r\rbody")
    check(b"\n\nbody")
    check(b"A: b\nnot a header\nC: d\n\n")


def test_single_part_parse_equals_stdlib() -> None:
    for raw in (make_mail("hello", "a body\nwith lines\n"), b"Subject: x\n\n\nbody\n"):
        ours = features._parse_single_part(raw)
        theirs = email.message_from_bytes(raw, policy=policy.compat32)
        assert ours is not None
        assert ours.items() == theirs.items() and ours.get_payload() == theirs.get_payload()


def test_indexed_get_matches_stdlib_get() -> None:
    raw = (b"Received: one\nreceived: two\nContent-Type: text/html; charset=\"utf-8\"\n"
           b"Subject: =?utf-8?q?caf=C3=A9?=\nX-8bit: \xe9t\xe9\n\nbody")
    ours = features._parse_single_part(raw)
    theirs = email.message_from_bytes(raw, policy=policy.compat32)
    assert isinstance(ours, features._Message)
    for name in ("received", "RECEIVED", "content-type", "subject", "x-8bit", "missing"):
        assert str(ours.get(name)) == str(theirs.get(name))
    assert ours.get("missing", 7) == 7
    assert ours.get_content_type() == theirs.get_content_type() == "text/html"
    assert ours.get_params() == theirs.get_params()
    ours["Missing"] = "now here"           # fields added later are found too
    assert ours.get("missing") == "now here"


def test_multipart_parts_use_indexed_get() -> None:
    raw = (b"Content-Type: multipart/alternative; boundary=b\n\n--b\n"
           b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\naGk=\n--b--\n")
    msg = features.parse(raw)
    assert msg is not None and msg.is_multipart()
    part = msg.get_payload()[0]
    assert isinstance(part, features._Message)
    assert part.get("content-transfer-encoding") == "base64"
    assert part.get_payload(decode=True) == b"hi"


def test_base64_cleanup_keeps_exactly_the_alphabet() -> None:
    import re

    data = bytes(range(256)) * 3 + b"QUJD\r\n ZGVm=\x00\xff"
    assert data.translate(None, features._NOT_BASE64) == re.sub(rb"[^A-Za-z0-9+/=]", b"", data)


def reference_markup_tokens(html: str) -> set[str]:
    """Tag and attribute tokens as first defined: every tag, every attribute search."""
    import re

    attr = re.compile(r"([a-zA-Z-]{1,20})\s*=")
    out = set()
    for _, tag, rest in features._TAG.findall(features._HTML_DROP.sub(" ", html)):
        out.add("tag:" + tag.lower())
        out.update(f"attr:{tag.lower()}.{a.lower()}" for a in attr.findall(rest))
    return out


MARKUP = ["<", ">", "=", " ", "\t", "a", "B", "-", "1", "_", '"', "'", "\0", "x" * 25,
          "background-color", "style", "/", "\n", "é", "<script>", "</script>", "<!--", "-->"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(MARKUP), max_size=60))
def test_markup_tokens_match_reference(pieces: list[str]) -> None:
    html = "".join(pieces)
    sink = features._Sink(features.DEFAULT_BITS)
    features.html_to_text(html, sink)
    assert sink.tokens == reference_markup_tokens(html)


def test_long_attribute_names_keep_their_last_twenty_letters() -> None:
    html = '<td verylongattributenamewithmanyletters="1" Style = "x" a-b=2 x1y=3>'
    sink = features._Sink(features.DEFAULT_BITS)
    features.html_to_text(html, sink)
    assert sink.tokens == reference_markup_tokens(html)
    assert "attr:td.enamewithmanyletters" in sink.tokens
