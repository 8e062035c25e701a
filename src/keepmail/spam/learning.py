"""The running server's side of the classifier: scoring in the MX, learning from people.

`content_check` turns the classifier into a check of the inbound pipeline
(DESIGN.md principle 4, last layer). `Learner` is a background service that
consumes the store's training events — IMAP moves into and out of Junk,
quarantine releases — and admin training, updates the model and saves it
crash-safely now and then, so what users teach survives a restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..periodic import Periodic
from ..store import Store, accounts
from ..store import mail as mailq
from .classifier import Classifier

if TYPE_CHECKING:
    from ..inbound.mx import Check, CheckContext

# Larger messages are scored in a worker thread so the event loop keeps serving.
_THREAD_SCORE_SIZE = 256 * 1024


def content_check(classifier: Classifier, address_of: Callable[[int], str | None]) -> Check:
    """A pipeline check scoring the message (with the recipient's own adjustments
    when there is exactly one recipient account)."""
    from ..inbound.defenses import content_rules

    async def check(ctx: CheckContext) -> None:
        user = address_of(ctx.accounts[0]) if len(ctx.accounts) == 1 else None
        kwargs: dict[str, Any] = {"user": user, "auth": ctx.auth or None,
                                  "sender": ctx.envelope.sender.address or None,
                                  "client_ip": ctx.session.peer_ip}
        if len(ctx.message) > _THREAD_SCORE_SIZE:
            result = await asyncio.to_thread(classifier.score, ctx.message, **kwargs)
        else:
            result = classifier.score(ctx.message, **kwargs)
        ctx.session.record("classifier", probability=round(result.probability, 4),
                           reasons=[[n, round(w, 3)] for n, w in result.reasons[:8]])
        ctx.verdict.add(*content_rules(result.probability, result.reasons))

    return check


class Learner(Periodic):
    name = "spam learning"

    """Consumes training events every `period` seconds; saves the model after changes."""

    def __init__(self, store: Store, classifier: Classifier, model_path: Path, *,
                 period: float = 10.0, save_every: float = 60.0) -> None:
        self.store = store
        self.classifier = classifier
        self.model_path = model_path
        self.period = period
        self.save_every = save_every
        self.learned = 0
        self._dirty = False
        self._last_save = time.monotonic()

    async def close(self) -> None:
        await super().close()
        if self._dirty:
            self.save()

    async def run_once(self) -> int:
        """Learn from every pending event; returns how many."""
        count = 0
        while True:
            events = await self.store.read(lambda c: mailq.pending_training(c, 100))
            if not events:
                break
            for event in events:
                await self._learn(event)
                count += 1
        if self._dirty and time.monotonic() - self._last_save >= self.save_every:
            self.save()
        return count

    async def _learn(self, event: sqlite3.Row) -> None:
        blob_id, account_id = event["blob_id"], event["account_id"]
        if blob_id is not None:
            raw = await self.store.read_blob(blob_id)
            # Account 0 is the organization (admin training): learned org-wide.  A user's
            # event trains their own adjustment (and, if spam, the org model); both count
            # towards the sender/domain/network reputation, a user's share capped.
            account = self.store.read_now(lambda c: accounts.get_account_by_id(c, account_id))
            user = account.address if account else None
            await asyncio.to_thread(self.classifier.learn, raw, bool(event["is_spam"]),
                                    user=user)
            self.learned += 1
            self._dirty = True
        await self.store.write(lambda c: mailq.consume_training(c, event["id"]))

    def note_reply(self, user: str, recipients: list[str]) -> None:
        """`user` sent mail to `recipients` (call from the submission path for external
        recipients, replies above all): each gets one bounded ham vote of reputation.
        Cheap (a few dict updates), safe to call in the event loop; saved with the model.
        """
        for address in recipients:
            self.classifier.learn_reply(user, address)
        if recipients:
            self._dirty = True

    def save(self) -> None:
        self.model_path.parent.mkdir(parents=True, exist_ok=True)
        self.classifier.save(self.model_path)
        self._dirty = False
        self._last_save = time.monotonic()
