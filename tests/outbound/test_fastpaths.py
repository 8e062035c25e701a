"""The outbound path's shortcuts give the same results as the long way: DKIM's
relaxed body without regular expressions, signatures computed off the loop,
one shared MX look-up for workers that start together, the queue's blob release."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from keepmail.mailauth import dkim_sign
from keepmail.outbound import mxlookup
from keepmail.outbound.agent import DeliveryAgent, Destination
from keepmail.outbound.dkimkeys import DkimKeys
from keepmail.outbound.settings import OutboundSection
from keepmail.recorder import NullRecorder
from keepmail.store import Store
from keepmail.store import queue as q

from .conftest import run


def _relaxed_body_reference(body: bytes) -> bytes:
    lines = body.split(b"\r\n")
    out = [dkim_sign._WSP_RUN.sub(b" ", line).rstrip(b" ") for line in lines]
    while out and out[-1] == b"":
        out.pop()
    return b"".join(line + b"\r\n" for line in out)


def test_relaxed_body_matches_the_line_by_line_rule() -> None:
    rng = random.Random(7)
    pieces = [b"a", b"b", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n", b"."]
    for _ in range(20000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert dkim_sign.relaxed_body(body) == _relaxed_body_reference(body), body
    assert dkim_sign.relaxed_body(b"abc\r\n\r\n") == b"abc\r\n"
    assert dkim_sign.relaxed_body(b"abc") == b"abc\r\n"
    assert dkim_sign.relaxed_body(b"\r\n\r\n") == b""


def _split_reference(raw: bytes) -> tuple[list[bytes], bytes]:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        head, body = (raw, b"") if raw.endswith(b"\r\n") or not raw else (raw + b"\r\n", b"")
    else:
        head, body = raw[:end + 2], raw[end + 4:]
    starts = [m.start() for m in dkim_sign._FIELD_START.finditer(head)]
    if not starts or starts[0]:
        starts.insert(0, 0)
    return [head[a:b] for a, b in zip(starts, [*starts[1:], len(head)], strict=True)], body


def _relaxed_header_reference(field: bytes) -> bytes:
    name, _, value = field.partition(b":")
    value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    value = dkim_sign._WSP_RUN.sub(b" ", value).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def test_header_split_and_relaxed_fields_match_the_general_rules() -> None:
    rng = random.Random(11)
    pieces = [b"From", b"To", b":", b"a", b"B", b" ", b"\t", b"\r\n", b"\r\n", b"\r\n ",
              b"\r\n\t", b"\n", b"\r", b"\x0b", b"\x0c", b"\xc3\xa9"]
    for _ in range(20000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        if rng.random() < 0.5:
            raw += b"\r\n\r\nbody\r\n"
        assert dkim_sign.split_message(raw) == _split_reference(raw), raw
        for field in dkim_sign.split_message(raw)[0]:
            assert dkim_sign.relaxed_header(field) == _relaxed_header_reference(field), field


def test_sign_async_gives_the_same_fields_as_sign(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")
    try:
        keys = DkimKeys(store)
        keys.ensure("a.test")
        signing = keys.signing_keys("a.test")
        msg = (b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: hi\r\n\r\n"
               b"Hello  Bob\r\n")

        async def many() -> list[bytes]:
            return list(await asyncio.gather(
                *(dkim_sign.sign_async(msg, signing, timestamp=1) for _ in range(20))))

        expected = dkim_sign.sign(msg, signing, timestamp=1)   # both schemes deterministic
        assert run(many()) == [expected] * 20
        assert run(many()) == [expected] * 20                 # a second loop works too
    finally:
        store.close()


class CountingDns:
    def __init__(self) -> None:
        self.queries: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> mxlookup.Answer:
        self.queries.append((name, rdtype))
        await asyncio.sleep(0.05)
        if rdtype == "MX":
            return mxlookup.Answer(["10 mx.b.test."], False)
        if rdtype == "A":
            return mxlookup.Answer(["127.0.0.9"], False)
        return mxlookup.Answer([], False)


def test_workers_starting_together_share_one_mx_lookup(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")
    dns = CountingDns()
    try:
        agent = DeliveryAgent(store, NullRecorder(), OutboundSection(mta_sts=False, dane=False),
                              hostname="mail.a.test", dns=dns)

        async def go() -> None:
            dests = [Destination("b.test") for _ in range(10)]
            plans = await asyncio.gather(*(agent._plan(d, lambda *a, **k: None)
                                           for d in dests))
            assert all(p is plans[0] for p in plans)
            assert [t.ips for t in plans[0].targets] == [["127.0.0.9"]]
            # A new Destination for the same domain (the old one went when its queue
            # emptied) reuses the plan.
            assert await agent._plan(Destination("b.test"), lambda *a, **k: None) is plans[0]

        run(go())
        assert sorted(dns.queries) == [("b.test", "MX"), ("mx.b.test", "A"),
                                       ("mx.b.test", "AAAA")]
    finally:
        store.close()


def test_a_failed_shared_lookup_fails_every_waiter(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")

    class NoDomain(CountingDns):
        async def query(self, name: str, rdtype: str) -> mxlookup.Answer:
            self.queries.append((name, rdtype))
            await asyncio.sleep(0.05)
            raise mxlookup.DnsNoDomain(name)

    dns = NoDomain()
    try:
        agent = DeliveryAgent(store, NullRecorder(), OutboundSection(mta_sts=False, dane=False),
                              hostname="mail.a.test", dns=dns)

        async def go() -> list[BaseException | object]:
            return await asyncio.gather(*(agent._plan(Destination("nx.test"),
                                                      lambda *a, **k: None)
                                          for _ in range(5)), return_exceptions=True)

        errors = run(go())
        assert len(dns.queries) == 1
        assert all(getattr(e, "permanent", False) and e.status == "5.1.2"  # type: ignore
                   for e in errors), errors
    finally:
        store.close()


def test_queue_releases_its_blob_reference(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")
    try:
        def setup(conn: sqlite3.Connection) -> tuple[int, int]:
            now = 1000.0
            for blob_id, refs in ((1, 0), (2, 1)):   # 2: also in a mailbox
                conn.execute("INSERT INTO blobs(id, size, refs, created) VALUES (?, 10, ?, ?)",
                             (blob_id, refs, now))
            one = q.enqueue(conn, 1, 10, "a@a.test", ["x@b.test"], now=now)
            two = q.enqueue(conn, 2, 10, "a@a.test", ["y@b.test", "z@c.test"], now=now)
            return one, two

        one, two = store.write_sync(setup)
        rcpts = store.read_now(lambda c: q.rcpts_of(c, one) + q.rcpts_of(c, two))

        def refs(conn: sqlite3.Connection) -> dict[int, int]:
            return dict(conn.execute("SELECT id, refs FROM blobs").fetchall())

        store.write_sync(lambda c: q.mark_done(c, [rcpts[0].id, rcpts[1].id]))
        assert store.read_now(refs) == {2: 2}      # blob 1 gone; 2 still queued
        store.write_sync(lambda c: q.mark_done(c, [rcpts[2].id]))
        assert store.read_now(refs) == {2: 1}      # the mailbox's reference stays
        assert store.read_now(q.count) == (0, 0)
    finally:
        store.close()


def test_one_batch_releases_messages_that_share_a_blob(tmp_path: Path) -> None:
    # The agent marks many deliveries done in one statement set: two queued
    # messages on one blob must drop two references, not one.
    store = Store.open(tmp_path / "data")
    try:
        def setup(conn: sqlite3.Connection) -> list[int]:
            now = 1000.0
            for blob_id, refs in ((1, 0), (2, 1), (3, 0)):   # 2: also in a mailbox
                conn.execute("INSERT INTO blobs(id, size, refs, created) VALUES (?, 10, ?, ?)",
                             (blob_id, refs, now))
            ids = [q.enqueue(conn, blob, 10, "a@a.test", [f"x{i}@b.test"], now=now)
                   for i, blob in enumerate((1, 1, 2, 2, 3))]
            q.enqueue(conn, 3, 10, "a@a.test", ["y@b.test", "z@c.test"], now=now)
            return ids

        store.write_sync(setup)
        rcpts = store.read_now(lambda c: [r for m in q.list_messages(c)
                                          for r in q.rcpts_of(c, m.id)])
        keep = [r for r in rcpts if r.rcpt == "z@c.test"]

        def refs(conn: sqlite3.Connection) -> dict[int, int]:
            return dict(conn.execute("SELECT id, refs FROM blobs").fetchall())

        store.write_sync(lambda c: q.mark_done(c, [r.id for r in rcpts if r not in keep]))
        # blob 1: both references gone; 2: the mailbox's stays; 3: one message still queued
        assert store.read_now(refs) == {2: 1, 3: 1}
        assert store.read_now(q.count) == (1, 1)
        store.write_sync(lambda c: q.mark_done(c, [keep[0].id]))
        assert store.read_now(refs) == {2: 1}
        assert store.read_now(q.count) == (0, 0)
    finally:
        store.close()
