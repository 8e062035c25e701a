"""Connection-level defenses and quarantine, over real sockets from other loopback hosts."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

from keepmail import config as configmod
from keepmail.inbound.defenses import helo_rules
from keepmail.inbound.quarantine import release
from keepmail.inbound.verdict import Thresholds
from keepmail.maintenance import Maintenance
from keepmail.store import quarantine as qstore
from tests.smtp.rawclient import Raw
from tests.support.server import (
    InProcessServer,
    add_users,
    free_port_offset,
    mailbox_messages,
    write_config,
)

MSG = b"From: x@remote.test\r\nSubject: hi\r\n\r\nhello\r\n"


def start(tmp_path: Path, **inbound: object) -> InProcessServer:
    path = write_config(tmp_path, extra={"inbound": inbound} if inbound else None)
    cfg = configmod.load(path)
    add_users(cfg, "bob@example.test")
    return InProcessServer(cfg, free_port_offset()).start()


def client_from(ip: str, server: InProcessServer) -> Raw:
    raw = Raw.__new__(Raw)
    sock = socket.socket()
    sock.bind((ip, 0))
    sock.settimeout(10)
    sock.connect((server.host, server.port("smtp")))
    raw.sock, raw.buf = sock, b""
    return raw


def test_helo_rules() -> None:
    ours = {"mx.example.test", "example.test"}
    assert helo_rules("mx.example.test", "192.0.2.1", ours, {"198.51.100.1"})[0].name == \
        "helo-is-us"
    assert helo_rules("[198.51.100.1]", "192.0.2.1", ours, {"198.51.100.1"})[0].name == \
        "helo-is-us"
    assert helo_rules("[192.0.2.1]", "192.0.2.1", ours, set()) == []
    assert helo_rules("bad_name!", "192.0.2.1", ours, set())[0].name == "helo-malformed"
    assert helo_rules("localhost", "192.0.2.1", ours, set())[0].name == "helo-not-fqdn"
    assert helo_rules("mail.sender.test", "192.0.2.1", ours, set()) == []


def test_greylisting_of_suspicious_first_contact(tmp_path: Path) -> None:
    srv = start(tmp_path, greylisting=True, greylist_min_score=2.0, greylist_delay=1.0)
    try:
        c = client_from("127.0.0.77", srv)
        c.reply()
        c.cmd(b"EHLO not_a_hostname!")  # malformed: +2.5, suspicious
        c.cmd(b"MAIL FROM:<spam@remote.test>")
        code, text = c.cmd(b"RCPT TO:<bob@example.test>")
        assert code == 451 and b"greylisted" in text
        c.cmd(b"RSET")
        c.cmd(b"MAIL FROM:<spam@remote.test>")
        assert c.cmd(b"RCPT TO:<bob@example.test>")[0] == 451, "too early a retry"
        time.sleep(1.2)
        c.cmd(b"RSET")
        c.cmd(b"MAIL FROM:<spam@remote.test>")
        assert c.cmd(b"RCPT TO:<bob@example.test>")[0] == 250, "a patient retry passes"
        # A well-behaved client is not greylisted at all.
        ok = client_from("127.0.0.78", srv)
        ok.reply()
        ok.cmd(b"EHLO mail.sender.test")
        ok.cmd(b"MAIL FROM:<a@sender.test>")
        assert ok.cmd(b"RCPT TO:<bob@example.test>")[0] == 250
    finally:
        srv.stop()


def test_helo_claiming_to_be_us_goes_to_junk(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        c = client_from("127.0.0.79", srv)
        c.reply()
        c.cmd(b"EHLO mx.example.test")
        c.cmd(b"MAIL FROM:<a@remote.test>")
        c.cmd(b"RCPT TO:<bob@example.test>")
        c.cmd(b"DATA")
        assert c.cmd(MSG + b".")[0] == 250
        assert mailbox_messages(srv.store, "bob@example.test") == []
        junk = mailbox_messages(srv.store, "bob@example.test", "Junk")
        held = srv.store.read_now(lambda conn: qstore.list_entries(conn))
        assert len(junk) + len(held) == 1
        verdict = held[0].verdict if held else junk[0].decode()
        assert "helo-is-us" in verdict
    finally:
        srv.stop()


def test_early_talker_refused(tmp_path: Path) -> None:
    srv = start(tmp_path, greet_delay=0.5)
    try:
        c = client_from("127.0.0.80", srv)
        c.send(b"EHLO impatient.test\r\n")
        code, text = c.reply()
        assert code == 554 and b"before my greeting" in text
        patient = client_from("127.0.0.81", srv)
        assert patient.reply()[0] == 220
    finally:
        srv.stop()


def test_connection_and_message_rate_limits(tmp_path: Path) -> None:
    srv = start(tmp_path, max_connections_per_minute=3, max_messages_per_minute=2)
    try:
        codes = []
        for _ in range(4):
            c = client_from("127.0.0.82", srv)
            codes.append(c.reply()[0])
            c.close()
        assert codes == [220, 220, 220, 421]
        c = client_from("127.0.0.83", srv)
        c.reply()
        c.cmd(b"EHLO mail.sender.test")
        replies = []
        for _ in range(3):
            replies.append(c.cmd(b"MAIL FROM:<a@sender.test>")[0])
            c.cmd(b"RSET")
        assert replies == [250, 250, 451]
    finally:
        srv.stop()


def test_quarantine_release_and_expiry(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        # Force a quarantine verdict: HELO claims to be us (+8) plus malformed sender name.
        srv.config.spam.quarantine_score = 5.0
        mx = next(svc for name, _port, svc in srv.app.services if name == "smtp").handler
        mx.policy.thresholds = Thresholds(junk=3, quarantine=5, reject=50)
        c = client_from("127.0.0.84", srv)
        c.reply()
        c.cmd(b"EHLO mx.example.test")
        c.cmd(b"MAIL FROM:<a@remote.test>")
        c.cmd(b"RCPT TO:<bob@example.test>")
        c.cmd(b"DATA")
        assert c.cmd(MSG + b".")[0] == 250
        assert mailbox_messages(srv.store, "bob@example.test") == []
        [entry] = srv.store.read_now(lambda conn: qstore.list_entries(conn))
        assert entry.subject == "hi" and "quarantine" in entry.verdict
        srv.call(release(srv.store, entry.id, by="test"))
        [inbox] = mailbox_messages(srv.store, "bob@example.test")
        assert inbox.endswith(MSG)
        training = srv.store.read_now(lambda conn: conn.execute(
            "SELECT is_spam, source FROM training_events").fetchall())
        assert [tuple(t) for t in training] == [(0, "quarantine-release")]
        # Expiry removes old entries and frees their blobs.
        c.cmd(b"MAIL FROM:<a@remote.test>")
        c.cmd(b"RCPT TO:<bob@example.test>")
        c.cmd(b"DATA")
        c.cmd(MSG + b".")
        maint = Maintenance(srv.config, srv.store, srv.app.recorder)
        result = srv.call(maint.run_once(now=time.time() + 31 * 86400))
        assert result["quarantine_expired"] == 2
        assert srv.store.read_now(lambda conn: qstore.list_entries(conn)) == []
    finally:
        srv.stop()


def test_quarantine_cli(tmp_path: Path) -> None:
    path = write_config(tmp_path, extra={"spam": {"junk_score": 3.0, "quarantine_score": 5.0}})
    cfg = configmod.load(path)
    add_users(cfg, "bob@example.test")
    srv = InProcessServer(cfg, free_port_offset()).start()
    try:
        c = client_from("127.0.0.85", srv)
        c.reply()
        c.cmd(b"EHLO mx.example.test")
        c.cmd(b"MAIL FROM:<a@remote.test>")
        c.cmd(b"RCPT TO:<bob@example.test>")
        c.cmd(b"DATA")
        c.cmd(MSG + b".")
    finally:
        srv.stop()
    km = [sys.executable, "-m", "keepmail.cli", "quarantine"]
    listing = subprocess.run([*km, "list", "--config", str(path)], capture_output=True,
                             text=True, check=True).stdout
    entry_id = listing.split()[0]
    shown = subprocess.run([*km, "show", "--config", str(path), entry_id, "--raw"],
                           capture_output=True, text=True, check=True).stdout
    assert "helo-is-us" in shown and "hello" in shown
    subprocess.run([*km, "release", "--config", str(path), entry_id], check=True,
                   capture_output=True)
    again = subprocess.run([*km, "release", "--config", str(path), entry_id],
                           capture_output=True, text=True)
    assert again.returncode != 0 and "already released" in again.stderr
    from keepmail.store import Store
    store = Store.open(cfg.data_dir, cfg.key_file)
    try:
        assert len(mailbox_messages(store, "bob@example.test")) == 1
    finally:
        store.close()


def test_smtplib_from_other_host_still_works(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        with smtplib.SMTP(srv.host, srv.port("smtp"), source_address=("127.0.0.86", 0),
                          local_hostname="mail.sender.test") as c:
            c.sendmail("a@remote.test", ["bob@example.test"], MSG)
        assert len(mailbox_messages(srv.store, "bob@example.test")) == 1
        asyncio.run(asyncio.sleep(0))
    finally:
        srv.stop()


def test_user_sender_lists(tmp_path: Path) -> None:
    from keepmail.store import accounts, senderlists

    srv = start(tmp_path)
    try:
        bob = srv.store.read_now(lambda conn: accounts.get_account(conn, "bob@example.test"))
        srv.store.write_sync(lambda conn: senderlists.add(conn, bob.id, "block", "@spammy.test"))
        srv.store.write_sync(lambda conn: senderlists.add(conn, bob.id, "allow", "boss@firm.test"))
        with smtplib.SMTP(srv.host, srv.port("smtp"), source_address=("127.0.0.87", 0),
                          local_hostname="mail.sender.test") as c:
            c.sendmail("x@spammy.test", ["bob@example.test"], b"Subject: buy\r\n\r\nx\r\n")
            c.sendmail("boss@firm.test", ["bob@example.test"],
                       b"From: boss@firm.test\r\nSubject: meeting\r\n\r\nx\r\n")
        [junk] = mailbox_messages(srv.store, "bob@example.test", "Junk")
        assert b"Subject: buy" in junk and b"sender-blocked" in junk
        [inbox] = mailbox_messages(srv.store, "bob@example.test")
        assert b"sender-allowed" in inbox
    finally:
        srv.stop()


def test_dns_block_and_allow_lists_served_locally(tmp_path: Path) -> None:
    from tests.support.server import shared_dns

    dns = shared_dns()
    # 127.0.0.88 is listed on the block list, 127.0.0.89 on the allow list (RFC 5782 2.1).
    dns.add("88.0.0.127.bl.example.test", "A", "127.0.0.2")
    dns.add("88.0.0.127.bl.example.test", "TXT", "listed for spamming, see bl.example.test")
    dns.add("89.0.0.127.wl.example.test", "A", "127.0.0.2")
    srv = start(tmp_path, dnsbl_zones=["bl.example.test"], dnswl_zones=["wl.example.test"])
    try:
        for ip in ("127.0.0.88", "127.0.0.89"):
            with smtplib.SMTP(srv.host, srv.port("smtp"), source_address=(ip, 0),
                              local_hostname="mail.sender.test") as c:
                c.sendmail("a@sender.test", ["bob@example.test"],
                           f"Subject: from {ip}\r\n\r\nhello\r\n".encode())
        inbox = mailbox_messages(srv.store, "bob@example.test")
        assert [m for m in inbox if b"from 127.0.0.89" in m], "allow-listed sender delivered"
        allowed = next(m for m in inbox if b"from 127.0.0.89" in m)
        assert b"dnswl:wl.example.test=-3" in allowed
        assert not [m for m in inbox if b"from 127.0.0.88" in m], "listed sender not in Inbox"
        held = srv.store.read_now(lambda conn: qstore.list_entries(conn))
        junk = mailbox_messages(srv.store, "bob@example.test", "Junk")
        listed = [e.verdict for e in held] + [m.decode() for m in junk]
        assert any("dnsbl:bl.example.test=+10" in v for v in listed), listed
    finally:
        srv.stop()


def test_own_domain_forged_from_outside_is_refused(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        c = client_from("127.0.0.92", srv)
        c.reply()
        c.cmd(b"EHLO mail.sender.test")
        code, text = c.cmd(b"MAIL FROM:<ceo@example.test>")
        assert code == 550 and b"is our domain" in text
        # A From: header claiming us is refused too, whatever the envelope says.
        assert c.cmd(b"MAIL FROM:<x@sender.test>")[0] == 250
        assert c.cmd(b"RCPT TO:<bob@example.test>")[0] == 250
        assert c.cmd(b"DATA")[0] == 354
        code, text = c.cmd(b"From: ceo@example.test\r\nSubject: wire money\r\n\r\nnow\r\n.")
        assert code == 550 and b"claims our domain" in text
        assert mailbox_messages(srv.store, "bob@example.test") == []
    finally:
        srv.stop()


def test_domain_wide_sender_list_via_cli(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        km = [sys.executable, "-m", "keepmail.cli", "senders"]
        cfg = ["--config", str(srv.config.path)]
        subprocess.run([*km, "add", *cfg, "--domain", "example.test", "block", "@spammy.test"],
                       check=True, capture_output=True)
        listed = subprocess.run([*km, "list", *cfg, "--domain", "example.test"],
                                check=True, capture_output=True, text=True).stdout
        assert "block  @spammy.test" in listed
        bad = subprocess.run([*km, "add", *cfg, "block", "@x.test"], capture_output=True,
                             text=True)
        assert bad.returncode != 0 and "exactly one of" in bad.stderr
        time.sleep(2.1)  # the MX caches "no lists here" for two seconds
        with smtplib.SMTP(srv.host, srv.port("smtp"), source_address=("127.0.0.93", 0),
                          local_hostname="mail.sender.test") as c:
            c.sendmail("deals@news.spammy.test", ["bob@example.test"],
                       b"Subject: deal\r\n\r\nx\r\n")
        [junk] = mailbox_messages(srv.store, "bob@example.test", "Junk")
        assert b"sender-blocked" in junk
    finally:
        srv.stop()
