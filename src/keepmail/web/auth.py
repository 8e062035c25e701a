"""Logging in and out, the TOTP second factor, and TOTP enrollment.

Only an account's main password opens the console: app passwords are for
mail programs, and one leaked from a phone must not be able to change the
account's password. Every attempt goes through the throttle first, and
every outcome is recorded.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store import accounts
from ..store.models import Account
from ..store.passwords import DUMMY_HASH, verify_password
from .context import (
    Viewer,
    client_ip,
    current_viewer,
    flash,
    redirect,
    safe_next,
    session_state,
    user_page,
    web_of,
)
from .totp import provisioning_uri

MAX_FIELD = 512


async def check_password(request: Request, address: str, password: str) -> Account | None:
    """The enabled account whose main password this is, or None (same time either way)."""
    web = web_of(request)
    if len(address) > MAX_FIELD or len(password) > MAX_FIELD or "@" not in address:
        await asyncio.to_thread(verify_password, DUMMY_HASH, password[:MAX_FIELD])
        return None
    found = web.store.read_now(lambda c: accounts.password_hashes(c, address))
    if found is None:
        await asyncio.to_thread(verify_password, DUMMY_HASH, password)
        return None
    account, hashes = found
    ok = await asyncio.to_thread(verify_password, hashes[0], password)
    return account if ok and not account.disabled else None


async def login_form(request: Request) -> Response:
    if current_viewer(request) is not None:
        return redirect(safe_next(request.query_params.get("next")))
    session_state(request).ensure()   # the CSRF token lives in the session
    return web_of(request).render(request, "login.html",
                                  {"next": safe_next(request.query_params.get("next"))})


async def login_submit(request: Request) -> Response:
    web = web_of(request)
    form = await request.form()
    address = str(form.get("address", "")).strip()
    password = str(form.get("password", ""))
    next_path = safe_next(str(form.get("next", "/")))
    ip = client_ip(request)
    wait = await web.throttle.before_attempt(ip, address)
    if wait is not None:
        return _throttled(request, address, wait, next_path)
    account = await check_password(request, address, password)
    if account is None:
        await asyncio.sleep(min(web.throttle.failure(ip, address), 2.0))
        web.audit(request, "login", outcome="failed", account=address[:MAX_FIELD])
        return web.render(request, "login.html", {
            "next": next_path, "address": address,
            "error": "Wrong address or password."}, status=401)
    web.throttle.success(ip, address)
    session = session_state(request).rotate()
    if web.totp.enabled(account.id):
        session.pending_account, session.pending_address = account.id, account.address
        return redirect("/login/totp?next=" + next_path)
    session.account_id, session.address = account.id, account.address
    web.audit(request, "login", account=account.address)
    if account.is_admin and web.settings.admin_totp:
        flash(request, "Set up a second factor to open the admin pages.", "warning")
        return redirect("/account/totp")
    return redirect(next_path)


def _throttled(request: Request, address: str, wait: float, next_path: str) -> Response:
    web = web_of(request)
    web.audit(request, "login", outcome="throttled", account=address[:MAX_FIELD])
    response = web.render(request, "login.html", {
        "next": next_path, "address": address,
        "error": f"Too many failed attempts. Try again in {int(wait)} seconds."}, status=429)
    response.headers["Retry-After"] = str(int(wait))
    return response


async def totp_form(request: Request) -> Response:
    session = session_state(request).session
    if session is None or session.pending_account is None:
        return redirect("/login")
    return web_of(request).render(request, "login_totp.html",
                                  {"next": safe_next(request.query_params.get("next"))})


async def totp_submit(request: Request) -> Response:
    web, state = web_of(request), session_state(request)
    session = state.session
    if session is None or session.pending_account is None:
        return redirect("/login")
    form = await request.form()
    next_path = safe_next(str(form.get("next", "/")))
    ip, address, account_id = client_ip(request), session.pending_address, session.pending_account
    wait = await web.throttle.before_attempt(ip, address)
    if wait is not None:
        return _throttled(request, address, wait, next_path)
    if not await web.totp.verify(account_id, str(form.get("code", ""))):
        await asyncio.sleep(min(web.throttle.failure(ip, address), 2.0))
        web.audit(request, "login-totp", outcome="failed", account=address)
        return web.render(request, "login_totp.html", {
            "next": next_path, "error": "That code is not right (or was already used)."},
            status=401)
    web.throttle.success(ip, address)
    session = state.rotate()
    session.account_id, session.address, session.second_factor = account_id, address, True
    web.audit(request, "login", account=address, second_factor="totp")
    return redirect(next_path)


async def logout(request: Request) -> Response:
    web, state = web_of(request), session_state(request)
    if state.session is not None and state.session.account_id is not None:
        web.audit(request, "logout", account=state.session.address)
    state.end()
    return redirect("/login")


# -- enrollment -------------------------------------------------------------------------
@user_page
async def totp_page(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    state = web.totp.get(viewer.account.id)
    context = {"enabled": bool(state and state.enabled), "secret": None, "uri": None}
    if state is not None and not state.enabled:
        context.update(secret=state.secret, uri=provisioning_uri(state.secret, viewer.address))
    return web.render(request, "totp.html", context)


@user_page
async def totp_begin(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    if web.totp.enabled(viewer.account.id):
        flash(request, "Two-factor login is already on; turn it off first to replace it.")
        return redirect("/account/totp")
    await web.totp.begin(viewer.account.id)
    web.audit(request, "totp-begin")
    return redirect("/account/totp")


@user_page
async def totp_confirm(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    form = await request.form()
    if not await web.totp.verify(viewer.account.id, str(form.get("code", "")), enrolling=True):
        web.audit(request, "totp-enable", outcome="failed")
        flash(request, "That code is not right. Check the time on your phone and try again.",
              "error")
        return redirect("/account/totp")
    viewer.session.second_factor = True
    web.audit(request, "totp-enable")
    flash(request, "Two-factor login is on.", "success")
    return redirect("/admin" if viewer.account.is_admin else "/me")


@user_page
async def totp_disable(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    form = await request.form()
    account = await check_password(request, viewer.address, str(form.get("password", "")))
    if account is None:
        flash(request, "Wrong password: two-factor login stays on.", "error")
        return redirect("/account/totp")
    await web.totp.disable(viewer.account.id)
    viewer.session.second_factor = False
    web.audit(request, "totp-disable")
    flash(request, "Two-factor login is off.", "warning")
    return redirect("/account/totp")


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/login/totp", totp_form, methods=["GET"]),
    Route("/login/totp", totp_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/account/totp", totp_page, methods=["GET"]),
    Route("/account/totp/begin", totp_begin, methods=["POST"]),
    Route("/account/totp/confirm", totp_confirm, methods=["POST"]),
    Route("/account/totp/disable", totp_disable, methods=["POST"]),
]
