"""Mail at rest is encrypted, tamper-evident, and readable in parts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from keepmail.store import Copy, Store, accounts, blobs, imapq
from keepmail.store import mail as mailq
from keepmail.store.blobs import CHUNK_SIZE, BlobCorrupt


def setup_store(tmp_path: Path, key_file: Path | None = None) -> tuple[Store, Copy]:
    store = Store.open(tmp_path / "data", key_file)
    def txn(c: sqlite3.Connection) -> Copy:
        accounts.add_domain(c, "example.test")
        acct = accounts.add_account(c, "bob@example.test", "x")
        box = mailq.get_mailbox(c, acct.id, "INBOX")
        assert box is not None
        return Copy(acct.id, box.id, box.name)
    return store, store.write_sync(txn)


def test_plaintext_never_on_disk(tmp_path: Path) -> None:
    store, copy = setup_store(tmp_path)
    secret = b"Subject: payroll\r\n\r\nThe secret word is xylophone-42\r\n"
    asyncio.run(store.deliver(secret, [copy]))
    store.close()
    for f in (tmp_path / "data").rglob("*"):
        if f.is_file():
            assert b"xylophone-42" not in f.read_bytes(), f


def test_key_file_can_live_apart_and_is_private(tmp_path: Path) -> None:
    key_file = tmp_path / "elsewhere" / "storage.key"
    store, copy = setup_store(tmp_path, key_file)
    asyncio.run(store.deliver(b"Subject: x\r\n\r\nhello\r\n", [copy]))
    store.close()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "data" / "keys").exists()
    with pytest.raises(ValueError):
        (tmp_path / "bad.key").write_text("not a key")
        Store.open(tmp_path / "data", tmp_path / "bad.key")


def test_wrong_key_or_tampering_detected(tmp_path: Path) -> None:
    store, copy = setup_store(tmp_path)
    [placed] = asyncio.run(store.deliver(b"Subject: x\r\n\r\nhello\r\n", [copy]))
    msg = store.read_now(lambda c: mailq.list_messages(c, placed.mailbox_id))[0]
    def flip(c: sqlite3.Connection) -> None:  # a one-chunk blob keeps it in its row
        data = bytearray(c.execute("SELECT data FROM blobs WHERE id = ?",
                                   (msg.blob_id,)).fetchone()[0])
        data[20] ^= 1
        c.execute("UPDATE blobs SET data = ? WHERE id = ?", (bytes(data), msg.blob_id))
    store.write_sync(flip)
    with pytest.raises(BlobCorrupt):
        store.read_blob_now(msg.blob_id)
    store.close()


def test_one_chunk_blobs_of_older_installs_are_still_read(tmp_path: Path) -> None:
    """Before blobs migration 4 a one-chunk blob kept its chunk in blob_chunks."""
    store, copy = setup_store(tmp_path)
    raws = [b"Subject: new\r\n\r\nin the row\r\n", b"Subject: old\r\n\r\nin chunks\r\n"]
    placed = [asyncio.run(store.deliver(raw, [copy]))[0] for raw in raws]
    ids = [m.blob_id for m in store.read_now(lambda c: mailq.list_messages(c, copy.mailbox_id))]

    def as_before(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO blob_chunks(blob_id, idx, data)"
                  " SELECT id, 0, data FROM blobs WHERE id = ?", (ids[1],))
        c.execute("UPDATE blobs SET data = NULL WHERE id = ?", (ids[1],))
    store.write_sync(as_before)
    assert [store.read_blob_now(i) for i in ids] == raws
    assert [asyncio.run(store.read_blob(i, 9, 13)) for i in ids] == [b"new\r", b"old\r"]
    conn = store.db.reader()
    firsts = {i: store.cipher.open_chunk(i, 0, True, data)
              for i, _size, data in imapq.sealed_first_chunks(conn, ids)}
    assert firsts == dict(zip(ids, raws, strict=True))
    assert [(i, idx) for i, _size, idx, _data in imapq.sealed_blobs(conn, ids)] == \
        [(ids[0], 0), (ids[1], 0)]
    assert len(placed) == 2
    store.close()


def test_large_blob_ranges(tmp_path: Path) -> None:
    store, copy = setup_store(tmp_path)
    data = bytes(range(256)) * (3 * CHUNK_SIZE // 256 + 77)
    [placed] = asyncio.run(store.deliver(data, [copy]))
    msg = store.read_now(lambda c: mailq.list_messages(c, placed.mailbox_id))[0]
    assert store.read_blob_now(msg.blob_id) == data
    for start, end in [(0, 10), (CHUNK_SIZE - 5, CHUNK_SIZE + 5), (len(data) - 3, len(data) + 9),
                       (2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 1)]:
        assert store.read_blob_now(msg.blob_id, start, end) == data[start:end]
    store.close()


def test_blob_freed_when_last_copy_expunged(tmp_path: Path) -> None:
    store, copy = setup_store(tmp_path)
    placed, _ = asyncio.run(store.deliver(b"Subject: x\r\n\r\nhello\r\n", [copy, copy]))
    count = lambda: store.read_now(lambda c: c.execute("SELECT COUNT(*) FROM blobs").fetchone()[0])  # noqa: E731
    assert count() == 1
    store.write_sync(lambda c: mailq.expunge(c, placed.mailbox_id, [1]))
    assert count() == 1
    store.write_sync(lambda c: mailq.expunge(c, placed.mailbox_id, [2]))
    assert count() == 0
    store.close()


def test_chunk_order_is_authenticated(tmp_path: Path) -> None:
    store, copy = setup_store(tmp_path)
    data = b"a" * CHUNK_SIZE + b"b" * CHUNK_SIZE
    [placed] = asyncio.run(store.deliver(data, [copy]))
    msg = store.read_now(lambda c: mailq.list_messages(c, placed.mailbox_id))[0]
    def swap(c: sqlite3.Connection) -> None:
        c.execute("UPDATE blob_chunks SET idx = 9 WHERE blob_id = ? AND idx = 0", (msg.blob_id,))
        c.execute("UPDATE blob_chunks SET idx = 0 WHERE blob_id = ? AND idx = 1", (msg.blob_id,))
        c.execute("UPDATE blob_chunks SET idx = 1 WHERE blob_id = ? AND idx = 9", (msg.blob_id,))
    store.write_sync(swap)
    with pytest.raises(BlobCorrupt):
        blobs.read(store.db.reader(), store.cipher, msg.blob_id)
    store.close()


def test_blob_ids_ascend_are_never_reused_and_skip_taken_ids(tmp_path: Path) -> None:
    """Small blobs get the next id in sequence (sealed in their transaction); an id
    stays with its blob forever (header caches key on it), even after the newest blob
    is deleted; a large blob's random id is stepped over."""
    store, copy = setup_store(tmp_path)

    def blob_of(uid: int) -> int:
        return store.read_now(lambda c: c.execute(
            "SELECT blob_id FROM messages WHERE mailbox_id = ? AND uid = ?",
            (copy.mailbox_id, uid)).fetchone()[0])

    def deliver(body: bytes) -> int:
        [placed] = asyncio.run(store.deliver(b"Subject: s\r\n\r\n" + body, [copy]))
        return blob_of(placed.uid)

    first, second = deliver(b"one"), deliver(b"two")
    assert second == first + 1
    store.write_sync(lambda c: mailq.expunge(c, copy.mailbox_id, [2]))
    assert store.read_now(lambda c: c.execute("SELECT COUNT(*) FROM blobs WHERE id = ?",
                                              (second,)).fetchone()[0]) == 0
    third = deliver(b"three")
    assert third == second + 1, "the deleted newest blob's id is not handed out again"
    # A large blob sealed before its transaction took the next id at random.
    taken = store.cipher.seal(b"Subject: big\r\n\r\nbig", third + 1)
    store.write_sync(lambda c: blobs.insert(c, taken, 1, 0.0))
    fourth = deliver(b"four")
    assert fourth == third + 2
    # Deleting an older blob leaves the sequence where it is; deleting the newest
    # again moves it past that id.
    store.write_sync(lambda c: mailq.expunge(c, copy.mailbox_id, [1]))
    fifth = deliver(b"five")
    assert fifth == fourth + 1
    store.write_sync(lambda c: mailq.expunge(c, copy.mailbox_id, [5]))
    assert deliver(b"six") == fifth + 1
    assert asyncio.run(store.read_blob(fourth)).endswith(b"four")
    assert asyncio.run(store.read_blob(taken.id)).endswith(b"big")
    store.close()
