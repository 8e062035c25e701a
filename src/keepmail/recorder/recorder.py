"""The flight recorder: every connection, command, reply, check and delivery.

Events are appended in memory and written in batches by a background thread
to their own SQLite file, so recording never waits on the mail store's fsync
and a busy server writes thousands of events per commit. A trace is one SMTP
session, one message transaction, one delivery or one login; traces link to a
parent (a message to its session) so one timeline shows it all. Summary fields
(sender, recipients, subject, Message-ID, IP, status) are indexed and
full-text searchable with FTS5.

Losing the last fraction of a second of events in a power cut is accepted
(synchronous=NORMAL); losing mail is not, which is why mail lives elsewhere.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .. import ids

log = logging.getLogger("keepmail.recorder")

SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    n INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT '',
    parent TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL,
    ended REAL,
    ip TEXT NOT NULL DEFAULT '',
    helo TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '',
    mail_from TEXT NOT NULL DEFAULT '',
    rcpts TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS traces_started ON traces(started);
CREATE INDEX IF NOT EXISTS traces_parent ON traces(parent);
CREATE INDEX IF NOT EXISTS traces_ip ON traces(ip);
-- No index on message_id: Message-IDs are random, so each new trace dirtied a
-- page of its own there (a third of the recorder's commit, measured); a search
-- by Message-ID finds its candidates through the full-text index instead.
DROP INDEX IF EXISTS traces_message_id;
-- A trace's events as written by one flush: a JSON array of [ts, kind, data]
-- in the order they happened. One row per trace per flush (most messages: one
-- row) instead of one per event, as each row costs an insert into the random
-- trace_id index (measured: about a quarter of the recorder's cost at the MX).
CREATE TABLE IF NOT EXISTS event_log (
    id INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    ts REAL NOT NULL,
    events TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_log_trace ON event_log(trace_id);
-- rowid = traces.n, so a trace's text is replaced by rowid, not by a scan.
CREATE VIRTUAL TABLE IF NOT EXISTS traces_fts USING fts5(body);
"""

# Summary fields a caller may set; `rcpts` accumulates instead of replacing.
SUMMARY_FIELDS = ("kind", "parent", "ip", "helo", "account", "mail_from", "rcpts",
                  "message_id", "subject", "status", "detail", "ended")

FLUSH_INTERVAL = 0.2


def _encode(events: list[tuple[float, str, dict[str, Any]]]) -> str:
    # orjson: about 7x faster than json for these small dicts (a busy MX writes ~8 a message).
    try:
        return orjson.dumps(events, default=str).decode()
    except TypeError:  # e.g. a key that is not a string
        return _JSON.encode(events)


# One encoder instance: json.dumps with non-default options builds a new one per call.
_JSON = json.JSONEncoder(default=str, ensure_ascii=False)


def new_trace_id() -> str:
    """Unique, URL- and header-safe, and ascending by the second.

    8 hex digits of Unix time, then 14 random ones. Ascending ids put a flush's
    new traces on the last pages of the indexes on trace ids (the traces' own,
    the event log's, parents'); random ids dirtied a page each, and writing those
    pages was a third of the recorder's cost at the MX. Ids of one second collide
    with odds n^2 / 2^57: at 10,000 traces a second, once in about 45 years (and
    then the second trace's summary is dropped, not the flush: see _INSERT_NEW).
    """
    return f"{int(time.time()):08x}{ids.token_hex(7)}"


# A trace's summary is written once it ends, or after this many seconds for
# long-lived traces: one row write and one full-text update per message
# instead of one per SMTP command.
HOLD_SECONDS = 2.0


@dataclass
class _Pending:
    events: list[tuple[str, float, str, dict[str, Any]]] = field(default_factory=list)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)


class Recorder:
    def __init__(self, path: Path, retention_days: float = 90.0) -> None:
        self.path = path
        self.retention_days = retention_days
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(SCHEMA)
        _upgrade(self._conn)
        self._lock = threading.Lock()
        # Serializes writers of the one connection: the flush thread, and flush()
        # or prune() called from elsewhere (maintenance, close).
        self._write_lock = threading.Lock()
        self._pending = _Pending()
        self._held: dict[str, dict[str, Any]] = {}  # summaries not yet due (flush thread only)
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._flush_loop, name="recorder", daemon=True)
        self._thread.start()

    # -- recording (called on the event loop; cheap, never blocks on disk) --
    def new_trace(self, kind: str, parent: str = "", **summary: Any) -> str:
        trace_id = new_trace_id()
        summary["kind"] = kind
        summary["parent"] = parent
        summary["started"] = time.time()
        if "rcpts" in summary:
            value = summary.pop("rcpts")
            summary["rcpts_add"] = value if isinstance(value, list) else [value]
        summary[_NEW] = True  # not in the database yet: written without looking it up
        with self._lock:
            pending = self._pending.summaries
            if trace_id in pending:  # pragma: no cover (an id repeated: see new_trace_id)
                _merge_fields(pending[trace_id], summary)
            else:
                pending[trace_id] = summary
        return trace_id

    def event(self, trace_id: str, kind: str, **data: Any) -> None:
        # Serialized later by the flush thread, off the event loop's path.
        event = (trace_id, time.time(), kind, data)
        with self._lock:
            self._pending.events.append(event)

    def update(self, trace_id: str, **summary: Any) -> None:
        with self._lock:
            pending = self._pending.summaries
            current = pending.get(trace_id)
            if current is None and "rcpts" not in summary and "rcpts_add" not in summary:
                pending[trace_id] = summary  # a fresh dict (**): kept as it is
            else:
                _merge_fields(pending.setdefault(trace_id, {}), summary)

    # -- writing ---------------------------------------------------------------
    def _flush_loop(self) -> None:
        while not self._stop:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self.flush(everything=False)
            except Exception:  # e.g. disk full: this batch is lost, recording goes on
                log.exception("flight recorder: writing events failed")

    def flush(self, everything: bool = True) -> None:
        """Write pending events and the summaries that are due (all of them by default)."""
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, _Pending()
            due = self._due(pending.summaries, everything)
            if not pending.events and not due:
                return
            conn = self._conn
            new = [(t, f) for t, f in due.items() if f.get(_NEW)]
            known = [(t, f) for t, f in due.items() if not f.get(_NEW)]
            rows = _group(pending.events)
            with _transaction(conn):
                conn.executemany("INSERT INTO event_log(trace_id, ts, events) VALUES (?, ?, ?)",
                                 rows)
                if new:
                    _insert_new(conn, new)
                for trace_id, fields in known:
                    _merge_summary(conn, trace_id, fields)

    def _due(self, fresh: dict[str, dict[str, Any]], everything: bool) -> dict[str, dict[str, Any]]:
        now = time.time()
        for trace_id, fields in fresh.items():
            held = self._held.get(trace_id)
            if held is None:
                fields["_since"] = now
                self._held[trace_id] = fields
            else:
                _merge_fields(held, fields)
        due = {t: f for t, f in self._held.items()
               if everything or "ended" in f or now - f["_since"] >= HOLD_SECONDS}
        for trace_id in due:
            del self._held[trace_id]
        return due

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
        self.flush()
        self._conn.close()

    def prune(self, now: float | None = None) -> int:
        """Delete traces and events older than the retention period."""
        cutoff = (now or time.time()) - self.retention_days * 86400
        self.flush()
        with self._write_lock, _transaction(self._conn):
            old = [r[0] for r in self._conn.execute(
                "SELECT n FROM traces WHERE started < ?", (cutoff,))]
            for start in range(0, len(old), 500):
                part = old[start:start + 500]
                marks = ",".join("?" * len(part))
                self._conn.execute(f"DELETE FROM event_log WHERE trace_id IN"
                                   f" (SELECT id FROM traces WHERE n IN ({marks}))", part)
                self._conn.execute(f"DELETE FROM traces_fts WHERE rowid IN ({marks})", part)
                self._conn.execute(f"DELETE FROM traces WHERE n IN ({marks})", part)
        return len(old)


def _group(events: list[tuple[str, float, str, dict[str, Any]]]) -> list[tuple[str, float, str]]:
    """event_log rows: each trace's events, in order, as one JSON array."""
    groups: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
    for trace_id, ts, kind, data in events:
        group = groups.get(trace_id)
        if group is None:
            groups[trace_id] = group = []
        group.append((ts, kind, data))
    return [(trace_id, group[0][0], _encode(group)) for trace_id, group in groups.items()]


def _upgrade(conn: sqlite3.Connection) -> None:
    """Recorders before event_log kept one `events` row per event: regroup them once."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
        return
    try:
        with _transaction(conn):
            conn.execute(
                "INSERT INTO event_log(trace_id, ts, events)"
                " SELECT trace_id, min(ts), json_group_array(json_array(ts, kind, json(data)))"
                " FROM (SELECT * FROM events ORDER BY trace_id, ts, id) GROUP BY trace_id")
            conn.execute("DROP TABLE events")
    except sqlite3.Error as exc:  # e.g. a damaged row: old timelines stay unread, not the server
        log.warning("flight recorder: could not regroup older events: %s", exc)


class _transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


# Marks a summary made by new_trace: its trace has no row yet.
_NEW = "_new"

_FTS_FIELDS = ("mail_from", "rcpts", "subject", "message_id", "ip", "helo", "account", "status",
               "detail")


def _merge_fields(current: dict[str, Any], summary: dict[str, Any]) -> None:
    for key, value in summary.items():
        if key == "rcpts":
            current.setdefault("rcpts_add", []).extend(
                value if isinstance(value, list) else [value])
        elif key == "rcpts_add":
            current.setdefault("rcpts_add", []).extend(value)
        elif key != "_since" or key not in current:
            current[key] = value


_NEW_COLUMNS = ("id", "started", *SUMMARY_FIELDS)
# OR IGNORE: a repeated trace id (see new_trace_id) loses that trace's summary, not
# the whole flush.
_INSERT_NEW = (f"INSERT OR IGNORE INTO traces({', '.join(_NEW_COLUMNS)})"
               f" VALUES ({', '.join('?' * len(_NEW_COLUMNS))})")
# The same text _merge_summary indexes, built by SQLite for many rows at once.
_FTS_NEW = ("INSERT INTO traces_fts(rowid, body) SELECT n, "
            + " || ' ' || ".join(_FTS_FIELDS) + " FROM traces WHERE n > ?")


def _insert_new(conn: sqlite3.Connection, new: list[tuple[str, dict[str, Any]]]) -> None:
    """Insert traces known not to be in the database (made by new_trace), with their
    full-text rows, in two statements: most traces are written once, when they end."""
    rows = []
    for trace_id, fields in new:
        added = fields.get("rcpts_add")
        rcpts = " ".join(dict.fromkeys(r for r in added if r)) if added else ""
        rows.append((trace_id, fields["started"], *(
            rcpts if k == "rcpts" else fields.get(k, None if k == "ended" else "")
            for k in SUMMARY_FIELDS)))
    # One writer at a time (BEGIN IMMEDIATE): the new rows are those past the old end.
    last = conn.execute("SELECT coalesce(max(n), 0) FROM traces").fetchone()[0]
    conn.executemany(_INSERT_NEW, rows)
    conn.execute(_FTS_NEW, (last,))


def _merge_summary(conn: sqlite3.Connection, trace_id: str, fields: dict[str, Any]) -> None:
    """Merge a summary into its trace's row (made now if the trace has none yet)."""
    row = conn.execute("SELECT * FROM traces WHERE id = ?", (trace_id,)).fetchone()
    current: dict[str, Any] = dict(row) if row else {
        "id": trace_id, "started": fields.get("started", time.time())}
    changes = {k: fields[k] for k in SUMMARY_FIELDS if k in fields and k != "rcpts"}
    added = fields.get("rcpts_add")
    if added:
        merged = [r for r in (current.get("rcpts") or "").split(" ") if r]
        merged += [r for r in added if r]
        changes["rcpts"] = " ".join(dict.fromkeys(merged))  # ordered, without repeats
    current.update(changes)
    if row is None:
        columns = [c for c in current if c != "n"]
        cur = conn.execute(f"INSERT INTO traces({', '.join(columns)}) VALUES"
                           f" ({', '.join('?' * len(columns))})", [current[c] for c in columns])
        rowid = cur.lastrowid
    else:
        rowid = row["n"]
        if changes:
            conn.execute(f"UPDATE traces SET {', '.join(f'{c} = ?' for c in changes)}"
                         " WHERE n = ?", [*changes.values(), rowid])
        if not any(k in _FTS_FIELDS for k in changes):
            return
        conn.execute("DELETE FROM traces_fts WHERE rowid = ?", (rowid,))
    body = " ".join(str(current.get(k) or "") for k in _FTS_FIELDS)
    conn.execute("INSERT INTO traces_fts(rowid, body) VALUES (?, ?)", (rowid, body))


class NullRecorder:
    """A recorder that keeps nothing (for tools and tests that don't need one)."""

    def new_trace(self, kind: str, parent: str = "", **summary: Any) -> str:
        return new_trace_id()

    def event(self, trace_id: str, kind: str, **data: Any) -> None:
        pass

    def update(self, trace_id: str, **summary: Any) -> None:
        pass
