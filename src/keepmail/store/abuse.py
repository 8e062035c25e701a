"""The abuse guard's tables and SQL functions (synchronous, connection-first).

What must survive a restart: authentication throttles (so restarting the
server does not reset an attacker's penalty), the addresses each user logged
in from successfully (so a throttle never locks the real user out), account
holds, alerts for the console, per-account/domain limit overrides, and each
account's behaviour profile and correspondents (the baseline the hacked-account
detector compares against).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import migrations

SCHEMA = [
    """
    CREATE TABLE abuse_throttle (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        score REAL NOT NULL,
        updated REAL NOT NULL,
        next_ok REAL NOT NULL DEFAULT 0,
        strikes INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (kind, key)
    );
    CREATE TABLE abuse_known_ips (
        username TEXT NOT NULL,
        ip TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (username, ip)
    );
    CREATE TABLE abuse_holds (
        account_id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        since REAL NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT 'detector'
    );
    CREATE TABLE abuse_alerts (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        ip TEXT NOT NULL DEFAULT '',
        summary TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        acknowledged INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX abuse_alerts_ts ON abuse_alerts(ts);
    CREATE TABLE abuse_limits (
        scope TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE abuse_profiles (
        account TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE abuse_correspondents (
        account TEXT NOT NULL,
        address TEXT NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (account, address)
    )
    """,
]

migrations.register("abuse", SCHEMA)


# -- throttles ------------------------------------------------------------------
@dataclass
class ThrottleRow:
    kind: str
    key: str
    score: float
    updated: float
    next_ok: float
    strikes: int


def save_throttle(conn: sqlite3.Connection, row: ThrottleRow) -> None:
    conn.execute(
        "INSERT INTO abuse_throttle(kind, key, score, updated, next_ok, strikes)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(kind, key) DO UPDATE SET"
        " score = excluded.score, updated = excluded.updated, next_ok = excluded.next_ok,"
        " strikes = excluded.strikes",
        (row.kind, row.key, row.score, row.updated, row.next_ok, row.strikes))


def load_throttles(conn: sqlite3.Connection, since: float) -> list[ThrottleRow]:
    """Throttles touched since `since` or still blocking (older ones have decayed away)."""
    rows = conn.execute("SELECT * FROM abuse_throttle WHERE updated >= ? OR next_ok >= ?",
                        (since, since)).fetchall()
    return [ThrottleRow(r["kind"], r["key"], r["score"], r["updated"], r["next_ok"],
                        r["strikes"]) for r in rows]


def delete_throttles(conn: sqlite3.Connection, kind: str | None = None,
                     key: str | None = None) -> int:
    sql, args = "DELETE FROM abuse_throttle WHERE 1 = 1", []
    if kind is not None:
        sql, args = sql + " AND kind = ?", [*args, kind]
    if key is not None:
        sql, args = sql + " AND key = ?", [*args, key]
    return conn.execute(sql, args).rowcount


def prune_throttles(conn: sqlite3.Connection, before: float) -> int:
    return conn.execute("DELETE FROM abuse_throttle WHERE updated < ? AND next_ok < ?",
                        (before, before)).rowcount


def list_throttles(conn: sqlite3.Connection, now: float, limit: int = 200) -> list[ThrottleRow]:
    rows = conn.execute("SELECT * FROM abuse_throttle ORDER BY (next_ok > ?) DESC, score DESC"
                        " LIMIT ?", (now, limit)).fetchall()
    return [ThrottleRow(r["kind"], r["key"], r["score"], r["updated"], r["next_ok"],
                        r["strikes"]) for r in rows]


# -- addresses users logged in from -----------------------------------------------
def save_known_ip(conn: sqlite3.Connection, username: str, ip: str, now: float) -> None:
    conn.execute(
        "INSERT INTO abuse_known_ips(username, ip, first_seen, last_seen) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(username, ip) DO UPDATE SET last_seen = excluded.last_seen",
        (username, ip, now, now))


def load_known_ips(conn: sqlite3.Connection, since: float) -> list[tuple[str, str, float]]:
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT username, ip, last_seen FROM abuse_known_ips WHERE last_seen >= ?", (since,))]


# -- holds --------------------------------------------------------------------------
@dataclass(frozen=True)
class Hold:
    account_id: int
    address: str
    since: float
    reason: str
    source: str


def set_hold(conn: sqlite3.Connection, account_id: int, address: str, since: float,
             reason: str, source: str) -> None:
    conn.execute(
        "INSERT INTO abuse_holds(account_id, address, since, reason, source)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(account_id) DO NOTHING",
        (account_id, address, since, reason, source))


def clear_hold(conn: sqlite3.Connection, account_id: int) -> bool:
    return conn.execute("DELETE FROM abuse_holds WHERE account_id = ?",
                        (account_id,)).rowcount > 0


def list_holds(conn: sqlite3.Connection) -> list[Hold]:
    return [Hold(r[0], r[1], r[2], r[3], r[4]) for r in conn.execute(
        "SELECT account_id, address, since, reason, source FROM abuse_holds ORDER BY since")]


# -- alerts -------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    id: int
    ts: float
    kind: str
    account: str
    ip: str
    summary: str
    detail: dict[str, Any]
    acknowledged: bool


def add_alert(conn: sqlite3.Connection, ts: float, kind: str, summary: str, *,
              account: str = "", ip: str = "", detail: dict[str, Any] | None = None) -> int:
    cur = conn.execute(
        "INSERT INTO abuse_alerts(ts, kind, account, ip, summary, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (ts, kind, account, ip, summary, json.dumps(detail or {}, default=str)))
    return int(cur.lastrowid or 0)


def list_alerts(conn: sqlite3.Connection, limit: int = 100,
                unacknowledged: bool = False) -> list[Alert]:
    sql = "SELECT * FROM abuse_alerts"
    if unacknowledged:
        sql += " WHERE acknowledged = 0"
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [Alert(r["id"], r["ts"], r["kind"], r["account"], r["ip"], r["summary"],
                  json.loads(r["detail"]), bool(r["acknowledged"])) for r in rows]


def acknowledge_alert(conn: sqlite3.Connection, alert_id: int) -> bool:
    return conn.execute("UPDATE abuse_alerts SET acknowledged = 1 WHERE id = ?",
                        (alert_id,)).rowcount > 0


# -- limit overrides ----------------------------------------------------------------
def set_limits(conn: sqlite3.Connection, scope: str, values: dict[str, int]) -> None:
    """Overrides for one account ('user@dom') or a whole domain ('@dom')."""
    conn.execute("INSERT INTO abuse_limits(scope, data) VALUES (?, ?) ON CONFLICT(scope)"
                 " DO UPDATE SET data = excluded.data", (scope.lower(), json.dumps(values)))


def get_limits(conn: sqlite3.Connection, scope: str) -> dict[str, int]:
    row = conn.execute("SELECT data FROM abuse_limits WHERE scope = ?",
                       (scope.lower(),)).fetchone()
    return dict(json.loads(row[0])) if row else {}


def delete_limits(conn: sqlite3.Connection, scope: str) -> bool:
    return conn.execute("DELETE FROM abuse_limits WHERE scope = ?",
                        (scope.lower(),)).rowcount > 0


# -- behaviour profiles and correspondents ------------------------------------------
def save_profile(conn: sqlite3.Connection, account: str, data: dict[str, Any],
                 now: float) -> None:
    conn.execute("INSERT INTO abuse_profiles(account, data, updated) VALUES (?, ?, ?)"
                 " ON CONFLICT(account) DO UPDATE SET data = excluded.data,"
                 " updated = excluded.updated", (account, json.dumps(data), now))


def load_profile(conn: sqlite3.Connection, account: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT data FROM abuse_profiles WHERE account = ?",
                       (account,)).fetchone()
    return dict(json.loads(row[0])) if row else None


def add_correspondents(conn: sqlite3.Connection, account: str, addresses: Iterable[str],
                       now: float) -> None:
    conn.executemany(
        "INSERT INTO abuse_correspondents(account, address, last_seen) VALUES (?, ?, ?)"
        " ON CONFLICT(account, address) DO UPDATE SET last_seen = excluded.last_seen",
        [(account, a, now) for a in addresses])


def load_correspondents(conn: sqlite3.Connection, account: str, since: float) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT address FROM abuse_correspondents WHERE account = ? AND last_seen >= ?",
        (account, since))}


def prune_correspondents(conn: sqlite3.Connection, before: float) -> int:
    return conn.execute("DELETE FROM abuse_correspondents WHERE last_seen < ?",
                        (before,)).rowcount
