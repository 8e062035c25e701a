"""A private Postfix instance and smtp-sink on loopback, for tests and the benchmark.

Postfix runs from its own config and queue directories in a temp folder (the
system postfix is never touched) and relays everything to an smtp-sink; the
sink can dump messages to files so a test can read what arrived.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Sink:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    dump_dir: Path | None = None

    @classmethod
    def start(cls, host: str, port: int, dump_dir: Path | None = None,
              backlog: int = 256) -> Sink:
        args = ["smtp-sink", "-u", "root"]
        if dump_dir is not None:
            dump_dir.mkdir(parents=True, exist_ok=True)
            args += ["-d", f"{dump_dir}/%M."]
        args += [f"{host}:{port}", str(backlog)]
        # Nothing reads its output: a pipe would fill up and stall the sink.
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(host, port)
        return cls(host, port, proc, dump_dir)

    def messages(self) -> list[bytes]:
        if self.dump_dir is None:
            return []
        return [p.read_bytes() for p in sorted(self.dump_dir.iterdir())]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Postfix:
    directory: Path
    host: str
    port: int

    @property
    def config_dir(self) -> Path:
        return self.directory / "etc"

    @classmethod
    def start(cls, host: str, port: int, relay_to: str, *,
              domains: str = "", extra: dict[str, str] | None = None) -> Postfix:
        # Postfix's daemons run as the postfix user and must reach their queue:
        # pytest's tmp_path sits under a 0700 folder, so use a folder of our own.
        directory = Path(tempfile.mkdtemp(prefix="keepmail-postfix-"))
        directory.chmod(0o755)
        pf = cls(directory, host, port)
        etc, spool, data = pf.config_dir, directory / "spool", directory / "data"
        for d in (etc, spool, data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix", "postfix")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(spool),
            "data_directory": str(data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": f"postfix-{port}.test",
            "mydestination": "",
            "inet_interfaces": "all",   # the master.cf entry binds the address
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": domains or "$mydestination",
            "relayhost": f"[{relay_to.rpartition(':')[0]}]:{relay_to.rpartition(':')[2]}",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "maillog_file": str(directory / "maillog"),
            "maillog_file_prefixes": str(directory),
            "smtputf8_enable": "yes",
            "default_destination_concurrency_limit": "20",
            "smtp_connection_cache_on_demand": "yes",
            "in_flow_delay": "0",
            "smtpd_client_connection_rate_limit": "0",
            "biff": "no",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
        }
        settings.update(extra or {})
        (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (etc / "master.cf").write_text(MASTER_CF.format(host=host, port=port))
        subprocess.run(["postfix", "-c", str(etc), "set-permissions"], check=False,
                       capture_output=True)
        result = subprocess.run(["postfix", "-c", str(etc), "start"], capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stdout}{result.stderr}")
        wait_port(host, port)
        return pf

    def queue_empty(self) -> bool:
        spool = self.directory / "spool"
        return not any(any(p.iterdir()) for d in ("incoming", "active", "deferred", "maildrop")
                       if (p := spool / d).exists() for _ in [0])

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.config_dir), "stop"], capture_output=True)
        # master exits asynchronously; give it a moment so the port is released.
        time.sleep(0.3)
        shutil.rmtree(self.directory, ignore_errors=True)
