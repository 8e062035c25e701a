"""Quarantine pages: admins see and act on every entry, users on their own.

A user may release only entries addressed to them (the release itself is
keepmail.inbound.quarantine.release with only_account); deleting stays with
admins, since one entry can belong to several recipients. Message content is
shown as escaped header text, never rendered as HTML.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import mailmsg
from . import features
from .context import Viewer, admin_page, flash, redirect, user_page, web_of

MAX_HEADER_BYTES = 16 * 1024


def _entries(request: Request, account_id: int | None, include_released: bool) -> list[Any]:
    qstore, _ = features.quarantine() or (None, None)
    assert qstore is not None
    return web_of(request).store.read_now(lambda c: qstore.list_entries(
        c, account_id=account_id, include_released=include_released, limit=500))


def _unavailable(request: Request) -> Response:
    return web_of(request).render(request, "unavailable.html", {
        "title": "Quarantine", "what": "the quarantine (keepmail.store.quarantine and "
                                      "keepmail.inbound.quarantine)"})


def _base(viewer: Viewer, own: bool) -> str:
    return "/me/quarantine" if own or not viewer.admin else "/admin/quarantine"


async def _list(request: Request, viewer: Viewer, own: bool) -> Response:
    if features.quarantine() is None:
        return _unavailable(request)
    released = request.query_params.get("released") == "1"
    entries = _entries(request, viewer.account.id if own else None, released)
    return web_of(request).render(request, "quarantine.html", {
        "entries": entries, "own": own, "base": _base(viewer, own), "released": released})


def _entry_for(request: Request, viewer: Viewer, own: bool) -> Any:
    mods = features.quarantine()
    if mods is None:
        raise HTTPException(404, "The quarantine is not available.")
    raw_id = str(request.path_params.get("entry_id", ""))
    entry = web_of(request).store.read_now(
        lambda c: mods[0].get(c, int(raw_id))) if raw_id.isdigit() else None
    if entry is None or (own and viewer.account.id not in entry.account_ids):
        raise HTTPException(404, "No such quarantined message, or not one of yours.")
    return entry


async def _show(request: Request, viewer: Viewer, own: bool) -> Response:
    web, entry = web_of(request), _entry_for(request, viewer, own)
    raw = await web.store.read_blob(entry.blob_id, 0, MAX_HEADER_BYTES)
    head = mailmsg.header_block(raw).decode("utf-8", "replace")
    return web.render(request, "quarantine_entry.html", {
        "entry": entry, "headers": head, "own": own, "base": _base(viewer, own)})


async def _release(request: Request, viewer: Viewer, own: bool) -> Response:
    web, entry = web_of(request), _entry_for(request, viewer, own)
    _, inbound = features.quarantine()  # type: ignore[misc]
    base = _base(viewer, own)
    try:
        await inbound.release(web.store, entry.id, viewer.address,
                              only_account=viewer.account.id if own else None)
    except inbound.QuarantineError as exc:
        flash(request, str(exc), "error")
        return redirect(base)
    web.audit(request, "quarantine-release", entry=str(entry.id), trace=entry.trace_id)
    flash(request, f"Message {entry.id} released to the Inbox.", "success")
    return redirect(base)


@user_page
async def my_list(request: Request, viewer: Viewer) -> Response:
    return await _list(request, viewer, own=True)


@user_page
async def my_show(request: Request, viewer: Viewer) -> Response:
    return await _show(request, viewer, own=True)


@user_page
async def my_release(request: Request, viewer: Viewer) -> Response:
    return await _release(request, viewer, own=True)


@admin_page
async def admin_list(request: Request, viewer: Viewer) -> Response:
    return await _list(request, viewer, own=False)


@admin_page
async def admin_show(request: Request, viewer: Viewer) -> Response:
    return await _show(request, viewer, own=False)


@admin_page
async def admin_release(request: Request, viewer: Viewer) -> Response:
    return await _release(request, viewer, own=False)


@admin_page
async def admin_delete(request: Request, viewer: Viewer) -> Response:
    web, entry = web_of(request), _entry_for(request, viewer, own=False)
    qstore, _ = features.quarantine()  # type: ignore[misc]
    await web.store.write(lambda c: qstore.delete(c, entry.id))
    web.audit(request, "quarantine-delete", entry=str(entry.id), trace=entry.trace_id)
    flash(request, f"Message {entry.id} deleted from the quarantine.", "success")
    return redirect("/admin/quarantine")


routes = [
    Route("/me/quarantine", my_list, methods=["GET"]),
    Route("/me/quarantine/{entry_id}", my_show, methods=["GET"]),
    Route("/me/quarantine/{entry_id}/release", my_release, methods=["POST"]),
    Route("/admin/quarantine", admin_list, methods=["GET"]),
    Route("/admin/quarantine/{entry_id}", admin_show, methods=["GET"]),
    Route("/admin/quarantine/{entry_id}/release", admin_release, methods=["POST"]),
    Route("/admin/quarantine/{entry_id}/delete", admin_delete, methods=["POST"]),
]
