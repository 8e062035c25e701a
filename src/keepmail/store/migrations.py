"""Versioned schema migrations, one independent sequence per component.

Each component (core, queue, quarantine, ...) owns a list of SQL scripts;
script N moves it from version N to N+1. Components migrate independently so
packages can grow their own tables without editing one shared schema file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

_REGISTRY: dict[str, Sequence[str]] = {}


def register(component: str, steps: Sequence[str]) -> None:
    """Declare a component's migrations (call at import time of its module)."""
    _REGISTRY[component] = steps


def migrate(conn: sqlite3.Connection) -> dict[str, int]:
    """Bring every registered component to its newest version; returns versions."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    versions: dict[str, int] = {}
    for component, steps in _REGISTRY.items():
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        current = row[0] if row else 0
        if current > len(steps):
            raise RuntimeError(
                f"database schema for {component!r} is version {current}, newer than this "
                f"keepmail ({len(steps)}); upgrade keepmail"
            )
        for version in range(current, len(steps)):
            _apply(conn, component, version, steps[version])
        versions[component] = len(steps)
    return versions


def _apply(conn: sqlite3.Connection, component: str, version: int, script: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_versions(component, version) VALUES (?, ?)"
            " ON CONFLICT(component) DO UPDATE SET version = excluded.version",
            (component, version + 1),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """The script's statements; a ";" inside a trigger body or a string does not end one."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                out.append(pending.strip().removesuffix(";"))
            pending = ""
    if pending.strip(" \t\r\n;"):
        out.append(pending.strip().removesuffix(";"))
    return out
