"""Dashboard figures from the flight recorder's traces (and the store for the queue).

Trace kinds and statuses this reads (written by smtp/, inbound/, outbound/):
- "message" traces: status accepted / rejected / deferred / abandoned; an
  empty `account` means it came in through the MX, a set one means a user
  submitted it;
- "verdict" events of message traces: action inbox / junk / quarantine /
  reject / tempfail;
- "session" traces with status "refused": connections turned away;
- "delivery" traces: status delivered / deferred / failed / partial.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from dataclasses import dataclass, field

FIGURES = ("received", "rejected", "junk", "quarantined", "sent", "deferred", "bounced",
           "submitted")


@dataclass
class Summary:
    figures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIGURES, 0))
    reasons: list[tuple[str, int]] = field(default_factory=list)


def midnight(days_back: int = 0) -> float:
    today = dt.datetime.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - dt.timedelta(days=days_back)).timestamp()


def summary(conn: sqlite3.Connection, since: float) -> Summary:
    out = Summary()
    f = out.figures
    for inbound, status, n in conn.execute(
            "SELECT account = '', status, COUNT(*) FROM traces WHERE kind = 'message'"
            " AND started >= ? GROUP BY 1, 2", (since,)):
        if status == "accepted":
            f["received" if inbound else "submitted"] += n
        elif status == "rejected" and inbound:
            f["rejected"] += n
    f["rejected"] += conn.execute("SELECT COUNT(*) FROM traces WHERE kind = 'session'"
                                  " AND status = 'refused' AND started >= ?", (since,)).fetchone()[0]
    for action, n in _verdicts(conn, since):
        if action in ("junk", "quarantine"):
            f["junk" if action == "junk" else "quarantined"] += n
    for status, n in conn.execute("SELECT status, COUNT(*) FROM traces WHERE kind = 'delivery'"
                                  " AND started >= ? GROUP BY status", (since,)):
        key = {"delivered": "sent", "deferred": "deferred", "failed": "bounced"}.get(status)
        if key:
            f[key] += n
    out.reasons = reject_reasons(conn, since)
    return out


def _verdicts(conn: sqlite3.Connection, since: float) -> list[tuple[str, int]]:
    # Through the traces' time index, then each trace's events: no event log scan.
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT json_extract(v.value, '$[2].action'), COUNT(*) FROM traces t"
        " JOIN event_log e ON e.trace_id = t.id, json_each(e.events) v"
        " WHERE t.kind = 'message' AND t.started >= ?"
        " AND json_extract(v.value, '$[1]') = 'verdict' GROUP BY 1", (since,))]


_NUMBERS = re.compile(r"\b\d+(?:\.\d+)*\b")


def reason_of(detail: str) -> str:
    """A reply text boiled down so the same refusal groups together."""
    text = detail.strip()
    code = text[:3] if text[:3].isdigit() else ""
    text = text[3:].strip() if code else text
    text = re.split(r"[(;\[]", text, maxsplit=1)[0]
    text = _NUMBERS.sub("#", text).strip(" :-.")
    return (f"{code} {text}".strip() or "(no reason given)")[:90]


def reject_reasons(conn: sqlite3.Connection, since: float, limit: int = 8
                   ) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for detail, n in conn.execute(
            "SELECT detail, COUNT(*) FROM traces WHERE started >= ? AND ((kind = 'message'"
            " AND account = '' AND status = 'rejected') OR (kind = 'session' AND"
            " status = 'refused')) GROUP BY detail", (since,)):
        key = reason_of(detail or "")
        counts[key] = counts.get(key, 0) + n
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def daily(conn: sqlite3.Connection, days: int = 7) -> tuple[list[str], dict[str, list[int]]]:
    """Per-day received / rejected / junk / sent for the chart (oldest day first)."""
    starts = [midnight(d) for d in range(days - 1, -1, -1)]
    labels = [dt.datetime.fromtimestamp(s).strftime("%a %d") for s in starts]
    series: dict[str, list[int]] = {k: [0] * days for k in ("received", "rejected", "junk",
                                                             "sent")}
    bounds = [*starts[1:], float("inf")]
    for i, (start, end) in enumerate(zip(starts, bounds, strict=True)):
        s = _window(conn, start, end)
        for key in series:
            series[key][i] = s[key]
    return labels, series


def _window(conn: sqlite3.Connection, start: float, end: float) -> dict[str, int]:
    row = conn.execute(
        "SELECT SUM(kind = 'message' AND account = '' AND status = 'accepted'),"
        " SUM((kind = 'message' AND account = '' AND status = 'rejected')"
        "     OR (kind = 'session' AND status = 'refused')),"
        " SUM(kind = 'delivery' AND status = 'delivered')"
        " FROM traces WHERE started >= ? AND started < ?", (start, end)).fetchone()
    junk = conn.execute(
        "SELECT COUNT(*) FROM traces t JOIN event_log e ON e.trace_id = t.id,"
        " json_each(e.events) v WHERE t.kind = 'message' AND t.started >= ? AND t.started < ?"
        " AND json_extract(v.value, '$[1]') = 'verdict'"
        " AND json_extract(v.value, '$[2].action') IN ('junk', 'quarantine')", (start, end)
    ).fetchone()[0]
    return {"received": row[0] or 0, "rejected": row[1] or 0, "sent": row[2] or 0,
            "junk": junk or 0}


def last_day_counts(conn: sqlite3.Connection, since: float) -> list[tuple[str, str, int]]:
    """(kind, status, count) of traces since a time, for /metrics."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT kind, status, COUNT(*) FROM traces WHERE started >= ? GROUP BY kind, status",
        (since,))]
