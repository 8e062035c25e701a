"""Endpoints mail software fetches by itself: MTA-STS policy, autoconfig, autodiscover.

- /.well-known/mta-sts.txt: the RFC 8461 3.2 policy (mode from [web]
  mta_sts_mode, "testing" by default; mx is this server's host name);
- /mail/config-v1.1.xml and /.well-known/autoconfig/mail/config-v1.1.xml:
  Thunderbird's autoconfig format;
- /autodiscover/autodiscover.xml (GET or POST): Outlook's POX autodiscover
  (2006 schema).
All are public and read-only; the address a client sends is only echoed
back escaped, and the XML request is read with size and DOCTYPE limits.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..store import accounts
from .context import web_of
from .settings import settings_of

MAX_AUTODISCOVER_BYTES = 16 * 1024
_EMAIL = re.compile(r"<EMailAddress>\s*([^<\s]{1,320})\s*</EMailAddress>", re.IGNORECASE)
MODES = ("enforce", "testing", "none")


def mta_sts_policy(cfg: Any, settings: Any) -> tuple[str, str]:
    """(policy text, id): the id is a hash of the text, so it changes with the policy."""
    mode = settings.mta_sts_mode if settings.mta_sts_mode in MODES else "testing"
    text = (f"version: STSv1\r\nmode: {mode}\r\nmx: {cfg.server.hostname}\r\n"
            f"max_age: {int(settings.mta_sts_max_age)}\r\n")
    return text, hashlib.sha256(text.encode()).hexdigest()[:20]


async def mta_sts(request: Request) -> Response:
    web = web_of(request)
    text, _ = mta_sts_policy(web.config, settings_of(web.config))
    return PlainTextResponse(text, headers={"Cache-Control": "max-age=3600"})


def _services(request: Request) -> list[dict[str, Any]]:
    """The listeners a mail program should use, best first (implicit TLS, then STARTTLS)."""
    web = web_of(request)
    cfg, offset = web.config, web.kapp.port_offset
    wanted = [("imap", "imaps", "SSL"), ("imap", "imap", "STARTTLS"),
              ("smtp", "submissions", "SSL"), ("smtp", "submission", "STARTTLS")]
    return [{"type": kind, "port": cfg.port(name, offset), "socket": socket}
            for kind, name, socket in wanted if cfg.port(name, offset)]


def _domain_of(address: str, request: Request) -> str:
    domain = address.rpartition("@")[2].lower().strip()
    if not domain:
        domains = web_of(request).store.read_now(accounts.list_domains)
        domain = domains[0].name if domains else web_of(request).config.server.hostname
    return domain[:253]


async def autoconfig(request: Request) -> Response:
    web = web_of(request)
    address = request.query_params.get("emailaddress", "")[:320]
    return web.templates.TemplateResponse(request, "autoconfig.xml", {
        "domain": _domain_of(address, request), "host": web.config.server.hostname,
        "services": _services(request)}, media_type="application/xml")


async def autodiscover(request: Request) -> Response:
    web = web_of(request)
    address = ""
    if request.method == "POST":
        body = await _limited_body(request)
        if body is None or b"<!doctype" in body.lower() or b"<!entity" in body.lower():
            return PlainTextResponse("bad request", status_code=400)
        match = _EMAIL.search(body.decode("utf-8", "replace"))
        address = match.group(1) if match else ""
    else:
        address = request.query_params.get("email", "")[:320]
    # Outlook takes one server per protocol: the best (first) of each.
    best = {s["type"]: s for s in reversed(_services(request))}
    return web.templates.TemplateResponse(request, "autodiscover.xml", {
        "address": address, "host": web.config.server.hostname,
        "services": [best[t] for t in ("imap", "smtp") if t in best]},
        media_type="application/xml")


async def _limited_body(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_AUTODISCOVER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")

routes = [
    Route("/.well-known/mta-sts.txt", mta_sts),
    Route("/mail/config-v1.1.xml", autoconfig),
    Route("/.well-known/autoconfig/mail/config-v1.1.xml", autoconfig),
    *[Route(p, autodiscover, methods=["GET", "POST"]) for p in AUTODISCOVER_PATHS],
]
