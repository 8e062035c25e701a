"""SQLite access with group commit.

Every write is a small function run inside its own SAVEPOINT (so one failing
write does not undo the others), and many writes share one transaction and one
fsync. That is how "a 250 is a promise" stays fast (DESIGN.md, principle 1).

Writes from the event loop that owns the database run *on the loop thread*:
the jobs queued during one loop turn are committed together, then a sync
thread fsyncs the write-ahead log and only then are their callers resumed.
Measured reason (bench/mx_bench.py, docs/architecture.md): a writer thread
spends most of a batch waiting for the GIL held by the busy loop (13 ms per
batch under 20 SMTP sessions); on the loop the same SQL takes well under a
millisecond, and the fsync, which releases the GIL for its whole length, is
the only part left to a thread. While one fsync runs, the next batch
gathers, so a slow disk makes batches larger instead of callers slower.

Writes from other threads (command-line tools, other loops) go through a
writer thread with the same batching. Either way the transaction is committed
with synchronous=NORMAL and then the WAL file itself is fsync'd before anyone
is told the write is done; an fsync covers every frame written before it, so
one fsync acknowledges every batch committed so far, even another process's.

Several processes (and both paths in one process) may write the same file:
an flock on a side file orders them in the kernel, which wakes the next
writer at once instead of SQLite's busy handler sleeping 1, 2, 5... ms.

Reads run on short-lived per-thread connections; WAL lets them proceed while
a writer commits.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("keepmail.store")
_U32 = struct.Struct("=I")
WriteFn = Callable[[sqlite3.Connection], T]
Outcome = tuple[bool, Any]   # (succeeded, value or exception)

# A batch stops gathering at this many jobs so one huge burst does not delay
# the first caller's acknowledgement unboundedly.
MAX_BATCH = 256

# The loop path's connection does not checkpoint (SQLite's automatic checkpoint
# would copy pages and fsync the database on the event loop, ~40 µs a message
# on the MX); the sync thread starts a checkpoint on a thread of its own once
# this many WAL frames wait to be copied (SQLite's automatic default: 1000).
CHECKPOINT_FRAMES = 1000

# A loop commit's fsync runs on the event loop itself while fsyncs take less
# than this (on average): handing a 0.15 ms fsync to the sync thread and back
# cost more CPU than the fsync (thread wake-ups; MX CPU per message -8 % with
# it inline, bench/mx_bench.py). Slower storage gets the sync thread, so the
# loop serves sessions while the disk works.
INLINE_SYNC_SECONDS = 0.0005


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with the pragmas keepmail relies on."""
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is fsync'd at every commit, so a commit is durable.
        conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _writer_connection(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    # The WAL is fsync'd by _WalSync after the commit, outside the write lock.
    # SQLite still syncs the WAL before each checkpoint and the database after
    # it at NORMAL, so the file stays consistent whatever happens.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class _WriteLock:
    """The cross-process write lock: an flock on `<db>.lock`.

    Each holder opens its own file description: flock excludes descriptions,
    so the loop path and the thread path of one process exclude each other too.
    """

    def __init__(self, db_path: Path) -> None:
        self._fd = os.open(f"{db_path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class _WalSync:
    """fsync of the database's WAL file (the commit point at synchronous=NORMAL)."""

    def __init__(self, db_path: Path) -> None:
        self.path = Path(f"{db_path}-wal")
        self.shm_path = Path(f"{db_path}-shm")
        self._shm_fd: int | None = None   # see frames_to_checkpoint
        self._fd: int | None = None
        self._ino = -1
        self._mutex = threading.Lock()

    def sync(self) -> None:
        with self._mutex:
            fd = self._current_fd()
            if fd is not None:
                os.fsync(fd)

    def frames_to_checkpoint(self) -> int:
        """WAL frames not yet copied into the database, from the wal-index header.

        The -shm file starts with the wal-index header (sqlite.org/walformat.html
        2.1, native byte order): mxFrame, the last valid frame, at byte 16, and
        in the checkpoint info after the two header copies nBackfill, the frames
        already checkpointed, at byte 96. A reading torn by a concurrent writer
        only moves the next checkpoint a little.

        The -shm file is opened once and kept open until `close`: closing any fd
        of a file drops every POSIX lock this process holds on it, SQLite's locks
        on -shm included; another process would then think the wal-index unused,
        reset it, and our mapping of it would fault (SIGBUS, seen in a test).
        """
        with self._mutex:
            if self._shm_fd is None:
                try:
                    self._shm_fd = os.open(self.shm_path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return 0
            head = os.pread(self._shm_fd, 100, 0)
        if len(head) < 100:
            return 0
        return max(0, _U32.unpack_from(head, 16)[0] - _U32.unpack_from(head, 96)[0])

    def _current_fd(self) -> int | None:
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return None  # no WAL: every commit has already been checkpointed
        if self._fd is None or ino != self._ino:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._ino = ino
            # A new WAL file: its directory entry must be durable as well.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self._fd

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._shm_fd is not None:   # after SQLite's connections are closed
                os.close(self._shm_fd)
                self._shm_fd = None


def _run_one(conn: sqlite3.Connection, fn: WriteFn[Any]) -> Outcome:
    conn.execute("SAVEPOINT job")
    try:
        value = fn(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return False, exc
    conn.execute("RELEASE job")
    return True, value


def _commit_batch(conn: sqlite3.Connection, fns: list[WriteFn[Any]]) -> list[Outcome]:
    """Run the jobs in one transaction (the caller holds the write lock).

    Raises if the transaction itself fails: then none of the jobs happened.
    """
    outcomes = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for fn in fns:
            outcomes.append(_run_one(conn, fn))
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise
    return outcomes


class Database:
    """One SQLite file: group-committed writes plus read helpers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wal = _WalSync(path)
        self._closed = False
        self.commits = 0  # counters, read by benchmarks and metrics
        self.writes = 0
        # The thread path, for writers outside the owning loop.
        self._jobs: queue.Queue[tuple[WriteFn[Any], Future[Any]] | None] = queue.Queue()
        self._thread_conn = _writer_connection(path)
        self._thread_lock = _WriteLock(path)
        self._thread = threading.Thread(target=self._write_loop, name=f"db-writer:{path.name}",
                                        daemon=True)
        self._thread.start()
        # The loop path (created by the first loop that writes).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_conn: sqlite3.Connection | None = None
        self._loop_lock: _WriteLock | None = None
        self._loop_jobs: list[tuple[WriteFn[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-sync")
        self._sync_seconds = 0.0  # recent fsync time, see INLINE_SYNC_SECONDS
        self._checkpointer = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="db-checkpoint")
        self._checkpointing = False
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_lock: _WriteLock | None = None
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="db-reader")

    # -- writes -------------------------------------------------------------
    def submit(self, fn: WriteFn[T]) -> Future[T]:
        """Queue a write on the writer thread; resolves once it is durable."""
        if self._closed:
            raise RuntimeError("database is closed")
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut

    async def write(self, fn: WriteFn[T]) -> T:
        loop = asyncio.get_running_loop()
        if not self._owns(loop):
            return await asyncio.wrap_future(self.submit(fn))
        if self._closed:
            raise RuntimeError("database is closed")
        fut: asyncio.Future[T] = loop.create_future()
        self._loop_jobs.append((fn, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop_jobs())
        return await fut

    def write_sync(self, fn: WriteFn[T]) -> T:
        return self.submit(fn).result()

    def _owns(self, loop: asyncio.AbstractEventLoop) -> bool:
        """The first loop that writes owns the loop path (until it is closed)."""
        if self._loop is loop:
            return True
        if self._loop is not None and not self._loop.is_closed():
            return False
        self._loop = loop
        if self._loop_conn is None:
            self._loop_conn = _writer_connection(self.path)
            self._loop_conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _sync_loop_batch
            self._loop_lock = _WriteLock(self.path)
        self._loop_jobs = []
        self._flusher = None
        return True

    async def _flush_loop_jobs(self) -> None:
        loop = asyncio.get_running_loop()
        while self._loop_jobs:
            # Let the rest of this loop turn queue its writes before committing.
            await asyncio.sleep(0)
            batch, self._loop_jobs = self._loop_jobs[:MAX_BATCH], self._loop_jobs[MAX_BATCH:]
            try:
                outcomes = await self._commit_on_loop(loop, [fn for fn, _ in batch])
                if isinstance(outcomes, BaseException):
                    raise outcomes
                sync = self._sync_after_commit(loop)
            except BaseException as exc:  # not committed, or not known to be durable
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            sync.add_done_callback(lambda s, b=batch, o=outcomes: _settle(s, b, o))
            # One commit in flight at a time: the next batch gathers meanwhile.
            await asyncio.wait([sync])

    async def _commit_on_loop(self, loop: asyncio.AbstractEventLoop,
                              fns: list[WriteFn[Any]]) -> list[Outcome] | BaseException:
        assert self._loop_conn is not None and self._loop_lock is not None
        lock = self._loop_lock
        if not lock.try_acquire():  # another process or our writer thread is writing
            await loop.run_in_executor(None, lock.acquire)
        try:
            outcomes = _commit_batch(self._loop_conn, fns)
        except BaseException as exc:
            return exc
        finally:
            lock.release()
        self.commits += 1
        self.writes += len(fns)
        return outcomes

    def _sync_after_commit(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        if self._sync_seconds >= INLINE_SYNC_SECONDS:
            return loop.run_in_executor(self._syncer, self._sync_loop_batch)
        done: asyncio.Future[None] = loop.create_future()
        try:
            self._sync_loop_batch()
        except OSError as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)
        return done

    def _sync_loop_batch(self) -> None:
        """Make the loop's last commit durable (on the loop or the sync thread);
        start a checkpoint when one is due."""
        start = time.monotonic()
        self._wal.sync()
        # A moving average: one slow fsync (a journal commit) does not switch over.
        self._sync_seconds += (time.monotonic() - start - self._sync_seconds) / 8
        if (not self._checkpointing and not self._closed
                and self._wal.frames_to_checkpoint() > CHECKPOINT_FRAMES):
            self._checkpointing = True
            try:
                self._checkpointer.submit(self._checkpoint)
            except RuntimeError:  # shutting down
                self._checkpointing = False

    def _checkpoint(self) -> None:
        """Copy the WAL into the database, on the checkpoint thread.

        Under the write lock, as SQLite's automatic checkpoint runs right after a
        commit: with no frame appended meanwhile the whole WAL is copied, so the
        next writer starts the WAL file over instead of growing it. The event loop
        goes on serving meanwhile; only the next commit waits for the lock.
        """
        try:
            if self._checkpoint_conn is None or self._checkpoint_lock is None:
                self._checkpoint_conn = connect(self.path)
                self._checkpoint_lock = _WriteLock(self.path)
            lock = self._checkpoint_lock
            lock.acquire()
            try:
                self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                lock.release()
        except (sqlite3.Error, OSError) as exc:  # busy or failing: the next one will retry
            log.warning("checkpoint of %s failed: %s", self.path.name, exc)
        finally:
            self._checkpointing = False

    def _write_loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            self._run_thread_batch(batch)

    def _run_thread_batch(self, batch: list[tuple[WriteFn[Any], Future[Any]]]) -> None:
        self._thread_lock.acquire()
        try:
            outcomes = _commit_batch(self._thread_conn, [fn for fn, _ in batch])
        except BaseException as exc:  # the commit itself failed: nothing is durable
            for _fn, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self._thread_lock.release()
        try:
            self._wal.sync()
        except OSError as exc:
            for _fn, fut in batch:
                fut.set_exception(exc)
            return
        self.commits += 1
        self.writes += len(batch)
        for (_fn, fut), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    # -- reads --------------------------------------------------------------
    def reader(self) -> sqlite3.Connection:
        """A connection for the calling thread (reads see the latest commit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a small read on the calling thread (use for indexed look-ups only)."""
        return fn(self.reader())

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on a reader thread, for anything that may scan."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self.reader()))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finish_loop_jobs()
        self._jobs.put(None)
        self._thread.join()
        self._syncer.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        for conn in (self._thread_conn, self._loop_conn, self._checkpoint_conn,
                     getattr(self._local, "conn", None)):
            if conn is not None:
                conn.close()
        for lock in (self._thread_lock, self._loop_lock, self._checkpoint_lock):
            if lock is not None:
                lock.close()
        self._wal.close()

    def _finish_loop_jobs(self) -> None:
        """At close, commit what the loop path still holds (its loop may be stopping)."""
        jobs, self._loop_jobs = self._loop_jobs, []
        if not jobs:
            return
        done: list[Future[Any]] = []
        for fn, _ in jobs:
            fut: Future[Any] = Future()
            self._jobs.put((fn, fut))
            done.append(fut)
        for (_fn, afut), fut in zip(jobs, done, strict=True):
            exc = fut.exception()
            if afut.done():
                continue
            if exc is not None:
                afut.get_loop().call_soon_threadsafe(_set_exception, afut, exc)
            else:
                afut.get_loop().call_soon_threadsafe(_set_result, afut, fut.result())


def _settle(sync: asyncio.Future[None], batch: list[tuple[WriteFn[Any], asyncio.Future[Any]]],
            outcomes: list[Outcome]) -> None:
    """Resume the callers of a committed batch once its fsync is done."""
    error = sync.exception()
    for (_fn, fut), (ok, value) in zip(batch, outcomes, strict=True):
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        elif ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
