"""A SIGKILL in the middle of deliveries loses nothing: every message that got a
250 at submission reaches the remote server after a restart (RFC 5321 6.1: a
duplicate is acceptable, a loss is not)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import CA, FAST, Org, asubmit, message, run, wait_for, with_settings
from .peers import LocalDns, ScriptedSmtp

HOST, PEER = "127.0.0.81", "127.0.0.82"
COUNT = 40


def test_sigkill_during_delivery_loses_nothing(tmp_path: Path, ca: CA) -> None:
    dns = LocalDns(f"b.test. 60 IN MX 10 mx.b.test.\nmx.b.test. 60 IN A {PEER}\n").start()
    root = Path(__file__).resolve().parents[2]

    async def go() -> None:
        peer = await ScriptedSmtp(PEER).start()
        peer.data_delay = 0.1
        peer.gate = asyncio.Event()   # nothing completes until every message is queued
        child = subprocess.Popen(  # noqa: ASYNC220 (a short spawn; the test owns the loop)
            [sys.executable, "-m", "tests.outbound.crash_child", str(tmp_path / "a"), HOST,
             dns.nameserver, str(peer.port), str(ca.cert), str(ca.key)],
            cwd=root, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
        try:
            assert child.stdout is not None
            line = await asyncio.to_thread(child.stdout.readline)
            port = int(line)
            for i in range(COUNT):
                await asubmit(HOST, port, "alice@a.test", "alice@a.test", [f"u{i}@b.test"],
                              message("alice@a.test", f"u{i}@b.test", subject=f"msg {i}"))
            peer.gate.set()
            await wait_for(lambda: len(peer.messages) >= 3, what="some deliveries")
            child.send_signal(signal.SIGKILL)
            await asyncio.to_thread(child.wait)
        finally:
            if child.poll() is None:
                child.kill()
        delivered_before = len(peer.messages)
        assert delivered_before < COUNT, "the crash came too late to test anything"
        peer.data_delay = 0.0
        org = Org("a", HOST, "a.test", tmp_path / "a",
                  with_settings(FAST, remote_port=peer.port), dns.nameserver)
        org.open(["alice@a.test"])
        await org.start(ca)
        try:
            await wait_for(lambda: org.queue_size() == (0, 0), limit=30, what="queue drained")
        finally:
            await org.stop()
            await peer.close()
        subjects = {m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in peer.messages}
        assert subjects == {f"msg {i}".encode() for i in range(COUNT)}

    try:
        run(go(), timeout=90)
    finally:
        dns.stop()
