"""MX acceptance throughput: keepmail versus Postfix, same client, same run.

Both servers accept small messages from Postfix's smtp-source (20 sessions)
into durable storage: keepmail into its encrypted store (250 after fsync),
Postfix into its own fsync'd queue (the recipient is put on hold so nothing
is delivered onward). Prints messages/s for each and the ratios. keepmail runs
with one MX process and with one per CPU core ([smtp] mx_processes = 0; Postfix
too runs one smtpd per connection), with the sender checks (SPF, DKIM, DMARC,
ARC, reverse DNS; DNS served on loopback) and the content classifier off (plain
acceptance, as Postfix does here) and on; then the latency they add per message
in one session is printed.

    python bench/mx_bench.py [--messages 5000] [--sessions 20] [--size 1024] [--rounds 3]

--rounds N (default 3) repeats the plain runs and Postfix's, alternating, and prints the
median ratios (the ratio lines use the medians): Postfix fsyncs each message, and on a VM
disk its rate moved from 540 to 1,700 msg/s between runs minutes apart; one round's ratio
can mislead.

Every run's files stay on disk until the whole bench is over. Deleting a Postfix
queue of 5,000 files on a filesystem mounted with `discard` slowed the disk for
tens of seconds afterwards (Postfix measured 930-1,000 msg/s right after such a
deletion, 1,550 a minute later): deleting after each run made every later run,
Postfix's above all, pay for the one before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peers import ROOT, PrivatePostfix, free_port, smtp_source, wait_port

sys.path.insert(0, str(ROOT / "src"))


def keepmail_run(tmp: Path, args: argparse.Namespace) -> tuple[float, int]:
    from keepmail import config as configmod
    from tests.support.server import add_users, free_port_offset, write_config

    path = write_config(tmp, extra={"smtp": {"max_connections_per_ip": 1000,
                                             "mx_processes": args.processes},
                                    "inbound": {"sender_checks": args.checks},
                                    "spam": {"classifier": args.checks},
                                    "ports": {"submission": 0, "submissions": 0, "imap": 0,
                                              "imaps": 0, "web": 0}})
    cfg = configmod.load(path)
    add_users(cfg, "bob@example.test")
    offset = free_port_offset()
    proc = subprocess.Popen([sys.executable, "-m", "keepmail.cli", "serve", "--config",
                             str(path), "--port-offset", str(offset)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", 25 + offset)
        wait_listeners(25 + offset, cfg.mx_processes)
        cpu_before = server_cpu(proc.pid)
        seconds = smtp_source("127.0.0.1", 25 + offset, messages=args.messages,
                              sessions=args.sessions, size=args.size, rcpt="bob@example.test")
        cpu = server_cpu(proc.pid) - cpu_before
    finally:
        proc.terminate()
        proc.wait(60)
    from keepmail.store import Store
    store = Store.open(cfg.data_dir, cfg.key_file)
    stored = store.read_now(lambda c: c.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    store.close()
    return seconds, stored, cpu


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children (MX workers).

    On a shared machine the CPU per message moves much less than messages/s.
    """
    try:
        import psutil
    except ImportError:
        return float("nan")
    total = 0.0
    main = psutil.Process(pid)
    for p in [main, *main.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def wait_listeners(port: int, count: int, timeout: float = 60) -> None:
    """Wait until `count` processes listen on port (the MX workers start after the main one);
    smtp-source opens its 20 connections once and keeps them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-Hltnp", f"( sport = :{port} )"], capture_output=True,
                             text=True).stdout
        if out.count("pid=") >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{count} listeners did not come up on port {port}")


def postfix_run(tmp: Path, args: argparse.Namespace) -> tuple[float, int]:
    port = free_port()
    pf = PrivatePostfix(tmp, "127.0.0.1", port, main_cf="""
relay_domains = example.test
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_end_of_data_restrictions = check_client_access static:HOLD
""")
    pf.start()
    try:
        seconds = smtp_source("127.0.0.1", port, messages=args.messages, sessions=args.sessions,
                              size=args.size, rcpt="bob@example.test")
        time.sleep(1)
        queued = pf.queue_count()
    finally:
        pf.stop()
    return seconds, queued


SENDER_ZONE = {
    "remote.test": [("TXT", "v=spf1 ip4:127.0.0.0/8 -all"), ("MX", "10 mx.remote.test.")],
    "_dmarc.remote.test": [("TXT", "v=DMARC1; p=reject")],
    "1.0.0.127.in-addr.arpa": [("PTR", "mx.remote.test.")],
    "mx.remote.test": [("A", "127.0.0.1")],
}


def run_one(name: str, run: object, args: argparse.Namespace) -> float:
    # The previous run's files are still being written back: each run starts on a
    # settled disk, or the fsync-per-message side (Postfix) pays for the other's data.
    os.sync()
    tmp = tempfile.mkdtemp(prefix=re.sub(r"\W+", "-", name) + "-", dir=args.work)
    seconds, stored, *cpu = run(Path(tmp), args)  # type: ignore[operator]
    rate = args.messages / seconds
    per_message = (f", server CPU {cpu[0] / args.messages * 1000:.3f} ms/msg"
                   if cpu and cpu[0] == cpu[0] else "")
    print(f"{name:<26} {args.messages} msgs x {args.size} B, {args.sessions} sessions: "
          f"{seconds:6.2f} s  {rate:8.0f} msg/s  (stored: {stored}{per_message}; "
          f"load {os.getloadavg()[0]:.1f})", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.work = tempfile.mkdtemp(prefix="mx-bench-")  # removed at the end: see above
    os.chmod(args.work, 0o755)  # Postfix's own user must reach its folder inside
    try:
        bench(args)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)


def bench(args: argparse.Namespace) -> None:
    from tests.support.server import shared_dns

    shared_dns().set_zone(SENDER_ZONE)  # served from this process, not keepmail's
    cores = os.cpu_count() or 1
    singles, plains, postfixes = [], [], []
    full = 0.0
    for round_ in range(args.rounds):
        args.checks, args.processes = False, 1
        singles.append(run_one("keepmail (plain, 1 proc)", keepmail_run, args))
        args.processes = 0
        plains.append(run_one(f"keepmail (plain, {cores} proc)", keepmail_run, args))
        if round_ == 0:
            args.checks = True
            full = run_one(f"keepmail (checks, {cores} proc)", keepmail_run, args)
        postfixes.append(run_one("postfix", postfix_run, args))
    single, plain = statistics.median(singles), statistics.median(plains)
    postfix = statistics.median(postfixes)
    if args.rounds > 1:
        print(f"medians of {args.rounds} rounds: keepmail 1 proc {single:.0f}, "
              f"{cores} proc {plain:.0f}, postfix {postfix:.0f} msg/s; per-round ratios "
              f"(one per core / postfix): "
              + " ".join(f"{p / f:.2f}" for p, f in zip(plains, postfixes, strict=True)))
    print(f"ratio keepmail plain, mx_processes = 1 / postfix: {single / postfix:.2f}x")
    print(f"ratio keepmail plain, mx_processes = 0 (one per core) / postfix: "
          f"{plain / postfix:.2f}x")
    print(f"ratio keepmail all checks, one per core / postfix: {full / postfix:.2f}x")
    # One session at a time: the time a sender waits per message.
    args.sessions, args.messages, args.processes = 1, 300, 1
    args.checks = False
    one_plain = run_one("keepmail (plain, 1)", keepmail_run, args)
    args.checks = True
    one_full = run_one("keepmail (checks, 1)", keepmail_run, args)
    added = (1 / one_full - 1 / one_plain) * 1000
    print(f"latency per message, one session: plain {1000 / one_plain:.2f} ms, all checks "
          f"{1000 / one_full:.2f} ms (+{added:.2f} ms for SPF, DKIM, DMARC, ARC, rDNS and "
          "the classifier)")


if __name__ == "__main__":
    main()
