"""Outbound throughput: keepmail vs a private Postfix, both relaying to the same smtp-sink.

N messages are submitted by a load generator (a separate process, C parallel
connections, pipelined MAIL/RCPT/DATA) and timed until the last one has reached
the sink and left the sender's queue (keepmail: its queue rows deleted in a
committed transaction; Postfix: its queue file removed):
  keepmail: submission on a loopback port (STARTTLS + AUTH, DKIM signing with
            RSA-2048 and Ed25519, durable queue with group commit) -> agent -> sink
  Postfix:  smtpd (STARTTLS, relay for mynetworks, no DKIM) -> queue -> smtp -> sink
            (no AUTH, which would need a SASL server, and no DKIM, which needs a
            milter; --postfix-plain: the load generator talks plain SMTP to Postfix,
            as this benchmark did before: Postfix then skips TLS entirely, and so
            does the load generator, on the same two cores)
It prints end-to-end messages/s for both, the ratio, server CPU per message, and
DKIM signatures/s (keepmail's signer through `cryptography` vs dkimpy's pure-Python RSA).

keepmail runs on uvloop when it is installed, as `keepmail serve` does (--no-uvloop:
asyncio's own loop); the load generator runs on asyncio's loop for both.

usage: python bench/outbound_bench.py [-n 2000] [-c 8] [--size 2000] [--postfix-plain]
       [--no-uvloop] [--keepmail-only] [-v]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from keepmail.outbound.smtpclient import SmtpClient  # noqa: E402

SINK, KEEPMAIL, POSTFIX = "127.0.0.121", "127.0.0.122", "127.0.0.123"
USER, PASSWORD = "bench@a.test", "bench password 1"
VERBOSE = False
TIMEOUT = 300.0   # seconds a run may take before the benchmark gives up
CPU: dict[str, float] = {}   # CPU seconds used by each server in its timed part


def self_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, summed by thread name."""
    import os
    import threading
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = names.get(int(task.name), "?").rstrip("_0123456789")
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        out[name + "(sys)"] = out.get(name + "(sys)", 0.0) + int(fields[12]) / tick
    return out


def watch_gc() -> list[float]:
    """[seconds, collections, full collections] of the cyclic GC from now on."""
    import gc
    out = [0.0, 0, 0]
    began = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            out[0] += time.perf_counter() - began[0]
            out[1] += 1
            out[2] += info["generation"] == 2

    gc.callbacks.append(callback)
    return out


def tree_cpu(master: int) -> float:
    """CPU seconds of Postfix's master and its daemons (live ones, and reaped ones)."""
    import os
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == master:   # utime, stime, and cutime, cstime of reaped children
            total += sum(int(f) for f in fields[11:15]) / tick
        elif ppid == master:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def make_message(i: int, size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    body = line * max(1, size // len(line))
    return (f"From: Bench <{USER}>\r\nTo: <rcpt{i}@sink.test>\r\nSubject: bench {i}\r\n"
            f"Message-ID: <bench{i}@a.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n").encode() + body


# -- load generator (runs as a child process) ------------------------------------------
async def client_session(host: str, port: int, auth: bool, tls: bool = False) -> SmtpClient:
    import ssl
    client = await SmtpClient.connect(host, port, timeout=60, record=lambda *a, **k: None)
    await client.greeting()
    await client.ehlo("bench.client")
    if auth or tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        reply = await client.starttls(ctx, None)
        assert reply.code == 220, reply
        await client.ehlo("bench.client")
    if auth:
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        reply = await client.command(f"AUTH PLAIN {token}")
        assert reply.code == 235, reply
    return client


async def client_worker(client: SmtpClient, ids: list[int], size: int) -> None:
    for i in ids:
        mail, rcpts, final = await client.transaction(USER, [], [f"rcpt{i}@sink.test"],
                                                      make_message(i, size))
        assert final is not None and final.code == 250, (mail, rcpts, final)
    await client.quit()


async def run_clients(host: str, port: int, auth: bool, n: int, c: int, size: int,
                      tls: bool = False) -> None:
    # Log in one connection at a time (argon2 is slow on purpose and the
    # server caches a success), then wait for "go": the timed part is the
    # mail, not the logins.
    clients = [await client_session(host, port, auth, tls) for _ in range(c)]
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await asyncio.gather(*(client_worker(clients[k], list(range(k, n, c)), size)
                           for k in range(c)))


def client_main(args: argparse.Namespace) -> None:
    asyncio.run(run_clients(args.host, args.port, args.auth, args.n, args.c, args.size,
                            args.tls))


def spawn_clients(host: str, port: int, auth: bool, n: int, c: int,
                  size: int, tls: bool = False) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--client", "--host", host, "--port", str(port),
           "-n", str(n), "-c", str(c), "--size", str(size)] + (["--auth"] if auth else []) \
        + (["--tls"] if tls else [])
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def go(proc: subprocess.Popen[bytes]) -> None:
    """Wait until the load generator's connections are ready, then start it."""
    assert proc.stdout is not None and proc.stdin is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("load generator failed to connect")
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


# -- keepmail ----------------------------------------------------------------------------
async def bench_keepmail(n: int, c: int, size: int, sink_port: int, workdir: Path) -> float:
    from keepmail import tls
    from keepmail.outbound.agent import DeliveryAgent
    from keepmail.outbound.dkimkeys import DkimKeys
    from keepmail.outbound.mxlookup import DnsClient
    from keepmail.outbound.settings import OutboundSection
    from keepmail.outbound.submission import SubmissionHandler
    from keepmail.recorder import Recorder
    from keepmail.smtp.server import ListenerConfig, SmtpServer
    from keepmail.store import Store, accounts
    from keepmail.store import queue as q
    from keepmail.store.auth import Authenticator
    from keepmail.store.passwords import hash_password
    from tests.outbound.peers import LocalDns

    dns = LocalDns(f"sink.test. 60 IN MX 10 mx.sink.test.\nmx.sink.test. 60 IN A {SINK}\n")
    dns.start()
    store = Store.open(workdir / "keepmail")
    recorder = Recorder(workdir / "recorder.db")

    def setup(conn: object) -> None:
        accounts.add_domain(conn, "a.test")  # type: ignore[arg-type]
        accounts.add_account(conn, USER, hash_password(PASSWORD))  # type: ignore[arg-type]

    store.write_sync(setup)
    dkim = DkimKeys(store)
    dkim.ensure("a.test")
    settings = OutboundSection(remote_port=sink_port, max_per_domain=20, mta_sts=False,
                               dane=False, retry_base=1.0, retry_max=2.0)
    agent = DeliveryAgent(store, recorder, settings, hostname="mail.a.test",
                          dns=DnsClient([dns.nameserver], 5.0))
    handler = SubmissionHandler(store, Authenticator(store), agent, dkim=dkim)
    files = tls.ensure_self_signed("mail.a.test", workdir / "tls")
    server = SmtpServer(ListenerConfig("submission", [KEEPMAIL], 0, max_connections_per_ip=100),
                        handler, hostname="mail.a.test", recorder=recorder,
                        tls_context=tls.server_context(files))
    await server.start()
    await agent.start()
    try:
        proc = spawn_clients(KEEPMAIL, server.ports[0], True, n, c, size)
        await asyncio.to_thread(go, proc)
        gc_time = watch_gc() if VERBOSE else None
        start, cpu, threads = time.perf_counter(), self_cpu(), thread_cpu()
        deadline = start + TIMEOUT
        # Done when every message has been delivered and its queue rows are gone
        # (committed), as Postfix is done when its queue files are gone.
        while agent.delivered < n or store.read_now(q.count) != (0, 0):
            if proc.poll() not in (None, 0):
                raise RuntimeError("keepmail load generator failed")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"keepmail delivered only {agent.delivered} of {n}")
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        CPU["keepmail"] = self_cpu() - cpu
        if gc_time is not None:
            import gc
            gc.callbacks.clear()
            print(f"  keepmail garbage collection: {gc_time[1]} runs (full: {gc_time[2]}), "
                  f"{1000 * gc_time[0] / n:.3f} ms per message")
        if VERBOSE:
            after = thread_cpu()
            print("  keepmail CPU ms per message by thread: " + ", ".join(
                f"{k} {1000 * (v - threads.get(k, 0.0)) / n:.2f}"
                for k, v in sorted(after.items(), key=lambda kv: -kv[1])
                if v - threads.get(k, 0.0) > 0))
        await asyncio.to_thread(proc.wait)
        if VERBOSE:
            print(f"  keepmail store: {store.db.writes} writes in {store.db.commits} commits")
        return elapsed
    finally:
        await server.close(grace=5)
        await agent.close()
        recorder.close()
        store.close()
        dns.stop()


# -- Postfix -----------------------------------------------------------------------------
def spool_files(spool: Path) -> int:
    return sum(1 for d in ("maildrop", "incoming", "active", "deferred", "hold")
               if (spool / d).exists() for p in (spool / d).rglob("*") if p.is_file())


def bench_postfix(n: int, c: int, size: int, sink_port: int, workdir: Path,
                  tls: bool = False) -> float:
    from keepmail import tls as kmtls
    from tests.support.postfix import Postfix, free_port

    port = free_port(POSTFIX)
    extra = {"default_process_limit": "100", "message_size_limit": "0",
             # retry as fast as keepmail does in this run
             "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
             "queue_run_delay": "1s"}
    if tls:
        # smtpd reads its key as root before it drops privileges.
        files = kmtls.ensure_self_signed("postfix.test", workdir / "postfix-tls")
        extra |= {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(files.cert),
                  "smtpd_tls_key_file": str(files.key)}
    pf = Postfix.start(POSTFIX, port, f"{SINK}:{sink_port}", domains="sink.test", extra=extra)
    try:
        time.sleep(0.5)
        proc = spawn_clients(POSTFIX, port, False, n, c, size, tls)
        master = int((pf.directory / "spool" / "pid" / "master.pid").read_text().split()[0])
        go(proc)
        start, cpu = time.perf_counter(), tree_cpu(master)
        proc.wait()
        if proc.returncode != 0:
            raise RuntimeError("Postfix load generator failed")
        spool = pf.directory / "spool"
        while spool_files(spool):
            if time.perf_counter() > start + TIMEOUT:
                raise RuntimeError(f"Postfix still holds {spool_files(spool)} queue files")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        CPU["postfix"] = tree_cpu(master) - cpu
        return elapsed
    finally:
        pf.stop()


# -- DKIM --------------------------------------------------------------------------------
def bench_dkim(workdir: Path, size: int, seconds: float = 1.5) -> dict[str, float]:
    import dkim as dkimpy

    from keepmail.mailauth import dkim_sign
    from keepmail.outbound.dkimkeys import DkimKeys
    from keepmail.store import Store

    store = Store.open(workdir / "dkim")
    try:
        keys = DkimKeys(store)
        keys.ensure("a.test")
        signing = keys.signing_keys("a.test")
        rsa = [k for k in signing if k.algorithm == "rsa-sha256"]
        msg = make_message(1, size)
        out: dict[str, float] = {}
        for label, chosen in (("rsa+ed25519", signing), ("rsa", rsa)):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                dkim_sign.sign(msg, chosen)
                count += len(chosen)
            out[label] = count / (time.perf_counter() - start)
        pem = (store.data_dir / "keys" / "dkim" / "a.test" / f"{rsa[0].selector}.pem").read_bytes()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            dkimpy.sign(msg, rsa[0].selector.encode(), b"a.test", pem)
            count += 1
        out["dkimpy-rsa"] = count / (time.perf_counter() - start)
        return out
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="messages per run")
    parser.add_argument("-c", type=int, default=8, help="parallel client connections")
    parser.add_argument("--size", type=int, default=2000, help="body bytes per message")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--auth", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--postfix-plain", action="store_true",
                        help="submit to Postfix in plain SMTP (the default: STARTTLS, as "
                        "with keepmail)")
    parser.add_argument("--postfix-tls", action="store_true",   # the default now
                        help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON line too")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print store commits and CPU per thread")
    parser.add_argument("--keepmail-only", action="store_true",
                        help="run only the keepmail side (for profiling)")
    parser.add_argument("--no-uvloop", action="store_true",
                        help="run keepmail on asyncio's own loop (the default is uvloop when "
                        "installed, as `keepmail serve` does)")
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)  # default
    parser.add_argument("--switch-interval", type=float, default=0.0,
                        help="sys.setswitchinterval for keepmail (default: Python's 0.005)")
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    global VERBOSE
    VERBOSE = args.verbose
    from tests.support.postfix import Sink, free_port

    sink_port = free_port(SINK)
    sink = Sink.start(SINK, sink_port, backlog=512)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    loop_name = "asyncio"
    if not args.no_uvloop:
        # As `keepmail serve` runs (cli._run); the load generator stays on asyncio.
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            loop_name = "uvloop"
        except ImportError:
            pass
    with tempfile.TemporaryDirectory(prefix="keepmail-bench-") as tmp:
        try:
            km = asyncio.run(bench_keepmail(args.n, args.c, args.size, sink_port, Path(tmp)))
            if args.keepmail_only:
                print(f"keepmail: {args.n / km:.1f} msg/s ({km:.2f} s), server CPU per "
                      f"message {1000 * CPU['keepmail'] / args.n:.2f} ms")
                return
            pf = bench_postfix(args.n, args.c, args.size, sink_port, Path(tmp),
                               not args.postfix_plain)
            sigs = bench_dkim(Path(tmp), args.size)
        finally:
            sink.stop()
    km_rate, pf_rate = args.n / km, args.n / pf
    print(f"messages: {args.n}, client connections: {args.c}, body: {args.size} bytes")
    print(f"keepmail (STARTTLS+AUTH, DKIM rsa+ed25519, fsync'd queue): {km_rate:8.1f} msg/s"
          f"  ({km:.2f} s, {loop_name})")
    how = "plain SMTP relay" if args.postfix_plain else "STARTTLS relay, no AUTH"
    print(f"postfix  ({how}, no DKIM):{' ' * (38 - len(how))}{pf_rate:8.1f} msg/s"
          f"  ({pf:.2f} s)")
    print(f"ratio keepmail/postfix: {km_rate / pf_rate:.2f}x")
    # Less sensitive to other load on the machine than the rates: CPU time of the
    # server processes (not the load generator or the sink) per message.
    print(f"server CPU per message: keepmail {1000 * CPU['keepmail'] / args.n:.2f} ms, "
          f"postfix {1000 * CPU['postfix'] / args.n:.2f} ms (all its daemons)")
    print(f"DKIM signatures/s: keepmail rsa+ed25519 {sigs['rsa+ed25519']:.0f}, "
          f"keepmail rsa-only {sigs['rsa']:.0f}, dkimpy rsa {sigs['dkimpy-rsa']:.0f} "
          f"({1000 / sigs['rsa']:.2f} ms vs {1000 / sigs['dkimpy-rsa']:.2f} ms per RSA signature)")
    if args.json:
        print(json.dumps({"n": args.n, "keepmail_msgs_per_s": km_rate,
                          "postfix_msgs_per_s": pf_rate, "ratio": km_rate / pf_rate,
                          "postfix_tls": not args.postfix_plain, "keepmail_loop": loop_name,
                          "cpu_seconds": CPU,
                          "dkim_sigs_per_s": sigs}))


if __name__ == "__main__":
    main()
