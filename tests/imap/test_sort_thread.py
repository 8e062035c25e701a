"""SORT and THREAD (RFC 5256)."""

from __future__ import annotations

from keepmail.imap.sort_thread import base_subject

from .conftest import ImapEnv


def _msg(subject: str, date: str, sender: str, msgid: str, refs: str = "") -> bytes:
    extra = f"References: {refs}\r\nIn-Reply-To: {refs.split()[-1]}\r\n" if refs else ""
    return (f"From: {sender}\r\nTo: x@example.test\r\nSubject: {subject}\r\nDate: {date}\r\n"
            f"Message-ID: {msgid}\r\n{extra}\r\nbody\r\n").encode()


def test_base_subject() -> None:
    assert base_subject(b"Re: Fwd: [list] Hello (fwd)") == "hello"
    assert base_subject(b"[Fwd: Re: hello]") == "hello"
    assert base_subject(b"  RE:   re:  Hello   World ") == "hello world"
    assert base_subject(b"[tag]") == "[tag]"


def test_sort_and_thread(imap: ImapEnv) -> None:
    imap.deliver(_msg("Hello", "Mon, 1 Jan 2024 10:00:00 +0000", "zed@x.test", "<a@x>"))
    imap.deliver(_msg("Re: Hello", "Mon, 1 Jan 2024 12:00:00 +0000", "amy@x.test", "<b@x>",
                      "<a@x>"))
    imap.deliver(_msg("Other", "Sun, 31 Dec 2023 10:00:00 +0000", "bob@x.test", "<c@x>"))
    imap.deliver(_msg("Re: Re: Hello", "Tue, 2 Jan 2024 12:00:00 +0000", "amy@x.test",
                      "<d@x>", "<a@x> <b@x>"))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    assert raw.cmd("b SORT (DATE) UTF-8 ALL")[0] == b"* SORT 3 1 2 4"
    assert raw.cmd("c SORT (REVERSE DATE) UTF-8 ALL")[0] == b"* SORT 4 2 1 3"
    assert raw.cmd("d SORT (FROM SUBJECT) UTF-8 ALL")[0] == b"* SORT 2 4 3 1"
    assert raw.cmd("e UID SORT (SUBJECT DATE) UTF-8 NOT 3")[0] == b"* SORT 1 2 4"
    assert raw.cmd("f SORT (BOGUS) UTF-8 ALL")[-1].startswith(b"f BAD")
    assert raw.cmd("g THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (3)(1 2 4)"
    assert raw.cmd("h THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (3)(1 (2)(4))"
    assert raw.cmd("i THREAD FOO UTF-8 ALL")[-1].startswith(b"i BAD")
    raw.close()
