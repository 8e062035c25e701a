"""/metrics for Prometheus: figures from the recorder and the store, read at scrape time.

Access: from loopback without credentials (a local Prometheus or node
agent), otherwise with `Authorization: Bearer <[web] metrics_token>` or an
admin console session. Each Web app has its own CollectorRegistry, so
several servers in one process (tests) do not collide.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..recorder.query import open_readonly
from ..tls import certificate_expiry
from .context import client_ip, current_viewer, web_of
from .features import safe_count
from .settings import settings_of
from .stats import last_day_counts


class KeepmailCollector:
    """Reads current figures on each scrape (nothing is counted twice or kept in memory)."""

    def __init__(self, web: Any) -> None:
        self.web = web

    def collect(self) -> Iterator[Any]:
        yield from self._recorder()
        yield from self._store()
        yield from self._server()
        logins = CounterMetricFamily("keepmail_web_logins", "Console login attempts since start",
                                     labels=["outcome"])
        for outcome, n in sorted(self.web.login_counts.items()):
            logins.add_metric([outcome], n)
        yield logins

    def _recorder(self) -> Iterator[Any]:
        traces = GaugeMetricFamily(
            "keepmail_traces_last_24h", "Flight-recorder traces started in the last 24 hours, "
            "by kind (message, session, delivery, ...) and status", labels=["kind", "status"])
        conn = open_readonly(self.web.recorder.path)
        try:
            rows = last_day_counts(conn, time.time() - 86400)
        finally:
            conn.close()
        for kind, status, n in rows:
            traces.add_metric([kind, status or "none"], n)
        yield traces

    def _store(self) -> Iterator[Any]:
        def read(c: sqlite3.Connection) -> dict[str, int | None]:
            return {
                "queue_messages": safe_count(c, "SELECT COUNT(*) FROM queue_messages"),
                "queue_recipients": safe_count(c, "SELECT COUNT(*) FROM queue_rcpts"),
                "queue_held_recipients": safe_count(
                    c, "SELECT COUNT(*) FROM queue_rcpts WHERE held = 1"),
                "queue_oldest_age_seconds": safe_count(
                    c, "SELECT COALESCE(? - MIN(created), 0) FROM queue_messages",
                    (time.time(),)),
                "quarantine_messages": safe_count(
                    c, "SELECT COUNT(*) FROM quarantine WHERE released IS NULL"),
                "accounts": safe_count(c, "SELECT COUNT(*) FROM accounts"),
                "domains": safe_count(c, "SELECT COUNT(*) FROM domains"),
            }

        for name, value in self.web.store.read_now(read).items():
            if value is not None:
                yield GaugeMetricFamily(f"keepmail_{name}", name.replace("_", " "), value=value)

    def _server(self) -> Iterator[Any]:
        kapp = self.web.kapp
        try:
            expiry = certificate_expiry(kapp.tls_files.cert).timestamp()
            yield GaugeMetricFamily("keepmail_tls_certificate_expiry_timestamp_seconds",
                                    "When the TLS certificate expires", value=expiry)
        except (OSError, ValueError):
            pass
        stat = os.statvfs(kapp.config.data_dir)
        yield GaugeMetricFamily("keepmail_data_disk_free_bytes", "Free space for the data "
                                "folder", value=stat.f_bavail * stat.f_frsize)


def allowed(request: Request) -> bool:
    try:
        if ipaddress.ip_address(client_ip(request)).is_loopback:
            return True
    except ValueError:
        pass
    token = settings_of(web_of(request).config).metrics_token
    given = request.headers.get("authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    viewer = current_viewer(request)
    return viewer is not None and viewer.admin


async def metrics(request: Request) -> Response:
    if not allowed(request):
        raise HTTPException(403, "Metrics are for loopback, a bearer token or admins.")
    web = web_of(request)
    body = await _generate(web.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


async def _generate(registry: CollectorRegistry) -> bytes:
    # The collector reads SQLite: keep that off the event loop.
    return await asyncio.to_thread(generate_latest, registry)


def make_registry(web: Any) -> tuple[CollectorRegistry, KeepmailCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = KeepmailCollector(web)
    registry.register(collector)  # type: ignore[arg-type]
    return registry, collector


routes = [Route("/metrics", metrics)]
