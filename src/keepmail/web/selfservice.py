"""User self-service: overview, password, app passwords, allowed and blocked senders.

(Own message trace is /trace, own quarantine is /me/quarantine: those pages
restrict themselves to the viewer's address.)
"""

from __future__ import annotations

import asyncio
import secrets

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store import accounts, senderlists
from ..store.accounts import StoreError
from ..store.passwords import hash_password
from .admin import password_problem
from .auth import check_password
from .context import Viewer, flash, redirect, user_page, web_of

APP_ALPHABET = "abcdefghijkmnpqrstuvwxyz"   # no l/o: easy to type on a phone


def app_password() -> str:
    """Four groups of four letters: 75 bits, typed once into a mail program."""
    return "-".join("".join(secrets.choice(APP_ALPHABET) for _ in range(4)) for _ in range(4))


@user_page
async def overview(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    cfg = web.config
    ports = {name: cfg.port(name, web.kapp.port_offset) for name in
             ("imaps", "imap", "submissions", "submission")}
    return web.render(request, "me.html", {"ports": ports,
                                           "totp": web.totp.enabled(viewer.account.id)})


@user_page
async def password_page(request: Request, viewer: Viewer) -> Response:
    return web_of(request).render(request, "password.html", {})


@user_page
async def password_change(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    form = await request.form()
    current, new = str(form.get("current", "")), str(form.get("new", ""))
    if await check_password(request, viewer.address, current) is None:
        web.audit(request, "password-change", outcome="failed")
        flash(request, "Your current password is not right.", "error")
        return redirect("/me/password")
    problem = password_problem(new) or (
        "The two new passwords differ." if new != str(form.get("confirm", "")) else None)
    if problem:
        flash(request, problem, "error")
        return redirect("/me/password")
    pw_hash = await asyncio.to_thread(hash_password, new)
    await web.store.write(lambda c: accounts.set_password(c, viewer.address, pw_hash))
    web.kapp.authenticator.forget()
    ended = web.sessions.drop_account(viewer.account.id, keep=viewer.session)
    web.audit(request, "password-change", other_sessions_ended=ended)
    flash(request, "Password changed. Other console sessions were logged out.", "success")
    return redirect("/me")


@user_page
async def app_passwords(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    rows = web.store.read_now(lambda c: accounts.list_app_passwords(c, viewer.address))
    return web.render(request, "app_passwords.html", {"rows": rows, "new": None})


@user_page
async def app_password_add(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    form = await request.form()
    label = str(form.get("label", "")).strip()[:60]
    if not label:
        flash(request, "Give the app password a name, like “phone”.", "error")
        return redirect("/me/app-passwords")
    password = app_password()
    pw_hash = await asyncio.to_thread(hash_password, password)
    try:
        await web.store.write(lambda c: accounts.add_app_password(c, viewer.address, label,
                                                                  pw_hash))
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect("/me/app-passwords")
    web.audit(request, "app-password-add", label=label)
    rows = web.store.read_now(lambda c: accounts.list_app_passwords(c, viewer.address))
    # Shown on this response only: never stored in clear, never put in a redirect.
    return web.render(request, "app_passwords.html", {"rows": rows,
                                                      "new": (label, password)})


@user_page
async def app_password_delete(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    form = await request.form()
    label = str(form.get("label", ""))
    try:
        await web.store.write(lambda c: accounts.delete_app_password(c, viewer.address, label))
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect("/me/app-passwords")
    web.kapp.authenticator.forget()
    web.audit(request, "app-password-delete", label=label)
    flash(request, f"App password “{label}” deleted.", "success")
    return redirect("/me/app-passwords")


@user_page
async def senders(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    rows = web.store.read_now(lambda c: senderlists.list_for(c, viewer.account.id))
    return web.render(request, "senders.html", {"rows": rows})


@user_page
async def sender_change(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    form = await request.form()
    action, pattern = str(form.get("action", "")), str(form.get("pattern", ""))[:300]
    try:
        if action in senderlists.KINDS:
            entry = await web.store.write(
                lambda c: senderlists.add(c, viewer.account.id, action, pattern))
            message = f"{entry.pattern} is now on your {action} list."
        elif action == "remove":
            await web.store.write(lambda c: senderlists.remove(c, viewer.account.id, pattern))
            message = f"{pattern} removed."
        else:
            return redirect("/me/senders")
    except senderlists.SenderListError as exc:
        flash(request, str(exc), "error")
        return redirect("/me/senders")
    web.audit(request, "senders-" + action, pattern=pattern)
    flash(request, message, "success")
    return redirect("/me/senders")


routes = [
    Route("/me", overview, methods=["GET"]),
    Route("/me/password", password_page, methods=["GET"]),
    Route("/me/password", password_change, methods=["POST"]),
    Route("/me/app-passwords", app_passwords, methods=["GET"]),
    Route("/me/app-passwords", app_password_add, methods=["POST"]),
    Route("/me/app-passwords/delete", app_password_delete, methods=["POST"]),
    Route("/me/senders", senders, methods=["GET"]),
    Route("/me/senders", sender_change, methods=["POST"]),
]
