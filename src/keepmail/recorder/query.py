"""Reading the flight recorder: search traces, show one timeline.

Used by `keepmail log` and the web console. Opens the recorder database
read-only so it can run beside a live server.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TraceFilter:
    sender: str | None = None
    rcpt: str | None = None
    ip: str | None = None
    message_id: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None
    account: str | None = None   # restrict to traces touching this address (self-service)
    kind: str | None = None
    limit: int = 100


def open_readonly(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def _fts_query(text: str) -> str:
    # Quote each word so user input is never parsed as FTS5 syntax.
    words = [w.replace('"', '""') for w in text.split()]
    return " ".join(f'"{w}"' for w in words)


def search(conn: sqlite3.Connection, f: TraceFilter) -> list[dict[str, Any]]:
    where: list[str] = []
    args: list[Any] = []
    contains = {"mail_from": f.sender, "rcpts": f.rcpt}
    for column, value in contains.items():
        if value:
            where.append(f"instr(t.{column}, ?) > 0")
            args.append(value.lower())
    exact = {"ip": f.ip, "kind": f.kind}
    for column, value in exact.items():
        if value:
            where.append(f"t.{column} = ?")
            args.append(value)
    if f.message_id:
        message_id = f.message_id.strip().strip("<>").join("<>")
        where.append("t.message_id = ?")
        args.append(message_id)
        if any(ch.isalnum() for ch in message_id):
            # Candidates from the full-text index (message_id has no index of its
            # own; see recorder.SCHEMA), the exact match above decides.
            where.append("t.n IN (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?)")
            args.append(_fts_query(message_id))
    if f.since is not None:
        where.append("t.started >= ?")
        args.append(f.since)
    if f.until is not None:
        where.append("t.started <= ?")
        args.append(f.until)
    if f.account:
        # instr, not LIKE: "_" and "%" in an address must not act as wildcards.
        where.append("(t.account = ? OR t.mail_from = ? OR instr(' ' || t.rcpts || ' ', ?) > 0)")
        args += [f.account, f.account, f" {f.account} "]
    if f.text:
        where.append("t.n IN (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?)")
        args.append(_fts_query(f.text))
    sql = "SELECT t.* FROM traces t"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY t.started DESC LIMIT ?"
    args.append(f.limit)
    rows = [dict(r) for r in conn.execute(sql, args)]
    for row in rows:
        row.pop("n", None)
    return rows


def get_trace(conn: sqlite3.Connection, trace_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM traces WHERE id = ?", (trace_id,)).fetchone()
    if row is None:
        return None
    trace = dict(row)
    trace.pop("n", None)
    return trace


def timeline(conn: sqlite3.Connection, trace_id: str) -> list[dict[str, Any]]:
    """Events of a trace, its parent (the session) and its children (deliveries), by time."""
    trace = get_trace(conn, trace_id)
    if trace is None:
        return []
    ids = {trace_id}
    if trace["parent"]:
        ids.add(trace["parent"])
    ids |= {r[0] for r in conn.execute("SELECT id FROM traces WHERE parent = ?", (trace_id,))}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT trace_id, events FROM event_log WHERE trace_id IN ({marks})"
                        " ORDER BY id", list(ids))
    found = [{"trace_id": r["trace_id"], "ts": ts, "kind": kind, "data": data}
             for r in rows for ts, kind, data in json.loads(r["events"])]
    # Stable: events of one time keep the order they were written in.
    found.sort(key=lambda e: e["ts"])
    return found


def events(conn: sqlite3.Connection, kind: str | None = None) -> list[dict[str, Any]]:
    """Every event (of one kind), in the order written: for tools and tests."""
    return [{"trace_id": r[0], "ts": ts, "kind": k, "data": data}
            for r in conn.execute("SELECT trace_id, events FROM event_log ORDER BY id")
            for ts, k, data in json.loads(r[1]) if kind is None or k == kind]
