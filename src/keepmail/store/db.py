"""SQLite access with group commit.

Every write is a small function run by one writer thread on one connection.
The thread takes all writes waiting at that moment, runs each inside its own
SAVEPOINT (so one failing write does not undo the others) and commits them
together: one fsync of the WAL acknowledges many concurrent SMTP sessions.
This is how "a 250 is a promise" stays fast (DESIGN.md, principle 1).

Reads run on short-lived per-thread connections; WAL lets them proceed while
the writer commits.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], T]

# The writer stops gathering a batch at this many jobs so one huge burst does
# not delay the first caller's acknowledgement unboundedly.
MAX_BATCH = 256


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


class Database:
    """One SQLite file: a writer thread with group commit plus read helpers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.Queue[tuple[WriteFn[Any], Future[Any]] | None] = queue.Queue()
        self._writer_conn = connect(path)
        self._thread = threading.Thread(target=self._write_loop, name=f"db-writer:{path.name}",
                                        daemon=True)
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="db-reader")
        self._closed = False
        self.commits = 0  # counters, read by benchmarks and metrics
        self.writes = 0
        self._thread.start()

    # -- writes -------------------------------------------------------------
    def submit(self, fn: WriteFn[T]) -> Future[T]:
        """Queue a write; the future resolves after the batch is durably committed."""
        if self._closed:
            raise RuntimeError("database is closed")
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut

    async def write(self, fn: WriteFn[T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def write_sync(self, fn: WriteFn[T]) -> T:
        return self.submit(fn).result()

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
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[WriteFn[Any], Future[Any]]]) -> None:
        conn = self._writer_conn
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                outcomes.append((fut, *self._run_one(conn, fn)))
            conn.execute("COMMIT")
        except BaseException as exc:  # the commit itself failed: nothing is durable
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for _fn, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.commits += 1
        self.writes += len(batch)
        for fut, ok, value in outcomes:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    @staticmethod
    def _run_one(conn: sqlite3.Connection, fn: WriteFn[Any]) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT job")
        try:
            value = fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return False, exc
        conn.execute("RELEASE job")
        return True, value

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
        self._jobs.put(None)
        self._thread.join()
        self._writer_conn.close()
        self._readers.shutdown(wait=True)
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
