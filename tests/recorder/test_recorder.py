"""The flight recorder: traces, search, timelines, retention."""

from __future__ import annotations

import time
from pathlib import Path

from keepmail.recorder import Recorder
from keepmail.recorder.query import TraceFilter, get_trace, open_readonly, search, timeline


def test_trace_summary_search_and_timeline(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.db")
    session = rec.new_trace("session", ip="192.0.2.7")
    rec.event(session, "connect", ip="192.0.2.7")
    msg = rec.new_trace("message", parent=session, ip="192.0.2.7", mail_from="a@x.test")
    rec.update(msg, rcpts="b@example.test")
    rec.update(msg, rcpts=["c@example.test", "b@example.test"])
    rec.update(msg, subject='Invoice "Q3" <script>', status="accepted")
    rec.event(msg, "delivered", mailbox="INBOX")
    other = rec.new_trace("message", ip="198.51.100.1", mail_from="z@y.test", subject="other")
    rec.close()
    conn = open_readonly(tmp_path / "r.db")
    t = get_trace(conn, msg)
    assert t is not None and t["rcpts"] == "b@example.test c@example.test"
    assert [r["id"] for r in search(conn, TraceFilter(rcpt="c@example.test"))] == [msg]
    assert [r["id"] for r in search(conn, TraceFilter(text='"Q3"'))] == [msg]
    assert [r["id"] for r in search(conn, TraceFilter(text="invoice OR other"))] == []
    assert {r["id"] for r in search(conn, TraceFilter(kind="message"))} == {msg, other}
    assert [r["id"] for r in search(conn, TraceFilter(account="b@example.test"))] == [msg]
    kinds = [e["kind"] for e in timeline(conn, msg)]
    assert kinds == ["connect", "delivered"], "a message timeline includes its session"


def test_retention_prunes_old_traces(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.db", retention_days=1)
    old = rec.new_trace("message", subject="ancient")
    rec.update(old, started=time.time() - 3 * 86400)
    rec.event(old, "x")
    new = rec.new_trace("message", subject="fresh")
    rec.flush()
    with rec._lock:
        rec._pending.events.clear()
    rec._conn.execute("UPDATE events SET ts = ? WHERE trace_id = ?", (time.time() - 3 * 86400, old))
    assert rec.prune() == 1
    rec.close()
    conn = open_readonly(tmp_path / "r.db")
    assert get_trace(conn, old) is None and get_trace(conn, new) is not None
    assert search(conn, TraceFilter(text="ancient")) == []
