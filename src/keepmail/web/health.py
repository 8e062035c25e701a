"""Server health for the dashboard and the health page: certificate, queue, disk.

Each item says plainly what is wrong and what to do, like the DNS assistant.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from ..tls import certificate_expiry

OK, WARN, ERROR, INFO = "ok", "warn", "error", "info"


@dataclass(frozen=True)
class Item:
    name: str
    status: str
    value: str
    advice: str = ""


def certificate_item(cert_path: Any) -> Item:
    try:
        expiry = certificate_expiry(cert_path)
    except (OSError, ValueError) as exc:
        return Item("TLS certificate", ERROR, "cannot be read",
                    f"{cert_path}: {exc}. Point [tls] cert_file at a PEM certificate.")
    days = (expiry - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    value = f"expires {expiry:%Y-%m-%d} ({days:.0f} days left)"
    if days < 0:
        return Item("TLS certificate", ERROR, value, "The certificate has expired: clients "
                    "and other servers refuse it. Renew it and restart keepmail.")
    if days < 14:
        return Item("TLS certificate", WARN, value, "Renew the certificate soon (e.g. with "
                    "your ACME client) and restart keepmail.")
    return Item("TLS certificate", OK, value)


def queue_item(conn: sqlite3.Connection, now: float) -> list[Item]:
    try:
        msgs, oldest = conn.execute(
            "SELECT COUNT(*), MIN(created) FROM queue_messages").fetchone()
        held = conn.execute("SELECT COUNT(DISTINCT msg_id) FROM queue_rcpts WHERE held = 1"
                            ).fetchone()[0]
    except sqlite3.OperationalError:
        return [Item("Outbound queue", INFO, "not available",
                     "The outbound queue is not installed in this build.")]
    age_h = (now - oldest) / 3600 if oldest else 0.0
    value = f"{msgs} message(s), oldest {age_h:.1f} h" if msgs else "empty"
    items = [Item("Outbound queue", WARN if age_h > 4 else OK, value,
                  "Mail has waited more than 4 hours: open the queue to see the remote "
                  "servers' replies." if age_h > 4 else "")]
    if held:
        items.append(Item("Held mail", WARN, f"{held} message(s) held",
                          "Review held mail: release it if the account is safe."))
    return items


def disk_item(path: Any) -> Item:
    usage = shutil.disk_usage(path)
    free_pct = 100 * usage.free / usage.total if usage.total else 0
    value = f"{usage.free / 2**30:.1f} GB free ({free_pct:.0f} %)"
    if free_pct < 5:
        return Item("Disk", ERROR, value, "Almost full: keepmail will refuse mail (4xx) "
                    "when it cannot store it. Free space or grow the disk.")
    if free_pct < 15:
        return Item("Disk", WARN, value, "Free some space before it runs out.")
    return Item("Disk", OK, value)


async def health_report(web: Any) -> list[Item]:
    kapp = web.kapp
    items = [certificate_item(kapp.tls_files.cert)]
    items += web.store.read_now(lambda c: queue_item(c, time.time()))
    items.append(disk_item(kapp.config.data_dir))
    return items
