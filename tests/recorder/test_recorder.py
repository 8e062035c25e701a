"""The flight recorder: traces, search, timelines, retention."""

from __future__ import annotations

import time
from pathlib import Path

from keepmail.recorder import Recorder
from keepmail.recorder.query import TraceFilter, get_trace, open_readonly, search, timeline
from keepmail.recorder.query import events as recorder_events


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


def test_search_by_message_id_is_exact(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.db")
    rec._conn.execute("CREATE INDEX traces_message_id ON traces(message_id)")  # older file
    ids = {mid: rec.new_trace("message", message_id=mid, subject=subject) for mid, subject in [
        ("<q1.a@remote.test>", "one"), ("<a.q1@remote.test>", "same words, other order"),
        ("<q1.a@remote.test.evil>", "longer"), ("<...>", "no words"),
        ("<x@y>", "mentions <q1.a@remote.test> in its subject")]}
    late = rec.new_trace("message")
    rec.update(late, message_id="<late@remote.test>", ended=time.time())  # known at the end
    rec.close()
    rec = Recorder(tmp_path / "r.db")  # reopened: the older index is gone
    assert rec._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'traces_message_id'"
                             ).fetchone() is None
    rec.close()
    conn = open_readonly(tmp_path / "r.db")
    for query, mid in [("<q1.a@remote.test>", "<q1.a@remote.test>"),
                       ("q1.a@remote.test", "<q1.a@remote.test>"), ("<...>", "<...>"),
                       (" <q1.a@remote.test.evil> ", "<q1.a@remote.test.evil>")]:
        assert [r["id"] for r in search(conn, TraceFilter(message_id=query))] == [ids[mid]]
    assert [r["id"] for r in search(conn, TraceFilter(message_id="late@remote.test"))] == [late]
    assert search(conn, TraceFilter(message_id="<q1@remote.test>")) == []


def test_retention_prunes_old_traces(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.db", retention_days=1)
    old = rec.new_trace("message", subject="ancient")
    rec.update(old, started=time.time() - 3 * 86400)
    rec.event(old, "x")
    new = rec.new_trace("message", subject="fresh")
    rec.flush()
    with rec._lock:
        rec._pending.events.clear()
    rec._conn.execute("UPDATE event_log SET ts = ? WHERE trace_id = ?",
                      (time.time() - 3 * 86400, old))
    assert rec.prune() == 1
    rec.close()
    conn = open_readonly(tmp_path / "r.db")
    assert get_trace(conn, old) is None and get_trace(conn, new) is not None
    assert search(conn, TraceFilter(text="ancient")) == []


def test_flush_from_other_threads_while_the_flush_thread_writes(tmp_path: Path,
                                                                monkeypatch: object) -> None:
    """flush() and prune() from other threads share the connection with the flush
    thread: serialized, nothing lost, and the flush thread keeps running."""
    import threading

    import keepmail.recorder.recorder as recmod

    monkeypatch.setattr(recmod, "FLUSH_INTERVAL", 0.0005)  # type: ignore[attr-defined]
    rec = Recorder(tmp_path / "r.db")
    traces = [rec.new_trace("message", subject=f"m{i}") for i in range(20)]
    stop = threading.Event()

    def record() -> None:
        n = 0
        while not stop.is_set() and n < 20_000:
            rec.event(traces[n % 20], "smtp", cmd="NOOP", reply="250 2.0.0 OK", n=n)
            n += 1
        counts.append(n)

    counts: list[int] = []
    writer = threading.Thread(target=record)
    writer.start()
    for _ in range(200):
        rec.flush()
        rec.prune()
    stop.set()
    writer.join()
    assert rec._thread.is_alive()
    rec.close()
    conn = open_readonly(tmp_path / "r.db")
    assert len(recorder_events(conn)) == counts[0]
    assert conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0] == 20


def test_trace_written_before_it_ends_is_completed_later(tmp_path: Path,
                                                         monkeypatch: object) -> None:
    """A long trace's summary is written after HOLD_SECONDS and updated when it ends;
    a new trace is inserted without being looked up first."""
    import keepmail.recorder.recorder as recmod

    rec = Recorder(tmp_path / "r.db")
    monkeypatch.setattr(recmod, "HOLD_SECONDS", 0.0)  # type: ignore[attr-defined]
    session = rec.new_trace("session", ip="192.0.2.9", rcpts="a@example.test")
    rec.flush(everything=False)  # due at once: written while still open
    conn = open_readonly(tmp_path / "r.db")
    early = get_trace(conn, session)
    assert early is not None and early["ended"] is None and early["rcpts"] == "a@example.test"
    rec.update(session, rcpts="b@example.test", status="done", ended=time.time())
    rec.flush()
    done = get_trace(conn, session)
    assert done is not None and done["ended"] is not None and done["status"] == "done"
    assert done["rcpts"] == "a@example.test b@example.test" and done["ip"] == "192.0.2.9"
    assert [r["id"] for r in search(conn, TraceFilter(text="done"))] == [session]
    rec.close()


def write_old_recorder(path: Path) -> None:
    """A recorder file as keepmail wrote it before event_log: one row per event."""
    import sqlite3

    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE events (id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL,
                             ts REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
        CREATE INDEX events_trace ON events(trace_id, id);
        CREATE TABLE traces (n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL DEFAULT '', parent TEXT NOT NULL DEFAULT '',
            started REAL NOT NULL, ended REAL, ip TEXT NOT NULL DEFAULT '',
            helo TEXT NOT NULL DEFAULT '', account TEXT NOT NULL DEFAULT '',
            mail_from TEXT NOT NULL DEFAULT '', rcpts TEXT NOT NULL DEFAULT '',
            message_id TEXT NOT NULL DEFAULT '', subject TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '');
        INSERT INTO traces(id, kind, started) VALUES ('t1', 'message', 100.0);
        INSERT INTO events(trace_id, ts, kind, data) VALUES
            ('t1', 100.0, 'connect', '{"ip": "192.0.2.1"}'),
            ('t1', 100.5, 'delivered', '{"uid": 7}'),
            ('t1', 100.5, 'smtp', '{"reply": "250 ok"}');
    """)
    old.commit()
    old.close()


def test_events_of_an_older_recorder_are_regrouped_on_open(tmp_path: Path) -> None:
    """A recorder file from before event_log keeps its timelines."""
    path = tmp_path / "r.db"
    write_old_recorder(path)
    Recorder(path).close()
    conn = open_readonly(path)
    steps = [(e["kind"], e["data"]) for e in timeline(conn, "t1")]
    assert steps == [("connect", {"ip": "192.0.2.1"}), ("delivered", {"uid": 7}),
                     ("smtp", {"reply": "250 ok"})]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchone() is None


def test_a_repeated_trace_id_loses_one_summary_not_the_flush(tmp_path: Path,
                                                             monkeypatch: object) -> None:
    import keepmail.recorder.recorder as recmod

    rec = Recorder(tmp_path / "r.db")
    ids = iter(["6744f3a1aaaaaaaaaaaaaa", "6744f3a1aaaaaaaaaaaaaa", "6744f3a1bbbbbbbbbbbbbb"])
    monkeypatch.setattr(recmod, "new_trace_id", lambda: next(ids))  # type: ignore[attr-defined]
    first = rec.new_trace("message", subject="first")
    rec.event(first, "delivered")
    rec.update(first, ended=time.time())
    rec.flush()
    again = rec.new_trace("message", subject="again")
    other = rec.new_trace("message", subject="other")
    rec.event(other, "delivered")
    rec.update(again, ended=time.time())
    rec.update(other, ended=time.time())
    rec.flush()
    rec.close()
    conn = open_readonly(tmp_path / "r.db")
    assert get_trace(conn, first)["subject"] == "first"  # type: ignore[index]
    assert get_trace(conn, other)["subject"] == "other"  # type: ignore[index]
    assert [e["kind"] for e in timeline(conn, other)] == ["delivered"]
