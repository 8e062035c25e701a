"""A background job that runs `run_once` every `period` seconds in the server's loop.

A failing run is logged and retried next period: housekeeping must never
take the server down, nor stop for good after one bad night.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("keepmail")


class Periodic:
    period: float = 60.0
    first_delay: float = 0.0   # seconds before the first run
    name: str = "periodic job"

    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("%s failed; will retry", self.name)
            await asyncio.sleep(self.period)

    async def run_once(self) -> Any:
        raise NotImplementedError
