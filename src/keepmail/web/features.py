"""Optional parts of keepmail the console shows when they exist, imported lazily.

The queue, quarantine, DKIM keys and abuse holds are written by other
packages; a page for a part that is missing says "not available" instead
of failing, and the import happens at request time so a later install
lights the page up without touching the console.
"""

from __future__ import annotations

import importlib
import sqlite3
from types import ModuleType
from typing import Any


def module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def queue() -> ModuleType | None:
    """keepmail.store.queue (the outbound queue's tables)."""
    return module("keepmail.store.queue")


def quarantine() -> tuple[ModuleType, ModuleType] | None:
    """(keepmail.store.quarantine, keepmail.inbound.quarantine) or None."""
    store_mod, inbound_mod = module("keepmail.store.quarantine"), \
        module("keepmail.inbound.quarantine")
    if store_mod is None or inbound_mod is None or not hasattr(inbound_mod, "release"):
        return None
    return store_mod, inbound_mod


def dkim_keys(kapp: Any) -> Any | None:
    """A keepmail.outbound.dkimkeys.DkimKeys on the app's store, or None."""
    mod = module("keepmail.outbound.dkimkeys")
    if mod is None or not hasattr(mod, "DkimKeys"):
        return None
    settings = getattr(kapp.config, "outbound", None)
    hours = float(getattr(settings, "dkim_activate_hours", 0.0) or 0.0)
    return mod.DkimKeys(kapp.store, activate_after=hours * 3600)


def abuse_store() -> ModuleType | None:
    """keepmail.store.abuse (holds and alerts tables) or None."""
    return module("keepmail.store.abuse")


def outbound_agent(kapp: Any) -> Any | None:
    return getattr(kapp, "outbound_agent", None)


def abuse_guards(kapp: Any) -> Any | None:
    return getattr(kapp, "abuse", None)


def safe_count(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> int | None:
    """A COUNT that is None when its table does not exist (yet)."""
    try:
        row = conn.execute(sql, args).fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0] or 0)
