"""Protocol behaviour: EHLO, PIPELINING, SIZE, SMTPUTF8/8BITMIME, CHUNKING, odd input."""

from __future__ import annotations

import smtplib

import pytest

from tests.smtp.rawclient import Raw
from tests.support.server import InProcessServer, mailbox_messages

MSG = b"Subject: t\r\n\r\nbody\r\n"


def raw(server: InProcessServer) -> Raw:
    c = Raw(server.host, server.port("smtp"))
    assert c.reply()[0] == 220
    return c


def test_ehlo_advertises_extensions(server: InProcessServer) -> None:
    c = raw(server)
    code, text = c.cmd(b"EHLO client.test")
    assert code == 250
    for ext in (b"PIPELINING", b"SIZE", b"8BITMIME", b"SMTPUTF8", b"ENHANCEDSTATUSCODES",
                b"CHUNKING", b"STARTTLS"):
        assert ext in text
    assert b"AUTH" not in text, "the MX port must not offer AUTH"


def test_pipelined_batch_answered_in_order(server: InProcessServer) -> None:
    c = raw(server)
    c.cmd(b"EHLO client.test")
    c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
           b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    codes = [c.reply()[0] for _ in range(5)]
    assert codes == [250, 250, 550, 250, 354]
    assert c.cmd(b"Subject: p\r\n\r\nhi\r\n.")[0] == 250
    assert c.cmd(b"QUIT")[0] == 221
    assert len(mailbox_messages(server.store, "alice@example.test")) == 1


def test_commands_out_of_sequence(server: InProcessServer) -> None:
    c = raw(server)
    assert c.cmd(b"MAIL FROM:<a@remote.test>")[0] == 503   # before EHLO
    c.cmd(b"EHLO client.test")
    assert c.cmd(b"RCPT TO:<bob@example.test>")[0] == 503  # before MAIL
    assert c.cmd(b"DATA")[0] == 503
    assert c.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert c.cmd(b"MAIL FROM:<a@remote.test>")[0] == 503   # nested
    assert c.cmd(b"DATA")[0] == 554                        # no valid recipients
    assert c.cmd(b"FOO")[0] == 500
    assert c.cmd(b"MAIL FROM:<not an address>")[0] in (501, 503)
    assert c.cmd(b"RSET")[0] == 250
    assert c.cmd(b"VRFY bob")[0] == 252


def test_size_parameter_over_limit(tmp_path) -> None:
    from tests.smtp.conftest import make_server
    srv = make_server(tmp_path, smtp={"max_message_size": 4096})
    try:
        c = raw(srv)
        c.cmd(b"EHLO client.test")
        code, text = c.cmd(b"MAIL FROM:<a@remote.test> SIZE=5000")
        assert code == 552 and b"5.3.4" in text
        # A client that lies about SIZE is stopped by the actual size.
        assert c.cmd(b"MAIL FROM:<a@remote.test> SIZE=100")[0] == 250
        assert c.cmd(b"RCPT TO:<bob@example.test>")[0] == 250
        assert c.cmd(b"DATA")[0] == 354
        c.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100)
        code, text = c.cmd(b".")
        assert code == 552
        # The session continues and a small message still goes through.
        assert c.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
        assert c.cmd(b"RCPT TO:<bob@example.test>")[0] == 250
        assert c.cmd(b"DATA")[0] == 354
        assert c.cmd(b"Subject: small\r\n\r\nok\r\n.")[0] == 250
        assert len(mailbox_messages(srv.store, "bob@example.test")) == 1
    finally:
        srv.stop()


def test_smtputf8_address_and_8bit_body(server: InProcessServer) -> None:
    body = "Subject: grüße\r\n\r\nÜmläut ✓\r\n".encode()
    c = raw(server)
    c.cmd(b"EHLO client.test")
    assert c.cmd("MAIL FROM:<jörg@remote.test>".encode())[0] == 553  # needs SMTPUTF8
    assert c.cmd("MAIL FROM:<jörg@remote.test> SMTPUTF8 BODY=8BITMIME".encode())[0] == 250
    assert c.cmd(b"RCPT TO:<bob@example.test>")[0] == 250
    assert c.cmd(b"DATA")[0] == 354
    assert c.cmd(body + b".")[0] == 250
    [stored] = mailbox_messages(server.store, "bob@example.test")
    assert stored.endswith(body)
    assert b"UTF8ESMTP" in stored


def test_bdat_chunking(server: InProcessServer) -> None:
    c = raw(server)
    c.cmd(b"EHLO client.test")
    c.cmd(b"MAIL FROM:<a@remote.test>")
    c.cmd(b"RCPT TO:<bob@example.test>")
    part1, part2 = b"Subject: chunks\r\n\r\nline one\r\n", b".leading dot kept\r\n"
    c.send(b"BDAT %d\r\n" % len(part1) + part1)
    assert c.reply()[0] == 250
    c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    assert c.reply()[0] == 250
    [stored] = mailbox_messages(server.store, "bob@example.test")
    assert stored.endswith(part1 + part2)


def test_bdat_without_recipients_consumes_chunk(server: InProcessServer) -> None:
    c = raw(server)
    c.cmd(b"EHLO client.test")
    c.send(b"BDAT 10 LAST\r\nRSET\r\nNOOP")  # the 10 bytes are data, not commands
    assert c.reply()[0] == 503
    assert c.cmd(b"NOOP")[0] == 250


def test_dot_stuffing_removed(server: InProcessServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp")) as c:
        c.sendmail("a@remote.test", ["bob@example.test"], b"Subject: d\r\n\r\n.hidden\r\n..two\r\n")
    [stored] = mailbox_messages(server.store, "bob@example.test")
    assert stored.endswith(b"\r\n.hidden\r\n..two\r\n")


def test_over_long_command_line(server: InProcessServer) -> None:
    c = raw(server)
    code, _ = c.cmd(b"EHLO " + b"a" * 100_000)
    assert code == 500
    assert c.cmd(b"EHLO ok.test")[0] == 250


def test_long_data_lines_and_nul(server: InProcessServer) -> None:
    c = raw(server)
    c.cmd(b"EHLO client.test")
    c.cmd(b"MAIL FROM:<a@remote.test>")
    c.cmd(b"RCPT TO:<bob@example.test>")
    c.cmd(b"DATA")
    long_line = b"y" * 3_000_000  # longer than one read buffer
    assert c.cmd(b"Subject: long\r\n\r\n" + long_line + b"\r\n.")[0] == 250
    [stored] = mailbox_messages(server.store, "bob@example.test")
    assert long_line in stored
    c.cmd(b"MAIL FROM:<a@remote.test>")
    c.cmd(b"RCPT TO:<bob@example.test>")
    c.cmd(b"DATA")
    code, text = c.cmd(b"Subject: nul\r\n\r\nbad\x00byte\r\n.")
    assert code == 554 and b"NUL" in text
    assert len(mailbox_messages(server.store, "bob@example.test")) == 1


def test_bare_lf_line_endings_normalized(server: InProcessServer) -> None:
    c = raw(server)
    c.cmd(b"EHLO client.test")
    c.cmd(b"MAIL FROM:<a@remote.test>")
    c.cmd(b"RCPT TO:<bob@example.test>")
    c.cmd(b"DATA")
    assert c.cmd(b"Subject: lf\n\nline\nother\r\n.")[0] == 250
    [stored] = mailbox_messages(server.store, "bob@example.test")
    assert stored.endswith(b"Subject: lf\r\n\r\nline\r\nother\r\n")


def test_messages_per_connection_limit(tmp_path) -> None:
    """After max_messages_per_connection messages the next MAIL FROM gets 421 and the
    connection closes; the messages before it are delivered, a new connection works."""
    from tests.smtp.conftest import make_server
    srv = make_server(tmp_path, smtp={"max_messages_per_connection": 2})
    try:
        with smtplib.SMTP(srv.host, srv.port("smtp")) as client:
            for i in range(2):
                client.sendmail("a@remote.test", ["bob@example.test"],
                                b"Subject: %d\r\n\r\nx\r\n" % i)
            code, text = client.mail("a@remote.test")
            assert code == 421 and b"4.7.0" in text
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
        with smtplib.SMTP(srv.host, srv.port("smtp")) as client:
            client.sendmail("a@remote.test", ["bob@example.test"], b"Subject: 3\r\n\r\nx\r\n")
        assert len(mailbox_messages(srv.store, "bob@example.test")) == 3
    finally:
        srv.stop()


def test_http_request_hangs_up(server: InProcessServer) -> None:
    c = raw(server)
    code, _ = c.cmd(b"GET / HTTP/1.1")
    assert code == 421


def test_too_many_errors_disconnects(server: InProcessServer) -> None:
    c = raw(server)
    codes = [c.cmd(b"BOGUS")[0] for _ in range(19)]
    assert set(codes) == {500}
    assert c.cmd(b"BOGUS")[0] == 421


def test_pipelined_errors_mid_batch_answered_in_order_and_recorded(
        server: InProcessServer) -> None:
    """Replies to one pipelined batch leave in one write: errors in the middle keep
    their place, and the flight recorder pairs every command with its own reply."""
    from keepmail.recorder.query import open_readonly, timeline

    c = raw(server)
    c.cmd(b"EHLO client.test")
    c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n"
           b"BOGUS\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<bad address>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(6)] == [250, 550, 500, 250, 501, 354]
    code, text = c.cmd(b"Subject: mid\r\n\r\nhi\r\n.")
    assert code == 250
    trace_id = text.split()[-1].decode()
    # After the message: a batch ending in QUIT, with an error before it.
    c.send(b"NOOP\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<x@elsewhere.test>\r\nRSET\r\n"
           b"QUIT\r\n")
    assert [c.reply()[0] for _ in range(5)] == [250, 250, 554, 250, 221]
    assert len(mailbox_messages(server.store, "bob@example.test")) == 1
    server.app.recorder.flush()
    steps = [(e["data"]["cmd"], e["data"]["reply"][:3]) for e in
             timeline(open_readonly(server.config.data_dir / "recorder.db"), trace_id)
             if e["kind"] == "smtp"][:8]
    assert steps == [("EHLO client.test", "250"), ("MAIL FROM:<a@remote.test>", "250"),
                     ("RCPT TO:<nobody@example.test>", "550"), ("BOGUS", "500"),
                     ("RCPT TO:<bob@example.test>", "250"), ("RCPT TO:<bad address>", "501"),
                     ("DATA", "354"), ("(message data)", "250")]
