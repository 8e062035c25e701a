"""In-process notifications of mailbox changes (for IDLE and NOOP).

A writer publishes the mailbox id after its transaction commits; IMAP sessions
wait on it and then ask the store what changed since their MODSEQ. Only the
fact of a change travels here, never its content, so a lost or merged wake-up
cannot make a session miss anything.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class ChangeHub:
    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = defaultdict(set)

    def subscribe(self, mailbox_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[mailbox_id].add(event)
        return event

    def unsubscribe(self, mailbox_id: int, event: asyncio.Event) -> None:
        waiters = self._waiters.get(mailbox_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[mailbox_id]

    def publish(self, *mailbox_ids: int) -> None:
        for mailbox_id in mailbox_ids:
            for event in self._waiters.get(mailbox_id, ()):
                event.set()
