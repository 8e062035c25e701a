"""The admin dashboard: today and the last 7 days at a glance, with SVG charts."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import charts, stats
from .context import Viewer, admin_page, current_viewer, redirect, web_of
from .features import safe_count
from .health import health_report


async def home(request: Request) -> Response:
    viewer = current_viewer(request)
    if viewer is None:
        return redirect("/login")
    return redirect("/admin" if viewer.account.is_admin else "/me")


@admin_page
async def dashboard(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)

    def read(conn):  # type: ignore[no-untyped-def]
        return (stats.summary(conn, stats.midnight(0)), stats.summary(conn, stats.midnight(6)),
                stats.daily(conn, 7))

    today, week, (days, series) = await web.read_recorder(read)
    held = web.store.read_now(lambda c: safe_count(
        c, "SELECT COUNT(DISTINCT msg_id) FROM queue_rcpts WHERE held = 1"))
    rows = [(name, today.figures[name], week.figures[name]) for name in stats.FIGURES]
    rows.append(("held (now)", held if held is not None else "–",
                 held if held is not None else "–"))
    return web.render(request, "dashboard.html", {
        "rows": rows,
        "daily": charts.grouped_bars("Mail per day, last 7 days", days, series),
        "daily_table": (days, series),
        "reasons": charts.horizontal_bars("Why mail was refused (7 days)", week.reasons),
        "reason_rows": week.reasons,
        "health": await health_report(web),
        "now": time.time(),
    })


routes = [Route("/", home), Route("/admin", dashboard)]
