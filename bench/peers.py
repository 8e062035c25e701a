"""Peers for benchmarks: private Postfix instances in a temp folder, and keepmail.

Nothing here touches the system's own Postfix: each instance gets its own
config and queue directory and listens on a loopback port of our choosing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.postfix import MASTER_CF, free_port, wait_port  # noqa: E402

__all__ = ["ROOT", "PrivatePostfix", "free_port", "smtp_source", "wait_port"]


class PrivatePostfix:
    """A Postfix instance with its own config and queue under `root`.

    main_cf holds extra main.cf lines; the smtpd listens on host:port.
    """

    def __init__(self, root: Path, host: str, port: int, main_cf: str, master_extra: str = ""):
        self.root, self.host, self.port = root, host, port
        self.config_dir = root / "etc"
        self.queue_dir = root / "spool"
        self.main_cf, self.master_extra = main_cf, master_extra

    def write(self) -> None:
        # Postfix drops privileges: its user must be able to reach the folders.
        self.root.chmod(0o755)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "data", "postfix")
        (self.config_dir / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.root / 'data'}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = {self.host}
inet_protocols = ipv4
myhostname = postfix.bench.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP
maillog_file = /dev/stdout
in_flow_delay = 0
smtpd_peername_lookup = no
biff = no
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
alias_maps =
alias_database =
{self.main_cf}
""")
        master = MASTER_CF.format(host=self.host, port=self.port) + self.master_extra
        (self.config_dir / "master.cf").write_text(master)


    def start(self) -> None:
        self.write()
        cmd = ["postfix", "-c", str(self.config_dir)]
        subprocess.run([*cmd, "set-permissions", "create-missing"], capture_output=True)
        # start-fg keeps the master in the foreground, logging to our file.
        self.log = open(self.root / "maillog", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*cmd, "start-fg"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_port(self.host, self.port)
        except RuntimeError:
            raise RuntimeError("postfix did not start: "
                               + (self.root / "maillog").read_text()[-2000:]) from None

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.config_dir), "stop"], capture_output=True)
        self.proc.wait(30)
        self.log.close()

    def queue_count(self) -> int:
        total = 0
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            d = self.queue_dir / sub
            if d.exists():
                total += sum(1 for p in d.rglob("*") if p.is_file())
        return total


def smtp_source(host: str, port: int, *, messages: int, sessions: int, size: int,
                rcpt: str, sender: str = "bench@remote.test", reuse: bool = True) -> float:
    """Run Postfix's smtp-source; returns seconds taken.

    reuse=True passes -d: several messages per connection, as busy MTAs do.
    """
    start = time.monotonic()
    args = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", sender, "-t", rcpt]
    if reuse:
        args.append("-d")
    subprocess.run([*args, f"{host}:{port}"], check=True, capture_output=True, timeout=600)
    return time.monotonic() - start
