"""Putting messages in quarantine and letting people take them out.

Releasing delivers the stored bytes (with their verdict header) to the Inbox
of each recipient account and records a ham training signal.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from .. import mailmsg
from ..store import Copy, Store
from ..store import mail as mailq
from ..store import quarantine as qstore

if TYPE_CHECKING:
    from .mx import CheckContext


class QuarantineError(Exception):
    pass


async def quarantine(store: Store, ctx: CheckContext) -> str:
    """Store the message (ctx.message is the final bytes) in quarantine; returns its id."""
    s, env, verdict = ctx.session, ctx.envelope, ctx.verdict
    raw = ctx.message

    def extra(conn: sqlite3.Connection, blob_id: int) -> int:
        return qstore.add(conn, blob_id, len(raw), account_ids=ctx.accounts,
                          trace_id=env.trace_id, sender=env.sender.address,
                          subject=mailmsg.header(raw, "Subject") or "",
                          message_id=(mailmsg.header(raw, "Message-ID") or "").strip(),
                          client_ip=s.peer_ip, verdict=verdict.header_value(),
                          reasons=verdict.reasons())

    entry_id = await store.store_blob(raw, 1, extra)
    return str(entry_id)


async def release(store: Store, entry_id: int, by: str,
                  only_account: int | None = None) -> list[int]:
    """Deliver a quarantined message to its recipients' Inboxes; returns the account ids.

    only_account restricts a user's self-service release to their own entries.
    """
    entry = store.read_now(lambda c: qstore.get(c, entry_id))
    if entry is None:
        raise QuarantineError(f"no quarantined message {entry_id}")
    if entry.released is not None:
        raise QuarantineError(f"message {entry_id} was already released")
    if only_account is not None and only_account not in entry.account_ids:
        raise QuarantineError(f"no quarantined message {entry_id}")
    raw = await store.read_blob(entry.blob_id)
    # A user releases for themself only; an admin for every recipient.
    targets = [only_account] if only_account is not None else entry.account_ids
    copies = store.read_now(lambda c: _inboxes(c, targets))
    await store.deliver(raw, copies, trace_id=entry.trace_id, message_id=entry.message_id,
                        extra=lambda c, _blob: qstore.mark_released(c, entry, by, targets))
    return [c.account_id for c in copies]


def _inboxes(conn: sqlite3.Connection, account_ids: list[int]) -> list[Copy]:
    copies = []
    for account_id in account_ids:
        box = mailq.get_mailbox(conn, account_id, "INBOX")
        if box is not None:
            copies.append(Copy(account_id, box.id, box.name))
    return copies
