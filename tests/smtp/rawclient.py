"""A raw socket SMTP client for tests that must send exact bytes."""

from __future__ import annotations

import socket
import ssl
import time


class Raw:
    def __init__(self, host: str, port: int, timeout: float = 10) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection((host, port), timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, bytes]:
        """Read one (possibly multi-line) reply."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; got {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"\n".join(lines)

    def cmd(self, line: bytes) -> tuple[int, bytes]:
        self.send(line + b"\r\n")
        return self.reply()

    def quiet(self, wait: float = 0.5) -> bytes:
        """Whatever arrives within wait seconds (to prove nothing more was answered)."""
        self.sock.settimeout(wait)
        end = time.monotonic() + wait
        data = self.buf
        self.buf = b""
        try:
            while time.monotonic() < end:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ssl.SSLError):
            pass
        return data

    def close(self) -> None:
        self.sock.close()
