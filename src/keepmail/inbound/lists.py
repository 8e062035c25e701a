"""Users' own allow and block lists of senders, as verdict rules.

Lists are per account, with a per-domain list (set by the admin) behind
each account's own. A list applies to the envelope sender and to the From: address (people think
in From:). When a message goes to several accounts, a list counts only if
they all agree, since one copy is stored for all of them. Allowing a sender
is a strong signal, not a pass: a DMARC p=reject failure (forged mail)
is still refused, because the allow entry was meant for the real sender.
"""

from __future__ import annotations

import sqlite3
from email.utils import parseaddr

from .. import mailmsg
from ..cache import TtlCache
from ..store import Store, contacts, senderlists
from .mx import Check, CheckContext
from .verdict import Action, Rule


def sender_list_check(store: Store) -> Check:
    # Most accounts have no lists: remember that for a moment instead of asking
    # the database (and parsing From:) for every message.
    has_lists: TtlCache[int, bool] = TtlCache()

    def any_lists(account_id: int) -> bool:
        return has_lists.get(account_id, lambda: store.read_now(
            lambda c: senderlists.has_any(c, account_id)))

    async def check(ctx: CheckContext) -> None:
        if not ctx.accounts or not any(any_lists(a) for a in ctx.accounts):
            return
        senders = {ctx.envelope.sender.address.lower()}
        from_addr = parseaddr(mailmsg.header(ctx.message, "From") or "")[1].lower()
        if from_addr:
            senders.add(from_addr)
        senders.discard("")
        verdicts = store.read_now(lambda c: [
            _verdict(c, account_id, senders) for account_id in ctx.accounts])
        if len(set(verdicts)) != 1 or verdicts[0] is None:
            return
        if verdicts[0] == "block":
            ctx.verdict.add(Rule("sender-blocked", 0.0, "the recipient blocked this sender",
                                 force=Action.JUNK))
        else:
            ctx.verdict.add(Rule("sender-allowed", -5.0, "the recipient allowed this sender"))

    return check


def correspondent_check(store: Store) -> Check:
    """Mail from someone every recipient has written to is very likely wanted.

    The trust is full only when the sender's domain vouched for the message
    (SPF or DMARC pass): a spammer can forge a known address but not its
    domain's authentication.
    """
    known: TtlCache[tuple[int, str], bool] = TtlCache()

    def is_known(account_id: int, sender: str) -> bool:
        return known.get((account_id, sender), lambda: store.read_now(
            lambda c: contacts.known(c, account_id, sender)))

    async def check(ctx: CheckContext) -> None:
        sender = ctx.envelope.sender.address.lower()
        if not ctx.accounts or not sender:
            return
        if not all(is_known(a, sender) for a in ctx.accounts):
            return
        authenticated = "pass" in (ctx.auth.get("dmarc"), ctx.auth.get("spf"))
        ctx.verdict.add(Rule("known-correspondent", -3.0 if authenticated else -1.0,
                             f"the recipient wrote to {sender} before"
                             + ("" if authenticated else " (sender not authenticated)")))

    return check


def _verdict(conn: sqlite3.Connection, account_id: int, senders: set[str]) -> str | None:
    found = {senderlists.lookup_for_account(conn, account_id, s) for s in senders}
    if "block" in found:
        return "block"
    return "allow" if "allow" in found else None
