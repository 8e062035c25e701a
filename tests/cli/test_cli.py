"""The keepmail command as an operator uses it: init, users, domains, aliases, logs, errors."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, free_port_offset, shared_dns


def km(*args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "keepmail.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def initialized(tmp_path: Path) -> Path:
    done = km("init", "--domain", "example.org", "--hostname", "mail.example.org",
              "--data", str(tmp_path / "km"))
    assert "Admin account: postmaster@example.org" in done.stdout
    return tmp_path / "km" / "keepmail.toml"


def test_init_writes_everything_and_prints_dns(initialized: Path) -> None:
    data = initialized.parent
    assert (data / "keys" / "storage.key").stat().st_mode & 0o777 == 0o600
    assert (data / "tls" / "cert.pem").exists() and (data / "tls" / "key.pem").exists()
    text = initialized.read_text()
    assert 'hostname = "mail.example.org"' in text and "# " in text  # commented
    done = km("init", "--domain", "example.org", "--hostname", "m", "--data", str(data), ok=False)
    assert done.returncode != 0 and "already exists" in done.stderr


def test_init_prints_dns_records(tmp_path: Path) -> None:
    done = km("init", "--domain", "example.org", "--hostname", "mail.example.org",
              "--data", str(tmp_path / "x"))
    out = done.stdout
    assert "example.org." in out and "MX" in out and "10 mail.example.org." in out
    assert "v=spf1 mx -all" in out and "_dmarc.example.org." in out


def test_users_domains_aliases(initialized: Path) -> None:
    cfg = ["--config", str(initialized)]
    km("domain", "add", *cfg, "second.org")
    assert km("domain", "list", *cfg).stdout.split() == ["example.org", "second.org"]
    km("user", "add", *cfg, "ann@example.org", "--password-stdin", stdin="long enough pw\n")
    done = km("user", "add", *cfg, "ann@example.org", "--password-stdin",
              stdin="long enough pw\n", ok=False)
    assert "already exists" in done.stderr and "Traceback" not in done.stderr
    done = km("user", "add", *cfg, "x@unknown.org", "--password-stdin", stdin="long enough\n",
              ok=False)
    assert "keepmail domain add unknown.org" in done.stderr
    done = km("user", "add", *cfg, "y@example.org", "--password-stdin", stdin="short\n", ok=False)
    assert "too short" in done.stderr
    km("user", "passwd", *cfg, "ann@example.org", "--password-stdin", stdin="another long pw\n")
    km("user", "disable", *cfg, "ann@example.org")
    assert "ann@example.org  (disabled)" in km("user", "list", *cfg).stdout
    km("alias", "add", *cfg, "team@example.org", "ann@example.org", "out@remote.test")
    km("alias", "add", *cfg, "@second.org", "ann@example.org")
    listing = km("alias", "list", *cfg).stdout
    assert "team@example.org -> ann@example.org, out@remote.test" in listing
    assert "@second.org -> ann@example.org" in listing
    km("alias", "del", *cfg, "team@example.org")
    done = km("user", "app-password", "add", *cfg, "ann@example.org", "phone")
    assert "app password 'phone'" in done.stdout
    assert "phone" in km("user", "app-password", "list", *cfg, "ann@example.org").stdout
    km("user", "app-password", "del", *cfg, "ann@example.org", "phone")
    km("user", "del", *cfg, "ann@example.org", "--yes")
    assert "ann@example.org" not in km("user", "list", *cfg).stdout
    done = km("domain", "del", *cfg, "example.org", ok=False)
    assert "still has 1 account" in done.stderr


@pytest.mark.parametrize("content, expected", [
    ("[server]\nhostnme = 'x'\n", "unknown key 'hostnme' in [server]; allowed keys: hostname"),
    ("[smtp]\nmax_recipients = 'many'\n", "[smtp] max_recipients = 'many': must be a whole number"),
    ("[ports]\nsmtp = 70000\n", "[ports] smtp = 70000: must be 0 (off) to 65535"),
    ("[smtp]\nmax_messages_per_connection = 0\n",
     "[smtp] max_messages_per_connection = 0: must be at least 1"),
    ("[server\n", "not valid TOML"),
    ("[spam]\njunk_score = 20.0\n", "junk_score <= quarantine_score"),
    ("[tls]\ncert_file = 'a.pem'\n", "cert_file and key_file go together"),
])
def test_config_errors_name_file_key_and_fix(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "keepmail.toml"
    path.write_text(content)
    done = km("serve", "--config", str(path), ok=False)
    assert done.returncode != 0
    assert str(path) in done.stderr and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    done = km("check", "--config", str(tmp_path / "none.toml"), ok=False)
    assert "no such file" in done.stderr and "keepmail init" in done.stderr


def test_log_search_and_show_after_delivery(initialized: Path) -> None:
    cfg = ["--config", str(initialized)]
    km("user", "add", *cfg, "bob@example.org", "--password-stdin", stdin="long enough pw\n")
    text = initialized.read_text().replace('listen = ["0.0.0.0"]', 'listen = ["127.0.0.1"]')
    text = text.replace("greylisting = true", "greylisting = false").replace(
        "nameservers = []", f'nameservers = ["{shared_dns().nameserver}"]')
    initialized.write_text(text)
    server = ServerProcess(initialized, free_port_offset()).start()
    try:
        with smtplib.SMTP("127.0.0.1", 25 + server.port_offset) as c:
            c.sendmail("eve@remote.test", ["bob@example.org"],
                       b"Subject: quarterly figures\r\nMessage-ID: <q1@remote.test>\r\n\r\nhi\r\n")
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                c.sendmail("eve@remote.test", ["ghost@example.org"], b"Subject: x\r\n\r\nx\r\n")
        time.sleep(0.6)  # the recorder writes in batches
        found = km("log", "search", *cfg, "--to", "bob@example.org").stdout
        assert "quarterly figures" in found and "accepted" in found
        trace = found.split()[0]
        assert km("log", "search", *cfg, "quarterly").stdout.split()[0] == trace
        assert km("log", "search", *cfg, "--message-id", "q1@remote.test").stdout.split()[0] == trace
        assert km("log", "search", *cfg, "--ip", "127.0.0.1", "--kind", "message").stdout
        shown = km("log", "show", *cfg, trace).stdout
        for expected in ("connect", "MAIL FROM:<eve@remote.test>", "RCPT TO:<bob@example.org>",
                         "verdict", "delivered", "250 2.0.0 Queued as " + trace):
            assert expected.lower() in shown.lower(), expected
        refused = km("log", "search", *cfg, "--from", "eve@remote.test").stdout
        assert "ghost" not in refused or "rejected" in refused or "abandoned" in refused
    finally:
        assert server.terminate() == 0


def test_log_show_reads_an_older_recorder_file(initialized: Path) -> None:
    """`keepmail log` on data from before event_log (server not started since)."""
    from tests.recorder.test_recorder import write_old_recorder

    write_old_recorder(initialized.parent / "recorder.db")
    shown = km("log", "show", "--config", str(initialized), "t1").stdout
    assert "connect" in shown and "delivered" in shown and "250 ok" in shown


def test_demo_runs_and_explains_itself(tmp_path: Path) -> None:
    offset = free_port_offset()
    proc = subprocess.Popen([sys.executable, "-m", "keepmail.cli", "demo", "--data",
                             str(tmp_path / "demo"), "--port-offset", str(offset),
                             "--dns", shared_dns().nameserver],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        out = ""
        assert proc.stdout is not None
        while "Try it" not in out and time.monotonic() < deadline:
            out += proc.stdout.readline()
        while "https://" not in out and time.monotonic() < deadline:
            out += proc.stdout.readline()
        assert "alice@example.test" in out and "password:" in out
        # Run the "try it" commands the demo printed, as a newcomer would.
        commands = [line.strip() for line in out.splitlines()
                    if line.strip().startswith(("swaks", "python3"))]
        assert len(commands) >= 4, out
        time.sleep(0.5)
        for command in commands:
            if command.startswith("swaks") and not shutil.which("swaks"):
                continue
            done = subprocess.run(command, shell=True, capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            if command.startswith("swaks"):
                assert "250 2.0.0 Queued" in done.stdout, done.stdout
            if "imaplib" in command:
                assert "hello" in done.stdout.lower() or "Subject" in done.stdout, done.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    assert os.path.exists(tmp_path / "demo" / "keepmail.db")
