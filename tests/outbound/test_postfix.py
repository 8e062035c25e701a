"""Delivery to a real Postfix (a private instance in a temp folder) as the remote MX.

Postfix relays what it accepts to an smtp-sink that dumps messages to files,
so the test reads exactly what Postfix took from keepmail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.postfix import Postfix, Sink, free_port

from .conftest import CA, FAST, asubmit, make_org, message, run, wait_for, with_settings
from .peers import LocalDns

HOST, POSTFIX, SINK = "127.0.0.71", "127.0.0.72", "127.0.0.73"

pytestmark = pytest.mark.skipif(not shutil.which("postfix") or not shutil.which("smtp-sink"),
                                reason="Debian postfix not installed")


def test_delivery_to_postfix(tmp_path: Path, ca: CA) -> None:
    sink_port = free_port(SINK)
    sink = Sink.start(SINK, sink_port, tmp_path / "dump")
    pf_port = free_port(POSTFIX)
    postfix = None
    dns = LocalDns(f"c.test. 60 IN MX 10 mx.c.test.\nmx.c.test. 60 IN A {POSTFIX}\n").start()
    try:
        postfix = Postfix.start(POSTFIX, pf_port, f"{SINK}:{sink_port}", domains="c.test")
        org = make_org(tmp_path, "a", HOST, "a.test", dns.nameserver, ["alice@a.test"],
                       settings=with_settings(FAST, remote_port=pf_port))

        async def go() -> None:
            await org.start(ca)
            try:
                for i in range(3):
                    await asubmit(HOST, org.port, "alice@a.test", "alice@a.test",
                                  [f"carol{i}@c.test"],
                                  message("alice@a.test", f"carol{i}@c.test",
                                          subject=f"to postfix {i}"))
                await wait_for(lambda: len(sink.messages()) == 3, limit=30,
                               what="Postfix relayed to the sink")
                await wait_for(lambda: org.queue_size() == (0, 0), what="empty queue")
            finally:
                await org.stop()

        run(go())
        dumped = sink.messages()
        assert all(b"(Postfix) with ESMTP" in m for m in dumped)
        assert sorted(b"to postfix" in m for m in dumped) == [True] * 3
        assert all(m.count(b"DKIM-Signature") == 2 for m in dumped)
        log = (postfix.directory / "maillog").read_text()
        assert "from=<alice@a.test>" in log
    finally:
        if postfix is not None:
            postfix.stop()
        sink.stop()
        dns.stop()
