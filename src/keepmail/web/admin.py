"""Admin pages: users, domains, aliases, DKIM keys, the outbound queue, held mail.

Every change goes through keepmail.store functions via store.write and is
recorded (Web.audit). An admin cannot disable, demote or delete their own
account here, so the console cannot lock out its last admin by accident.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store import accounts
from ..store.accounts import StoreError
from ..store.passwords import hash_password
from . import features
from .context import Viewer, admin_page, flash, redirect, web_of

MIN_PASSWORD = 10


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"Passwords need at least {MIN_PASSWORD} characters."
    if len(password) > 256:
        return "Passwords can have at most 256 characters."
    return None


def generated_password() -> str:
    return secrets.token_urlsafe(12)


def _split_addresses(text: str) -> list[str]:
    return [t for t in re.split(r"[\s,;]+", text) if t]


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}


# -- users -------------------------------------------------------------------------------
@admin_page
async def users(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)

    def read(c: sqlite3.Connection) -> tuple[list[Any], list[Any], dict[int, int]]:
        apps = {r[0]: r[1] for r in c.execute(
            "SELECT account_id, COUNT(*) FROM app_passwords GROUP BY account_id")}
        return accounts.list_accounts(c), accounts.list_domains(c), apps

    rows, domains, apps = web.store.read_now(read)
    return web.render(request, "users.html", {"accounts": rows, "domains": domains,
                                              "app_counts": apps,
                                              "min_password": MIN_PASSWORD})


@admin_page
async def user_add(request: Request, viewer: Viewer) -> Response:
    web, form = web_of(request), await _form(request)
    address, password = form.get("address", ""), form.get("password", "")
    generated = not password
    password = password or generated_password()
    problem = password_problem(password)
    if problem:
        flash(request, problem, "error")
        return redirect("/admin/users")
    pw_hash = await asyncio.to_thread(hash_password, password)
    try:
        account = await web.store.write(lambda c: accounts.add_account(
            c, address, pw_hash, display_name=form.get("display_name", "")[:200],
            is_admin=form.get("is_admin") == "on"))
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect("/admin/users")
    web.audit(request, "user-add", user=account.address, admin=account.is_admin)
    note = f" Its password is {password} — give it to the user safely." if generated else ""
    flash(request, f"Account {account.address} created.{note}", "success")
    return redirect("/admin/users")


USER_ACTIONS = ("disable", "enable", "make-admin", "remove-admin", "reset-password", "delete")


@admin_page
async def user_change(request: Request, viewer: Viewer) -> Response:
    web, form = web_of(request), await _form(request)
    address = accounts.normalize_address(request.path_params["address"])
    action = form.get("action", "")
    if action not in USER_ACTIONS:
        flash(request, "Unknown action.", "error")
        return redirect("/admin/users")
    if address == viewer.address and action in ("disable", "remove-admin", "delete"):
        flash(request, "You cannot do that to your own account here.", "error")
        return redirect("/admin/users")
    account = web.store.read_now(lambda c: accounts.get_account(c, address))
    if account is None:
        flash(request, f"No account {address}.", "error")
        return redirect("/admin/users")
    try:
        message = await _apply_user_action(request, account, action, form)
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect("/admin/users")
    if message:
        web.audit(request, "user-" + action, user=address)
        flash(request, message, "success")
    return redirect("/admin/users")


async def _apply_user_action(request: Request, account: Any, action: str,
                             form: dict[str, str]) -> str | None:
    web, address = web_of(request), account.address
    if action in ("disable", "enable"):
        await web.store.write(lambda c: accounts.set_disabled(c, address, action == "disable"))
        if action == "disable":
            web.sessions.drop_account(account.id)
            web.kapp.authenticator.forget()
        return f"{address} {action}d."
    if action in ("make-admin", "remove-admin"):
        await web.store.write(lambda c: accounts.set_admin(c, address, action == "make-admin"))
        return f"{address} is {'now' if action == 'make-admin' else 'no longer'} an admin."
    if action == "reset-password":
        password = form.get("password") or generated_password()
        problem = password_problem(password)
        if problem:
            flash(request, problem, "error")
            return None
        pw_hash = await asyncio.to_thread(hash_password, password)
        await web.store.write(lambda c: accounts.set_password(c, address, pw_hash))
        web.kapp.authenticator.forget()
        web.sessions.drop_account(account.id)
        return f"New password for {address}: {password}"
    if form.get("confirm", "").lower() != address:
        flash(request, f"To delete, type {address} in the confirmation box.", "error")
        return None
    await web.store.write(lambda c: accounts.delete_account(c, address))
    web.sessions.drop_account(account.id)
    web.kapp.authenticator.forget()
    return f"{address} and its mail were deleted."


# -- domains -----------------------------------------------------------------------------
@admin_page
async def domains(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)

    def read(c: sqlite3.Connection) -> list[tuple[Any, int]]:
        counts = {r[0]: r[1] for r in c.execute(
            "SELECT domain_id, COUNT(*) FROM accounts GROUP BY domain_id")}
        return [(d, counts.get(d.id, 0)) for d in accounts.list_domains(c)]

    return web.render(request, "domains.html", {"domains": web.store.read_now(read)})


@admin_page
async def domain_add(request: Request, viewer: Viewer) -> Response:
    web, form = web_of(request), await _form(request)
    try:
        domain = await web.store.write(lambda c: accounts.add_domain(c, form.get("name", "")))
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect("/admin/domains")
    keys = features.dkim_keys(web.kapp)
    if keys is not None:
        await asyncio.to_thread(keys.ensure, domain.name)   # RSA key generation: off the loop
    web.audit(request, "domain-add", domain=domain.name)
    flash(request, f"Domain {domain.name} added. Now publish its DNS records.", "success")
    return redirect(f"/admin/dns/{domain.name}")


@admin_page
async def domain_delete(request: Request, viewer: Viewer) -> Response:
    web, form = web_of(request), await _form(request)
    name = form.get("name", "")
    try:
        await web.store.write(lambda c: accounts.delete_domain(c, name))
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect("/admin/domains")
    web.audit(request, "domain-delete", domain=name)
    flash(request, f"Domain {name} deleted.", "success")
    return redirect("/admin/domains")


# -- aliases -----------------------------------------------------------------------------
@admin_page
async def aliases(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    return web.render(request, "aliases.html",
                      {"aliases": web.store.read_now(accounts.list_aliases)})


@admin_page
async def alias_add(request: Request, viewer: Viewer) -> Response:
    web, form = web_of(request), await _form(request)
    address, targets = form.get("address", ""), _split_addresses(form.get("targets", ""))
    try:
        await web.store.write(lambda c: accounts.add_alias(c, address, targets))
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect("/admin/aliases")
    web.audit(request, "alias-add", alias=address, targets=", ".join(targets))
    flash(request, f"Alias {address} → {', '.join(targets)} saved.", "success")
    return redirect("/admin/aliases")


@admin_page
async def alias_delete(request: Request, viewer: Viewer) -> Response:
    web, form = web_of(request), await _form(request)
    address, target = form.get("address", ""), form.get("target") or None
    try:
        await web.store.write(lambda c: accounts.delete_alias(c, address, target))
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect("/admin/aliases")
    web.audit(request, "alias-delete", alias=address, target=target or "")
    flash(request, f"Alias {address}{' → ' + target if target else ''} removed.", "success")
    return redirect("/admin/aliases")


# -- DKIM --------------------------------------------------------------------------------
@admin_page
async def dkim(request: Request, viewer: Viewer) -> Response:
    web = web_of(request)
    keys = features.dkim_keys(web.kapp)
    if keys is None:
        return web.render(request, "unavailable.html", {
            "title": "DKIM keys", "what": "DKIM key management (keepmail.outbound.dkimkeys)"})
    names = [d.name for d in web.store.read_now(accounts.list_domains)]
    records = {n: dict((name, value) for name, _t, value in keys.dns_records(n)) for n in names}
    return web.render(request, "dkim.html", {"domains": names, "keys": keys.list(),
                                             "records": records, "now": time.time()})


@admin_page
async def dkim_change(request: Request, viewer: Viewer) -> Response:
    web, form = web_of(request), await _form(request)
    keys = features.dkim_keys(web.kapp)
    if keys is None:
        return redirect("/admin/dkim")
    domain, action = form.get("domain", "").lower(), form.get("action", "")
    if web.store.read_now(lambda c: accounts.get_domain(c, domain)) is None:
        flash(request, f"No domain {domain}.", "error")
        return redirect("/admin/dkim")
    try:
        if action == "rotate":
            await asyncio.to_thread(keys.rotate, domain)
            message = (f"New DKIM keys for {domain}: publish their records below; older keys "
                       "keep working until you retire them.")
        elif action == "retire":
            selector = form.get("selector", "")
            await asyncio.to_thread(keys.retire, domain, selector)
            message = f"Key {selector} of {domain} retired."
        else:
            return redirect("/admin/dkim")
    except Exception as exc:  # DkimError and friends: show them, do not crash the page
        flash(request, str(exc), "error")
        return redirect("/admin/dkim")
    web.audit(request, "dkim-" + action, domain=domain, selector=form.get("selector", ""))
    flash(request, message, "success")
    return redirect("/admin/dkim")


# -- queue -------------------------------------------------------------------------------
@admin_page
async def queue_page(request: Request, viewer: Viewer) -> Response:
    web, q = web_of(request), features.queue()
    if q is None:
        return web.render(request, "unavailable.html", {
            "title": "Outbound queue", "what": "the outbound queue (keepmail.store.queue)"})

    def read(c: sqlite3.Connection) -> list[tuple[Any, list[Any]]]:
        return [(m, q.rcpts_of(c, m.id)) for m in q.list_messages(c, limit=500)]

    rows = web.store.read_now(read)
    held_only = request.query_params.get("held") == "1"
    if held_only:
        rows = [(m, rs) for m, rs in rows if any(r.held for r in rs)]
    return web.render(request, "queue.html", {"rows": rows, "held_only": held_only,
                                              "agent": features.outbound_agent(web.kapp)})


QUEUE_ACTIONS = ("retry", "hold", "release", "delete")


@admin_page
async def queue_change(request: Request, viewer: Viewer) -> Response:
    web, q, form = web_of(request), features.queue(), await _form(request)
    action = form.get("action", "")
    if q is None or action not in QUEUE_ACTIONS or not form.get("id", "").isdigit():
        flash(request, "Nothing to do.", "error")
        return redirect("/admin/queue")
    msg_id, now = int(form["id"]), time.time()

    def txn(c: sqlite3.Connection) -> int:
        if action == "retry":
            return int(q.retry_now(c, msg_id, now))
        if action == "hold":
            return int(q.set_held(c, msg_id, True))
        if action == "release":
            n = q.set_held(c, msg_id, False)
            q.retry_now(c, msg_id, now)
            return int(n)
        return int(q.delete_message(c, msg_id))

    changed = await web.store.write(txn)
    agent = features.outbound_agent(web.kapp)
    if changed and action in ("retry", "release") and agent is not None:
        agent.wake()
    web.audit(request, "queue-" + action, message=str(msg_id))
    flash(request, f"Message {msg_id}: {action} done." if changed else
          f"Message {msg_id}: nothing changed (already sent or gone?).",
          "success" if changed else "warning")
    return redirect("/admin/queue")


# -- held mail (abuse holds) -------------------------------------------------------------
@admin_page
async def held(request: Request, viewer: Viewer) -> Response:
    web, abuse_db, q = web_of(request), features.abuse_store(), features.queue()
    if abuse_db is None or q is None:
        return web.render(request, "unavailable.html", {
            "title": "Held mail", "what": "account holds (keepmail.store.abuse) and the queue"})

    def read(c: sqlite3.Connection) -> list[tuple[Any, int]]:
        holds = abuse_db.list_holds(c)
        counts = {r[0]: r[1] for r in c.execute(
            "SELECT m.account_id, COUNT(DISTINCT m.id) FROM queue_messages m JOIN queue_rcpts r"
            " ON r.msg_id = m.id WHERE r.held = 1 GROUP BY m.account_id")}
        return [(h, counts.get(h.account_id, 0)) for h in holds]

    return web.render(request, "held.html", {"holds": web.store.read_now(read)})


@admin_page
async def held_change(request: Request, viewer: Viewer) -> Response:
    web, form = web_of(request), await _form(request)
    abuse_db, q = features.abuse_store(), features.queue()
    address, action = form.get("address", ""), form.get("action", "")
    account = web.store.read_now(lambda c: accounts.get_account(c, address))
    if abuse_db is None or q is None or account is None or action not in ("release", "discard"):
        flash(request, "Nothing to do.", "error")
        return redirect("/admin/held")
    if action == "release":
        _release_account(web, account, abuse_db, q)
        message = f"{account.address} released: its held mail goes out now."
    else:
        n = await web.store.write(lambda c: _discard_held(c, account.id, q))
        message = f"Discarded {n} held message(s) of {account.address}; the hold stays."
    web.audit(request, "held-" + action, user=account.address)
    flash(request, message, "success")
    return redirect("/admin/held")


def _release_account(web: Any, account: Any, abuse_db: Any, q: Any) -> None:
    guards = features.abuse_guards(web.kapp)
    if guards is not None and hasattr(guards, "outbound"):
        guards.outbound.release(account)   # also resets the detector's view of the account
    else:
        web.store.write_sync(lambda c: (abuse_db.clear_hold(c, account.id),
                                        q.hold_account(c, account.id, False)))
    web.store.write_sync(lambda c: c.execute(
        "UPDATE queue_rcpts SET next_attempt = ? WHERE held = 0 AND msg_id IN"
        " (SELECT id FROM queue_messages WHERE account_id = ?)", (time.time(), account.id)))
    agent = features.outbound_agent(web.kapp)
    if agent is not None:
        agent.wake()


def _discard_held(c: sqlite3.Connection, account_id: int, q: Any) -> int:
    ids = [r[0] for r in c.execute(
        "SELECT DISTINCT m.id FROM queue_messages m JOIN queue_rcpts r ON r.msg_id = m.id"
        " WHERE m.account_id = ? AND r.held = 1", (account_id,))]
    for msg_id in ids:
        q.delete_message(c, msg_id)
    return len(ids)


routes = [
    Route("/admin/users", users, methods=["GET"]),
    Route("/admin/users", user_add, methods=["POST"]),
    Route("/admin/users/{address}", user_change, methods=["POST"]),
    Route("/admin/domains", domains, methods=["GET"]),
    Route("/admin/domains", domain_add, methods=["POST"]),
    Route("/admin/domains/delete", domain_delete, methods=["POST"]),
    Route("/admin/aliases", aliases, methods=["GET"]),
    Route("/admin/aliases", alias_add, methods=["POST"]),
    Route("/admin/aliases/delete", alias_delete, methods=["POST"]),
    Route("/admin/dkim", dkim, methods=["GET"]),
    Route("/admin/dkim", dkim_change, methods=["POST"]),
    Route("/admin/queue", queue_page, methods=["GET"]),
    Route("/admin/queue", queue_change, methods=["POST"]),
    Route("/admin/held", held, methods=["GET"]),
    Route("/admin/held", held_change, methods=["POST"]),
]
