"""Message trace: search the flight recorder, and one timeline per trace.

Admins (with their second factor) search everything. Everyone else sees only
traces involving their own address, checked exactly here (the recorder's
LIKE filter would let "j_doe" match "jxdoe"), and, for mail they received
rather than sent, other recipients are left out of the timeline so a Bcc
stays a Bcc.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..recorder.query import TraceFilter, get_trace, search, timeline
from .context import Viewer, user_page, web_of

KINDS = ("message", "session", "delivery", "dsn", "imap", "web", "abuse")
FIELDS = ("sender", "rcpt", "subject", "message_id", "ip", "since", "until", "kind", "q")


def _time(value: str, end: bool = False) -> float | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if end and len(value.strip()) == 10:   # a bare date ends at the end of that day
        when += dt.timedelta(days=1)
    return when.timestamp()


def involves(trace: dict[str, Any], address: str) -> bool:
    rcpts = (trace.get("rcpts") or "").lower().split()
    return address in (trace.get("account"), trace.get("mail_from")) or address in rcpts


def filter_from(params: dict[str, str], viewer: Viewer) -> TraceFilter:
    text = " ".join(v for v in (params.get("subject", ""), params.get("q", "")) if v) or None
    kind = params.get("kind", "")
    return TraceFilter(
        sender=params.get("sender") or None, rcpt=params.get("rcpt") or None,
        ip=params.get("ip") or None, message_id=params.get("message_id") or None,
        since=_time(params.get("since", "")), until=_time(params.get("until", ""), end=True),
        text=text, kind=kind if kind in KINDS else None,
        account=None if viewer.admin else viewer.address, limit=200)


@user_page
async def trace_search(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    params = {k: request.query_params.get(k, "").strip()[:300] for k in FIELDS}
    if not any(params.values()):
        params["kind"] = "message"    # the first view: messages, not sessions and logins
    filt = filter_from(params, viewer)
    try:
        rows = await web.read_recorder(lambda c: search(c, filt))
    except sqlite3.OperationalError as exc:
        rows, error = [], f"Search failed: {exc}"
    else:
        error = ""
    if not viewer.admin:
        rows = [r for r in rows if involves(r, viewer.address)]
        for r in rows:
            if r.get("account") != viewer.address:
                r["rcpts"] = viewer.address if viewer.address in r["rcpts"].split() else ""
    return web.render(request, "trace_search.html", {
        "params": params, "rows": rows, "kinds": KINDS, "error": error,
        "scope": "all traces" if viewer.admin else f"mail of {viewer.address}"})


@dataclass
class Step:
    ts: float
    kind: str
    category: str
    title: str
    details: list[tuple[str, str]]
    link: str = ""
    own: bool = True        # from this trace (not its session or a delivery)


def describe(event: dict[str, Any], trace_id: str) -> Step:
    kind, data = event["kind"], dict(event["data"])
    link = f"/trace/{data['trace']}" if isinstance(data.get("trace"), str) else ""
    category, title = _category(kind, data)
    details = [(k, _text(v)) for k, v in data.items() if k not in ("cmd", "reply", "trace")]
    if "cmd" in data:
        details.insert(0, ("command", _text(data["cmd"])))
    if "reply" in data:
        details.append(("reply", _text(data["reply"])))
    return Step(event["ts"], kind, category, title, details, link,
                event["trace_id"] == trace_id)


def _category(kind: str, data: dict[str, Any]) -> tuple[str, str]:
    if kind in ("connect", "disconnect", "timeout", "early-talker"):
        return "connection", kind.replace("-", " ").capitalize()
    if kind in ("tls", "starttls-injection-discarded"):
        return "tls", "TLS" if kind == "tls" else "STARTTLS injection discarded"
    if kind in ("smtp", "reply", "auth", "data"):
        cmd = str(data.get("cmd", "")).split(" ")[0].upper() if kind == "smtp" else kind.upper()
        if cmd.startswith("("):     # "(message data)": the reply at the end of DATA
            cmd = "End of data"
        reply = str(data.get("reply", ""))
        return ("error" if reply[:1] in ("4", "5") else "command"), cmd or "SMTP"
    if kind in ("rule", "verdict", "rate-limited", "rcpt-refused"):
        return ("verdict" if kind == "verdict" else "check"), kind.replace("-", " ").capitalize()
    if kind in ("delivered", "quarantined", "queued", "forward-queued", "delivery-attempt",
                "delivery-result", "result", "dsn", "no-dsn"):
        return "delivery", kind.replace("-", " ").capitalize()
    if "error" in kind or "fail" in kind:
        return "error", kind
    return "other", kind.replace("-", " ").capitalize()


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def _hidden_from_recipient(event: dict[str, Any], me: str, my_id: int) -> bool:
    """Events about other recipients of a message the viewer only received."""
    kind, data = event["kind"], event["data"]
    if kind == "smtp":
        cmd = str(data.get("cmd", "")).lower()
        return cmd.startswith("rcpt") and me not in cmd
    if kind in ("rcpt-refused", "result"):
        return str(data.get("rcpt", "")).lower() != me
    if kind == "delivered":
        return data.get("account_id") != my_id
    return kind in ("forward-queued", "delivery-result", "queued")


def _access(conn: sqlite3.Connection, trace_id: str, viewer: Viewer
            ) -> tuple[dict[str, Any] | None, bool]:
    """(trace, full view?) — None when the viewer may not see it."""
    trace = get_trace(conn, trace_id)
    if trace is None:
        return None, False
    if viewer.admin:
        return trace, True
    me = viewer.address
    parent = get_trace(conn, trace["parent"]) if trace.get("parent") else None
    sent_by_me = trace.get("account") == me or (
        trace.get("kind") in ("delivery",) and parent is not None and parent.get("account") == me)
    if sent_by_me:
        return trace, True
    if trace.get("kind") in ("session", "imap") or not involves(trace, me):
        return None, False
    return trace, False


@user_page
async def trace_view(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    trace_id = request.path_params["trace_id"][:64]

    def read(conn: sqlite3.Connection) -> tuple[Any, bool, list[Any], list[Any]]:
        trace, full = _access(conn, trace_id, viewer)
        if trace is None:
            return None, False, [], []
        kids = [dict(r) for r in conn.execute(
            "SELECT id, kind, status, rcpts, started, detail FROM traces WHERE parent = ?"
            " ORDER BY started", (trace_id,))]
        return trace, full, timeline(conn, trace_id), kids

    trace, full, events, kids = await web.read_recorder(read)
    if trace is None:
        raise HTTPException(404, "No such trace, or not one of yours.")
    if not full:
        events = [e for e in events if not _hidden_from_recipient(e, viewer.address,
                                                                   viewer.account.id)]
        kids = [k for k in kids if viewer.address in (k["rcpts"] or "").split()]
        trace["rcpts"] = viewer.address
    if viewer.admin and not involves(trace, viewer.address):
        web.audit(request, "view-trace", trace=trace_id)
    steps = [describe(e, trace_id) for e in events]
    return web.render(request, "trace_view.html", {"trace": trace, "steps": steps,
                                                   "children": kids, "full": full})


routes = [
    Route("/trace", trace_search),
    Route("/trace/{trace_id}", trace_view),
]
