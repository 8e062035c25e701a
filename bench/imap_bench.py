"""IMAP benchmark: keepmail against a private Dovecot, same workload, one run.

Workload (over TLS, port 993-style implicit TLS, for both servers):
  APPEND N messages (C parallel connections, LITERAL+), SELECT, FETCH headers
  of all, SEARCH (flags, header, body), STORE flags (one per command), and
  K idle connections in IDLE: memory per idle connection and the time until
  all of them hear about one new message.

Prints ops/s for each step, memory per idle connection, and keepmail/Dovecot
ratios. Dovecot (Debian dovecot-imapd) runs from a config in a temp folder on
a free port with passwd-file auth; the system Dovecot is never touched.

    python bench/imap_bench.py [--messages 10000] [--idle 1000] [--only keepmail]

For quick iterations: `--messages 2000 --skip-idle` (or `--steps fetch,search`
to time only some steps after the APPEND that fills the mailbox).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.peers import free_port, wait_port  # noqa: E402

USER = "bench@example.test"
PASSWORD = "bench password 1"


# -- a tiny async IMAP client -----------------------------------------------------------------------
class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w, self.n = reader, writer, 0

    @classmethod
    async def connect(cls, port: int, ctx: ssl.SSLContext) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       limit=16 * 1024 * 1024)
        c = cls(reader, writer)
        await reader.readline()
        return c

    async def cmd(self, text: bytes) -> list[bytes]:
        self.n += 1
        tag = b"t%d" % self.n
        self.w.write(tag + b" " + text + b"\r\n")
        lines = []
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError("closed")
            m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
            if m:
                line += await self.r.readexactly(int(m.group(1)))
                line += await self.r.readline()
            lines.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return lines

    async def login(self) -> None:
        await self.cmd(b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))

    async def close(self) -> None:
        self.w.close()
        try:
            await self.w.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


def sample_message(i: int) -> bytes:
    body = (f"Hello, this is message {i} of the benchmark.\r\n" * 20)
    if i % 100 == 0:
        body += "needle in the haystack\r\n"
    return (f"From: Sender {i % 50} <sender{i % 50}@example.org>\r\nTo: {USER}\r\n"
            f"Subject: benchmark message {i}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
            f"Message-ID: <bench{i}@example.org>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}").encode()


# -- processes and memory -----------------------------------------------------------------------------
def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        total += int(m.group(1)) if m else 0
    return total


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


KEEPMAIL_SERVER = r"""
import asyncio, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from keepmail import tls
from keepmail.imap.server import ImapConfig, ImapServer
from keepmail.imap.parser import Limits
from keepmail.store import Store, accounts
from keepmail.store.auth import Authenticator
from keepmail.store.passwords import hash_password

async def main():
    data, port, certdir = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    store = Store.open(data)
    def setup(c):
        accounts.add_domain(c, "example.test")
        accounts.add_account(c, "%s", hash_password("%s"))
    store.write_sync(setup)
    files = tls.CertFiles(certdir / "cert.pem", certdir / "key.pem")
    cfg = ImapConfig(max_connections=20000, max_connections_per_ip=20000, fail_delay=0,
                     limits=Limits(max_append=50 * 1024 * 1024))
    srv = ImapServer(store, Authenticator(store), tls.server_context(files), "127.0.0.1", port,
                     True, config=cfg)
    await srv.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
asyncio.run(main())
""".replace("%s", USER, 1).replace("%s", PASSWORD, 1)


class Peer:
    name = ""
    port = 0

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> list[int]: ...


class KeepmailPeer(Peer):
    name = "keepmail"

    def __init__(self, tmp: Path, certdir: Path) -> None:
        self.tmp, self.certdir = tmp, certdir
        self.port = free_port()

    def start(self) -> None:
        script = self.tmp / "server.py"
        script.write_text(KEEPMAIL_SERVER)
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.tmp / "data"),
                                      str(self.port), str(self.certdir), str(ROOT / "src")],
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()
        wait_port("127.0.0.1", self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def pids(self) -> list[int]:
        return [self.proc.pid]


class DovecotPeer(Peer):
    name = "dovecot"

    def __init__(self, tmp: Path, certdir: Path) -> None:
        self.tmp, self.certdir = tmp, certdir
        self.port = free_port()

    def start(self) -> None:
        home = self.tmp / "home"
        home.mkdir(parents=True)
        run = self.tmp / "run"
        run.mkdir()
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:  # Dovecot refuses to deliver as root: the mail user is nobody
            import pwd
            entry = pwd.getpwnam("nobody")
            uid, gid = entry.pw_uid, entry.pw_gid
            shutil.chown(home, uid, gid)
        (self.tmp / "passwd").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n")
        conf = self.tmp / "dovecot.conf"
        conf.write_text(f"""
base_dir = {run}
state_dir = {self.tmp / 'state'}
instance_name = kmbench{self.port}
listen = 127.0.0.1
protocols = imap
ssl = required
ssl_cert = <{self.certdir / 'cert.pem'}
ssl_key = <{self.certdir / 'key.pem'}
log_path = {self.tmp / 'dovecot.log'}
auth_mechanisms = plain
disable_plaintext_auth = yes
mail_location = maildir:{home}/Maildir
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
default_login_user = dovenull
default_internal_user = dovecot
default_process_limit = 5000
default_client_limit = 20000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.tmp / 'passwd'}
}}
userdb {{
  driver = passwd-file
  args = {self.tmp / 'passwd'}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
  service_count = 0
  client_limit = 20000
  process_min_avail = 1
}}
service imap {{
  process_limit = 5000
}}
service anvil {{
  client_limit = 30000
}}
service auth {{
  client_limit = 30000
}}
protocol imap {{
  mail_max_userip_connections = 20000
}}
""")
        (self.tmp / "state").mkdir()
        self.conf = conf
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.port)

    def stop(self) -> None:
        log = self.tmp / "dovecot.log"
        if os.environ.get("IMAP_BENCH_LOG") and log.exists():
            print(log.read_text()[-3000:])
        subprocess.run(["doveadm", "-c", str(self.conf), "stop"], capture_output=True)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)


# -- the workload ------------------------------------------------------------------------------------
async def timed(label: str, ops: int, fn: Callable[[], Awaitable[object]],
                results: dict[str, float]) -> None:
    start = time.perf_counter()
    await fn()
    elapsed = time.perf_counter() - start
    results[label] = ops / elapsed
    print(f"  {label:<28} {ops:>7} ops in {elapsed:7.2f} s = {ops / elapsed:10.1f} ops/s",
          flush=True)


async def workload(peer: Peer, args: argparse.Namespace, ctx: ssl.SSLContext) -> dict[str, float]:
    results: dict[str, float] = {}
    n = args.messages
    msgs = [sample_message(i) for i in range(n)]

    async def appender(part: list[bytes]) -> None:
        c = await Client.connect(peer.port, ctx)
        await c.login()
        for m in part:
            await c.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(m), m))
        await c.close()

    conns = args.append_connections
    await timed("APPEND", n, lambda: asyncio.gather(
        *(appender(msgs[i::conns]) for i in range(conns))), results)
    c = await Client.connect(peer.port, ctx)
    await c.login()
    steps = set(args.steps.split(",")) if args.steps else None

    def want(step: str) -> bool:
        return steps is None or step in steps
    await timed("SELECT", 1, lambda: c.cmd(b"SELECT INBOX"), results)
    if want("fetch"):
        await timed("FETCH headers (per msg)", n, lambda: c.cmd(
            b"FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS "
            b"(FROM TO SUBJECT DATE MESSAGE-ID)])"), results)

    async def searches() -> None:
        for q in (b"SEARCH UNSEEN", b"SEARCH FROM sender7", b"SEARCH SUBJECT \"message 77\"",
                  b"SEARCH BODY needle"):
            await c.cmd(q)
    if want("search"):
        await timed("SEARCH (4 kinds, per cmd)", 4, searches, results)
        # again: the same searches repeated (warm caches, if any)
        await timed("SEARCH again (per cmd)", 4, searches, results)

    async def stores() -> None:
        for uid in range(1, args.stores + 1):
            await c.cmd(b"UID STORE %d +FLAGS (\\Flagged)" % uid)
    if want("store"):
        await timed("STORE (one per command)", args.stores, stores, results)
    if want("storeall"):
        await timed("STORE 1:* (per msg)", n,
                    lambda: c.cmd(b"STORE 1:* +FLAGS.SILENT (\\Seen)"), results)
    if not args.skip_idle:
        await idle_phase(peer, args, ctx, results, c)
    await c.close()
    return results


async def idle_phase(peer: Peer, args: argparse.Namespace, ctx: ssl.SSLContext,
                     results: dict[str, float], actor: Client) -> None:
    await asyncio.sleep(1)
    before = pss_kib(peer.pids())
    idlers: list[Client] = []

    async def one() -> Client:
        cl = await Client.connect(peer.port, ctx)
        await cl.login()
        await cl.cmd(b"SELECT INBOX")
        cl.w.write(b"i IDLE\r\n")
        await cl.r.readline()
        return cl
    for start in range(0, args.idle, 50):
        idlers += await asyncio.gather(*(one() for _ in range(min(50, args.idle - start))))
    await asyncio.sleep(2)
    after = pss_kib(peer.pids())
    per = (after - before) / max(1, args.idle)
    results["idle_kib"] = per
    print(f"  {'idle IDLE connections':<28} {args.idle:>7} conns: {per:8.1f} KiB each "
          f"(PSS {before} -> {after} KiB)", flush=True)
    m = sample_message(999_999)
    start = time.perf_counter()
    await actor.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(m), m))

    async def hear(cl: Client) -> None:
        while b"EXISTS" not in await cl.r.readline():
            pass
    await asyncio.gather(*(hear(cl) for cl in idlers))
    elapsed = time.perf_counter() - start
    results["idle_notify_s"] = elapsed
    print(f"  {'IDLE wake-up of all':<28} {args.idle:>7} conns: {elapsed:8.3f} s", flush=True)
    for cl in idlers:
        cl.w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--stores", type=int, default=1000)
    ap.add_argument("--append-connections", type=int, default=8)
    ap.add_argument("--only", choices=["keepmail", "dovecot"])
    ap.add_argument("--skip-idle", action="store_true",
                    help="skip the idle-connection memory and wake-up phase")
    ap.add_argument("--steps", default="",
                    help="comma list of fetch,search,store,storeall to run (default: all)")
    args = ap.parse_args()
    from keepmail import tls
    with tempfile.TemporaryDirectory(prefix="imap-bench-") as tmpname:
        tmp = Path(tmpname)
        tmp.chmod(0o755)
        certdir = tmp / "certs"
        files = tls.make_certificate(["localhost", "127.0.0.1"], certdir / "cert.pem",
                                     certdir / "key.pem")
        os.chmod(files.key, 0o644)  # Dovecot reads it as root; fine in a private temp dir
        ctx = ssl.create_default_context(cafile=str(files.cert))
        ctx.check_hostname = False
        all_results: dict[str, dict[str, float]] = {}
        peers: list[type[Peer]] = [KeepmailPeer, DovecotPeer]
        for cls in peers:
            if args.only and cls.name != args.only:
                continue
            if cls is DovecotPeer and shutil.which("dovecot") is None:
                print("dovecot not installed: apt-get install dovecot-imapd")
                continue
            peer = cls(tmp / cls.name, certdir)  # type: ignore[call-arg]
            (tmp / cls.name).mkdir()
            print(f"{cls.name}:", flush=True)
            peer.start()
            try:
                all_results[cls.name] = asyncio.run(workload(peer, args, ctx))
            finally:
                peer.stop()
        if len(all_results) == 2:
            k, d = all_results["keepmail"], all_results["dovecot"]
            print("keepmail / dovecot:")
            for key in k:
                if key in ("idle_kib", "idle_notify_s") or key not in d:
                    continue
                print(f"  {key:<28} throughput ratio {k[key] / d[key]:6.2f}x")
            if "idle_kib" in k and "idle_kib" in d:
                    print(f"  {'idle memory per connection':<28} {k['idle_kib']:.1f} KiB vs "
                      f"{d['idle_kib']:.1f} KiB "
                      f"(ratio {k['idle_kib'] / max(d['idle_kib'], 0.1):.2f})")


if __name__ == "__main__":
    main()
