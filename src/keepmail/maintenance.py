"""Periodic housekeeping: retention of the flight recorder, quarantine and greylist.

Runs once shortly after start and then every `period` seconds, in the server's
own loop; each job is small and indexed, so no lock is held for long.
"""

from __future__ import annotations

import asyncio
import time

from .config import Config
from .periodic import Periodic
from .recorder import Recorder
from .store import Store
from .store import greylist as greylist_store
from .store import quarantine as qstore


class Maintenance(Periodic):
    name = "maintenance"
    first_delay = 60.0

    def __init__(self, config: Config, store: Store, recorder: Recorder,
                 period: float = 3600.0) -> None:
        self.config = config
        self.store = store
        self.recorder = recorder
        self.period = period

    async def run_once(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        days = self.config.inbound.quarantine_days
        expired = await self.store.write(lambda c: qstore.expire(c, now - days * 86400))
        await self.store.write(lambda c: greylist_store.expire(
            c, window=86400, remember=35 * 86400, now=now))
        pruned = await asyncio.to_thread(self.recorder.prune, now)
        return {"quarantine_expired": expired, "traces_pruned": pruned}
