"""A 250 is a promise: SIGKILL during traffic never loses an acknowledged message,
and SIGTERM finishes the sessions in flight."""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from pathlib import Path

from keepmail import config as configmod
from keepmail.store import Store
from tests.support.server import (
    ServerProcess,
    add_users,
    free_port_offset,
    mailbox_messages,
    write_config,
)


class Sender(threading.Thread):
    """Sends messages as fast as it can; remembers which got a 250."""

    def __init__(self, host: str, port: int, name: str) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.prefix = host, port, name
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.n = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with smtplib.SMTP(self.host, self.port, timeout=5) as c:
                    while not self.stop.is_set():
                        self.n += 1
                        mid = f"<{self.prefix}.{self.n}@remote.test>"
                        msg = f"Message-ID: {mid}\r\nSubject: n\r\n\r\n{'x' * 300}\r\n"
                        c.sendmail("a@remote.test", ["bob@example.test"], msg.encode())
                        self.acked.append(mid)  # only reached after the 250
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)


def message_ids(cfg: configmod.Config) -> list[str]:
    store = Store.open(cfg.data_dir, cfg.key_file)
    try:
        return [m.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
                for m in mailbox_messages(store, "bob@example.test")]
    finally:
        store.close()


def start_server(tmp_path: Path, mx_processes: int = 1) -> tuple[ServerProcess, configmod.Config]:
    path = write_config(tmp_path, extra={"ports": {"submission": 0, "submissions": 0,
                                                   "imap": 0, "imaps": 0, "web": 0},
                                         "smtp": {"mx_processes": mx_processes}})
    cfg = configmod.load(path)
    add_users(cfg, "bob@example.test")
    return ServerProcess(path, free_port_offset()).start(), cfg


def kill_under_load(server: ServerProcess, cfg: configmod.Config, port: int, *, kills: int,
                    period: float, min_acked: int) -> None:
    """Senders write as fast as they can while the server is SIGKILLed and restarted;
    afterwards every acknowledged Message-ID is in the mailbox exactly once."""
    senders = [Sender(server.host, port, f"s{i}") for i in range(4)]
    for s in senders:
        s.start()
    try:
        for _ in range(kills):
            time.sleep(period)
            server.kill()
            time.sleep(0.2)
            server.start()
        time.sleep(period)
    finally:
        for s in senders:
            s.stop.set()
        for s in senders:
            s.join(10)
    server.terminate()
    acked = [mid for s in senders for mid in s.acked]
    stored = message_ids(cfg)
    assert len(acked) > min_acked, "the senders should have got far"
    missing = [mid for mid in acked if stored.count(mid) != 1]
    assert not missing, f"{len(missing)} acknowledged messages missing or duplicated"
    assert len(stored) == len(set(stored)), "a message was stored twice"


def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    server, cfg = start_server(tmp_path)
    kill_under_load(server, cfg, 25 + server.port_offset, kills=3, period=0.8, min_acked=50)


def test_sigterm_finishes_sessions_in_flight(tmp_path: Path) -> None:
    server, cfg = start_server(tmp_path)
    port = 25 + server.port_offset
    # A client in the middle of DATA when SIGTERM arrives still gets its 250.
    sock = socket.create_connection((server.host, port))
    f = sock.makefile("rwb")

    def cmd(line: bytes) -> bytes:
        f.write(line + b"\r\n")
        f.flush()
        reply = f.readline()
        while reply[3:4] == b"-":
            reply = f.readline()
        return reply

    f.readline()
    cmd(b"EHLO c.test")
    cmd(b"MAIL FROM:<a@remote.test>")
    cmd(b"RCPT TO:<bob@example.test>")
    assert cmd(b"DATA").startswith(b"354")
    f.write(b"Message-ID: <inflight@remote.test>\r\n\r\nhalf")
    f.flush()
    idle = socket.create_connection((server.host, port))
    assert idle.recv(100).startswith(b"220")
    time.sleep(0.3)
    assert server.proc is not None
    server.proc.send_signal(15)
    time.sleep(0.5)
    assert idle.recv(100).startswith(b"421"), "idle clients are told to come back later"
    assert cmd(b" of it\r\n.").startswith(b"250")
    assert cmd(b"NOOP").startswith(b"421")
    assert server.proc.wait(30) == 0
    assert message_ids(cfg) == ["<inflight@remote.test>"]
