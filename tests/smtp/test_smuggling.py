"""SMTP smuggling: no variant of a fake end-of-data may yield a second message.

Each payload hides "MAIL FROM… DATA… ." for a spoofed message behind an
end-of-data sequence some servers accept. keepmail must either keep it all as
one message's text or refuse the message, and never deliver the smuggled one.
"""

from __future__ import annotations

import pytest

from tests.smtp.rawclient import Raw
from tests.support.server import InProcessServer, mailbox_messages

SMUGGLED = (b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"From: ceo@example.test\r\nSubject: SMUGGLED\r\n\r\npay now\r\n")

ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\n.\r",
           b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\n\n.\n\n"]


@pytest.mark.parametrize("fake_end", ENDINGS, ids=[repr(e) for e in ENDINGS])
def test_fake_end_of_data_never_splits(server: InProcessServer, fake_end: bytes) -> None:
    c = Raw(server.host, server.port("smtp"))
    c.reply()
    c.cmd(b"EHLO attacker.test")
    c.cmd(b"MAIL FROM:<x@remote.test>")
    c.cmd(b"RCPT TO:<bob@example.test>")
    assert c.cmd(b"DATA")[0] == 354
    c.send(b"Subject: first\r\n\r\nhello" + fake_end + SMUGGLED + b"\r\n.\r\n")
    code, _ = c.reply()
    assert code in (250, 554)
    # Exactly one answer for the one real end-of-data: no smuggled replies.
    extra = c.quiet(0.3)
    assert extra == b"", extra
    assert c.cmd(b"QUIT")[0] == 221
    stored = mailbox_messages(server.store, "bob@example.test")
    assert len(stored) <= 1
    for m in stored:
        assert not m.split(b"\r\n\r\n", 1)[0].count(b"SMUGGLED"), "smuggled header became real"
    if code == 250:
        assert b"Subject: first" in stored[0]
