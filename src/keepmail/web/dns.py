"""The DNS assistant and server health pages."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store import accounts
from .context import Viewer, admin_page, web_of
from .dnscheck import ERROR, OK, WARN, check_domain, expected_records
from .health import health_report
from .settings import settings_of


@admin_page
async def dns_index(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    domains = web.store.read_now(accounts.list_domains)
    return web.render(request, "dns_index.html", {"domains": domains})


@admin_page
async def dns_domain(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    name = request.path_params["domain"].lower().rstrip(".")
    domain = web.store.read_now(lambda c: accounts.get_domain(c, name))
    if domain is None:
        raise HTTPException(404, f"{name} is not a domain served here.")
    settings = settings_of(web.config)
    expected = expected_records(web.kapp, domain.name, settings)
    findings = await check_domain(web.kapp, domain.name, settings)
    counts = {s: sum(1 for f in findings if f.status == s) for s in (OK, WARN, ERROR)}
    return web.render(request, "dns_domain.html", {
        "domain": domain.name, "expected": expected, "findings": findings, "counts": counts,
        "nameservers": web.config.dns.nameservers or ["system resolver"]})


@admin_page
async def health(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    return web.render(request, "health.html", {"items": await health_report(web)})


routes = [
    Route("/admin/dns", dns_index),
    Route("/admin/dns/{domain}", dns_domain),
    Route("/admin/health", health),
]
