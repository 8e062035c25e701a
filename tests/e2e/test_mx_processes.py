"""Several processes serving port 25 ([smtp] mx_processes = 2).

The worker process shares the port with the main process; mail it accepts is
in the store, IMAP IDLE sessions (in the main process) hear of it, and it goes
away with its main process, whether that stops gently or is killed.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from keepmail import config as configmod
from tests.e2e.test_crash import kill_under_load, message_ids
from tests.support.server import (
    PASSWORD,
    ServerProcess,
    add_users,
    free_port_offset,
    write_config,
)


def socket_pids(port: int, state: str) -> dict[int, set[int]]:
    """{pid: {peer or local ports}} of the sockets on `port` in `state` (from ss)."""
    out = subprocess.run(["ss", "-Htnp", "state", state, f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    found: dict[int, set[int]] = {}
    for line in out.splitlines():
        fields = line.split()
        peer_port = int(fields[-2].rsplit(":", 1)[1]) if state != "listening" else 0
        for pid in re.findall(r"pid=(\d+)", line):
            found.setdefault(int(pid), set()).add(peer_port)
    return found


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def start(tmp_path: Path, per_ip: int = 100,
          **ports: int) -> tuple[ServerProcess, configmod.Config, int]:
    off = {"submission": 0, "submissions": 0, "imap": 0, "imaps": 0, "web": 0}
    off.update(ports)
    path = write_config(tmp_path, extra={"ports": off, "smtp": {"mx_processes": 2,
                                                               "max_connections_per_ip": per_ip}})
    cfg = configmod.load(path)
    add_users(cfg, "bob@example.test")
    server = ServerProcess(path, free_port_offset()).start()
    mx_port = 25 + server.port_offset
    # The worker binds the same port once it has started.
    wait_for(lambda: len(socket_pids(mx_port, "listening")) == 2)
    return server, cfg, mx_port


def worker_pid(server: ServerProcess, mx_port: int) -> int:
    assert server.proc is not None
    pids = set(socket_pids(mx_port, "listening")) - {server.proc.pid}
    assert len(pids) == 1, pids
    return pids.pop()


def connect_to(pid: int, mx_port: int) -> smtplib.SMTP:
    """An SMTP connection that the given process serves (the kernel chooses; we retry)."""
    for _ in range(200):
        client = smtplib.SMTP("127.0.0.1", mx_port, timeout=10)
        local_port = client.sock.getsockname()[1]
        if local_port in socket_pids(mx_port, "established").get(pid, set()):
            return client
        client.close()
    raise AssertionError(f"no connection landed on process {pid}")


def test_worker_accepts_mail_and_wakes_idle_in_the_main_process(tmp_path: Path) -> None:
    server, cfg, mx_port = start(tmp_path, imap=143)
    try:
        worker = worker_pid(server, mx_port)
        imap = imaplib.IMAP4("127.0.0.1", 143 + server.port_offset)
        imap.starttls()
        imap.login("bob@example.test", PASSWORD)
        imap.select("INBOX")
        tag = imap._new_tag().decode()
        imap.send(f"{tag} IDLE\r\n".encode())
        assert imap.readline().startswith(b"+")
        client = connect_to(worker, mx_port)
        client.sendmail("a@remote.test", ["bob@example.test"],
                        b"Message-ID: <w1@remote.test>\r\nSubject: via worker\r\n\r\nhi\r\n")
        client.quit()
        sent = time.monotonic()
        imap.sock.settimeout(5)
        line = imap.readline()
        assert re.match(rb"\* 1 EXISTS", line), line
        assert time.monotonic() - sent < 1.0
        imap.send(b"DONE\r\n")
        imap.logout()
        assert message_ids(cfg) == ["<w1@remote.test>"]
    finally:
        server.terminate()


def test_connections_are_spread_over_both_processes(tmp_path: Path) -> None:
    server, cfg, mx_port = start(tmp_path)
    try:
        clients = [smtplib.SMTP("127.0.0.1", mx_port, timeout=10) for _ in range(24)]
        owners = socket_pids(mx_port, "established")
        assert len(owners) == 2, owners
        for n, client in enumerate(clients):
            client.sendmail("a@remote.test", ["bob@example.test"],
                            f"Message-ID: <s{n}@remote.test>\r\n\r\nx\r\n".encode())
            client.quit()
        assert sorted(message_ids(cfg)) == sorted(f"<s{n}@remote.test>" for n in range(24))
    finally:
        server.terminate()


def test_per_ip_limit_holds_for_both_processes_together(tmp_path: Path) -> None:
    server, _cfg, mx_port = start(tmp_path, per_ip=4)
    try:
        accepted, refused = [], 0
        for _ in range(12):
            try:
                accepted.append(smtplib.SMTP("127.0.0.1", mx_port, timeout=10))
            except smtplib.SMTPConnectError as exc:
                assert exc.smtp_code == 421
                refused += 1
        # Each process allows 2: never more than 4 together, whatever the kernel's spread.
        assert 2 <= len(accepted) <= 4 and refused == 12 - len(accepted)
        for client in accepted:
            client.quit()
    finally:
        server.terminate()


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_worker_goes_with_its_main_process(tmp_path: Path, how: str) -> None:
    server, _cfg, mx_port = start(tmp_path)
    worker = worker_pid(server, mx_port)
    if how == "terminate":
        assert server.terminate() == 0
    else:
        server.kill()

    def gone() -> bool:
        try:
            with open(f"/proc/{worker}/stat") as f:
                return f.read().split(")")[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, 30)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mx_port), timeout=1).close()


def test_sigkill_with_two_processes_loses_no_acknowledged_message(tmp_path: Path) -> None:
    server, cfg, mx_port = start(tmp_path)
    kill_under_load(server, cfg, mx_port, kills=2, period=1.0, min_acked=20)
