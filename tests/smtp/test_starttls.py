"""STARTTLS: real TLS with a test CA, and no command injection across the upgrade."""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

from keepmail import config as configmod
from keepmail.tls import load_ca, make_certificate
from tests.smtp.rawclient import Raw
from tests.support.server import (
    InProcessServer,
    add_users,
    free_port_offset,
    mailbox_messages,
    write_config,
)


def ca_signed_server(tmp_path: Path) -> tuple[InProcessServer, ssl.SSLContext]:
    ca = make_certificate(["keepmail test CA"], tmp_path / "ca.pem", tmp_path / "ca.key",
                          is_ca=True)
    leaf = make_certificate(["mx.example.test"], tmp_path / "cert.pem", tmp_path / "key.pem",
                            issuer=load_ca(ca.cert, ca.key))
    path = write_config(tmp_path, extra={"tls": {"cert_file": str(leaf.cert),
                                                 "key_file": str(leaf.key)}})
    cfg = configmod.load(path)
    add_users(cfg, "bob@example.test")
    client_ctx = ssl.create_default_context(cafile=str(ca.cert))
    return InProcessServer(cfg, free_port_offset()).start(), client_ctx


def test_starttls_verifies_with_test_ca(tmp_path: Path) -> None:
    srv, ctx = ca_signed_server(tmp_path)
    try:
        with smtplib.SMTP(srv.host, srv.port("smtp"), local_hostname="client.test") as c:
            c._host = "mx.example.test"  # verify the name on the certificate
            c.starttls(context=ctx)
            assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
            c.ehlo()
            assert not c.has_extn("starttls"), "STARTTLS must not be offered twice"
            c.sendmail("a@remote.test", ["bob@example.test"], b"Subject: tls\r\n\r\nx\r\n")
        [stored] = mailbox_messages(srv.store, "bob@example.test")
        assert b"with ESMTPS" in stored and b"TLSv1.3" in stored
    finally:
        srv.stop()


def test_commands_pipelined_after_starttls_are_discarded(server: InProcessServer) -> None:
    c = Raw(server.host, server.port("smtp"))
    c.reply()
    c.cmd(b"EHLO attacker.test")
    # The injected MAIL FROM travels in clear text before the handshake.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
    assert c.reply()[0] == 220
    ctx = ssl._create_unverified_context()
    c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.example.test")
    # Had the injected command run, this would be "nested MAIL" (503).
    assert c.cmd(b"EHLO attacker.test")[0] == 250
    assert c.cmd(b"MAIL FROM:<real@remote.test>")[0] == 250
    assert c.quiet(0.2) == b""


def test_starttls_twice_refused(server: InProcessServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp")) as c:
        c.starttls(context=ssl._create_unverified_context())
        c.ehlo()
        assert c.docmd("STARTTLS")[0] == 503


def test_auth_not_offered_on_mx(server: InProcessServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp")) as c:
        c.starttls(context=ssl._create_unverified_context())
        c.ehlo()
        assert not c.has_extn("auth")
        assert c.docmd("AUTH PLAIN AGJvYgBwdw==")[0] == 502
