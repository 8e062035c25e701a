"""Schema migrations, group commit, UIDs/MODSEQ, flags and mailbox operations."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from keepmail.store import Copy, Store, accounts, migrations
from keepmail.store import mail as mailq
from keepmail.store.accounts import StoreError
from keepmail.store.db import connect


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.close()
    conn = connect(tmp_path / "keepmail.db")
    first = dict(conn.execute("SELECT component, version FROM schema_versions").fetchall())
    assert first["core"] >= 1 and first["blobs"] >= 1
    assert migrations.migrate(conn) == first  # nothing left to do
    # Core 4 dropped the unused (and per delivery costly) index on Message-ID.
    conn.execute("CREATE INDEX messages_message_id ON messages(message_id)")
    conn.execute("UPDATE schema_versions SET version = 3 WHERE component = 'core'")
    assert migrations.migrate(conn) == first
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_message_id'"
                        ).fetchone() is None
    conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'core'")
    with pytest.raises(RuntimeError, match="newer than this keepmail"):
        migrations.migrate(conn)
    conn.close()


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    store = Store.open(tmp_path)

    async def many() -> None:
        await asyncio.gather(*[store.write(lambda c, i=i: c.execute(
            "INSERT INTO counters(name, value) VALUES (?, 1)", (f"c{i}",))) for i in range(300)])

    asyncio.run(many())
    assert store.db.writes >= 300
    assert store.db.commits < store.db.writes / 3
    store.close()


def test_failed_write_does_not_undo_its_batch_neighbours(tmp_path: Path) -> None:
    store = Store.open(tmp_path)

    async def batch() -> list[object]:
        jobs = [store.write(lambda c: accounts.add_domain(c, "a.test")),
                store.write(lambda c: accounts.add_domain(c, "a.test")),  # duplicate
                store.write(lambda c: accounts.add_domain(c, "b.test"))]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(batch())
    assert isinstance(results[1], StoreError)
    names = [d.name for d in store.read_now(accounts.list_domains)]
    assert names == ["a.test", "b.test"]
    store.close()


def test_accounts_get_special_use_mailboxes(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    def txn(c: sqlite3.Connection) -> list[tuple[str, str | None]]:
        accounts.add_domain(c, "example.test")
        acct = accounts.add_account(c, "Ann@Example.Test", "x")
        return [(b.name, b.role) for b in mailq.list_mailboxes(c, acct.id)]
    boxes = store.write_sync(txn)
    assert ("INBOX", "inbox") in boxes and ("Junk", "junk") in boxes and ("Sent", "sent") in boxes
    assert store.read_now(lambda c: accounts.get_account(c, "ann@example.test")) is not None
    with pytest.raises(StoreError, match="add it first"):
        store.write_sync(lambda c: accounts.add_account(c, "x@nowhere.test", "x"))
    store.close()


def test_modseq_flags_copy_expunge_and_rename(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    def setup(c: sqlite3.Connection) -> tuple[int, int, int]:
        accounts.add_domain(c, "example.test")
        acct = accounts.add_account(c, "bob@example.test", "x")
        inbox = mailq.get_mailbox(c, acct.id, "INBOX")
        work = mailq.create_mailbox(c, acct.id, "Work")
        mailq.create_mailbox(c, acct.id, "Work/2026")
        assert inbox is not None
        return acct.id, inbox.id, work.id
    acct_id, inbox_id, work_id = store.write_sync(setup)
    for _ in range(3):
        asyncio.run(store.deliver(b"Subject: x\r\n\r\nx\r\n", [Copy(acct_id, inbox_id, "INBOX")]))
    before = store.read_now(lambda c: mailq.get_mailbox_by_id(c, inbox_id)).highestmodseq
    changed, failed = store.write_sync(lambda c: mailq.store_flags(
        c, inbox_id, [1, 2], ["\\Seen"], "add", unchangedsince=before))
    assert [m.uid for m in changed] == [1, 2] and not failed
    _, failed = store.write_sync(lambda c: mailq.store_flags(
        c, inbox_id, [1], ["\\Flagged"], "add", unchangedsince=before))
    assert failed == [1], "UNCHANGEDSINCE must refuse a message changed since"
    pairs = store.write_sync(lambda c: mailq.copy_messages(c, inbox_id, [2, 3], work_id))
    assert pairs == [(2, 1), (3, 2)]
    assert store.write_sync(lambda c: mailq.expunge(c, inbox_id, [2])) == [2]
    changed, gone = store.read_now(lambda c: mailq.changes_since(c, inbox_id, before))
    assert gone == [2] and {m.uid for m in changed} == {1}
    store.write_sync(lambda c: mailq.rename_mailbox(c, acct_id, "Work", "Jobs"))
    names = [b.name for b in store.read_now(lambda c: mailq.list_mailboxes(c, acct_id))]
    assert "Jobs" in names and "Jobs/2026" in names and "Work" not in names
    store.write_sync(lambda c: mailq.rename_mailbox(c, acct_id, "INBOX", "Old"))
    old = store.read_now(lambda c: mailq.get_mailbox(c, acct_id, "Old"))
    assert old is not None
    assert len(store.read_now(lambda c: mailq.list_messages(c, old.id))) == 2
    assert store.read_now(lambda c: mailq.list_messages(c, inbox_id)) == []
    store.close()


def test_writers_in_two_processes_and_both_paths_never_collide(tmp_path: Path) -> None:
    """The loop path, the writer thread and another process write one file at once;
    every UID is handed out once and every write lands."""
    import subprocess
    import sys
    import textwrap

    store = Store.open(tmp_path)
    acct = store.write_sync(lambda c: (accounts.add_domain(c, "example.test"),
                                       accounts.add_account(c, "bob@example.test", "x"))[1])
    box = store.read_now(lambda c: mailq.get_mailbox(c, acct.id, "INBOX"))
    assert box is not None
    other = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from keepmail.store import Copy, Store
        import asyncio
        store = Store.open(Path({str(tmp_path)!r}))
        async def main():
            await asyncio.gather(*[store.deliver(b"Subject: p\\r\\n\\r\\nx", [Copy({acct.id},
                                   {box.id}, "INBOX")]) for _ in range(150)])
        asyncio.run(main())
        store.close()
    """)])

    async def ours() -> None:
        copy = Copy(acct.id, box.id, "INBOX")
        threaded = asyncio.to_thread(lambda: [store.write_sync(lambda c, i=i: c.execute(
            "INSERT INTO counters(name, value) VALUES (?, 1)", (f"t{i}",))) for i in range(100)])
        await asyncio.gather(threaded, *[store.deliver(b"Subject: l\r\n\r\nx", [copy])
                                         for _ in range(150)])

    asyncio.run(ours())
    assert other.wait(60) == 0
    uids = [m.uid for m in store.read_now(lambda c: mailq.list_messages(c, box.id))]
    assert len(uids) == 300 and len(set(uids)) == 300
    assert store.read_now(lambda c: c.execute(
        "SELECT COUNT(*) FROM counters WHERE name LIKE 't%'").fetchone()[0]) == 100
    store.close()


def test_subscriptions_migrate_from_the_mailbox_column(tmp_path: Path) -> None:
    # An install from before core migration 2 kept subscriptions on the mailbox rows
    # (every mailbox subscribed unless the client unsubscribed it).
    store = Store.open(tmp_path)
    store.write_sync(lambda c: accounts.add_domain(c, "example.test"))
    acct = store.write_sync(lambda c: accounts.add_account(c, "old@example.test", "x"))
    store.write_sync(lambda c: mailq.create_mailbox(c, acct.id, "Work"))
    store.write_sync(lambda c: mailq.create_mailbox(c, acct.id, "Muted"))
    store.close()
    conn = connect(tmp_path / "keepmail.db")
    conn.execute("DROP TABLE subscriptions")
    conn.execute("UPDATE schema_versions SET version = 1 WHERE component = 'core'")
    conn.execute("UPDATE mailboxes SET subscribed = 1")
    conn.execute("UPDATE mailboxes SET subscribed = 0 WHERE name = 'Muted'")
    assert migrations.migrate(conn)["core"] >= 2
    assert mailq.subscriptions(conn, acct.id) == {
        "INBOX", "Sent", "Drafts", "Junk", "Trash", "Archive", "Work"}
    conn.close()


def test_subscriptions_are_names_that_outlive_and_follow_mailboxes(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.write_sync(lambda c: accounts.add_domain(c, "example.test"))
    acct = store.write_sync(lambda c: accounts.add_account(c, "u@example.test", "x"))
    subs = lambda: store.write_sync(lambda c: mailq.subscriptions(c, acct.id))  # noqa: E731
    # New accounts start with their special-use folders subscribed.
    assert subs() == {"INBOX", "Sent", "Drafts", "Junk", "Trash", "Archive"}
    box = store.write_sync(lambda c: mailq.create_mailbox(c, acct.id, "A"))
    store.write_sync(lambda c: mailq.create_mailbox(c, acct.id, "A/B"))
    assert "A" not in subs()  # creating does not subscribe
    for name in ("A", "A/B", "A/Gone", "Never/There"):
        store.write_sync(lambda c, n=name: mailq.set_subscribed(c, acct.id, n, True))
    store.write_sync(lambda c: mailq.rename_mailbox(c, acct.id, "A", "Z"))
    assert {"Z", "Z/B", "Z/Gone", "Never/There"} <= subs() and "A" not in subs()
    store.write_sync(lambda c: mailq.delete_mailbox_rows(c, box.id))
    assert "Z" in subs()  # deleting a mailbox leaves its name subscribed
    store.write_sync(lambda c: accounts.delete_account(c, "u@example.test"))
    assert subs() == set()
    store.close()


def test_every_foreign_key_has_an_index(tmp_path: Path) -> None:
    """Deleting a parent row checks every child table: an unindexed foreign key turns
    each delete (a blob after its last copy is expunged, say) into a full scan."""
    from keepmail.inbound import quarantine  # noqa: F401  (registers its tables)
    from keepmail.outbound import agent  # noqa: F401

    store = Store.open(tmp_path)
    conn = connect(tmp_path / "keepmail.db")
    unindexed = []
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        firsts = {conn.execute(f"PRAGMA index_info('{ix[1]}')").fetchone()[2]
                  for ix in conn.execute(f"PRAGMA index_list('{table}')")}
        pk = [r[1] for r in sorted(conn.execute(f"PRAGMA table_info('{table}')"),
                                   key=lambda r: r[5]) if r[5] == 1]
        firsts.update(pk[:1])
        for fk in conn.execute(f"PRAGMA foreign_key_list('{table}')"):
            if fk[3] not in firsts:
                unindexed.append(f"{table}.{fk[3]} -> {fk[2]}")
    conn.close()
    store.close()
    assert not unindexed, unindexed


def test_loop_writes_are_checkpointed_off_the_loop_and_the_wal_stays_bounded(
        tmp_path: Path) -> None:
    """The loop path never checkpoints itself; the checkpoint thread copies the WAL
    under the write lock, so the WAL file is started over instead of growing."""
    from keepmail.store import db as dbmod

    store = Store.open(tmp_path)
    wal = tmp_path / "keepmail.db-wal"
    payload = b"x" * 3000  # about one WAL frame per row

    async def many() -> None:
        for start in range(0, 6000, 100):
            await asyncio.gather(*[store.write(lambda c, i=i: c.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?)",
                (f"c{i}", payload))) for i in range(start, start + 100)])

    asyncio.run(many())
    db = store.db
    assert db._loop_conn is not None
    assert db._loop_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    db._checkpointer.submit(lambda: None).result()  # the last checkpoint has finished
    # 6000 frames written; without checkpoints the WAL would hold all of them.
    assert wal.stat().st_size < 3 * dbmod.CHECKPOINT_FRAMES * 4096
    assert db._wal.frames_to_checkpoint() < 2 * dbmod.CHECKPOINT_FRAMES
    assert store.read_now(lambda c: c.execute(
        "SELECT COUNT(*) FROM counters WHERE name LIKE 'c%'").fetchone()[0]) == 6000
    store.close()
    conn = connect(tmp_path / "keepmail.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


@pytest.mark.parametrize("inline_below", [0.0, 1.0])
def test_loop_commits_fsync_inline_only_while_fsyncs_are_fast(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              inline_below: float) -> None:
    """A fast disk's fsync runs on the event loop (a thread hand-off costs more); a slow
    one's on the sync thread, so the loop keeps serving. Either way the writer resumes
    only after its fsync."""
    import threading

    import keepmail.store.db as dbmod

    monkeypatch.setattr(dbmod, "INLINE_SYNC_SECONDS", inline_below)
    store = Store.open(tmp_path)
    synced_on: list[str] = []
    real_sync = store.db._wal.sync

    def sync() -> None:
        real_sync()
        synced_on.append(threading.current_thread().name)

    monkeypatch.setattr(store.db._wal, "sync", sync)

    async def writes() -> None:
        for i in range(5):
            await store.write(lambda c, i=i: c.execute(
                "INSERT INTO counters(name, value) VALUES (?, 1)", (f"s{i}",)))
            assert len(synced_on) == i + 1, "resumed before its fsync"

    asyncio.run(writes())
    store.close()
    expected = "MainThread" if inline_below else "db-sync"
    assert all(name.startswith(expected) for name in synced_on), synced_on
