"""The history's upkeep while the server runs: retention, and health when it fails.

One background task wakes every `CHECK_INTERVAL` seconds. It deletes the
executions that finished more than `--retention` days ago (at start, then
about every hundredth of the retention, at most hourly), and reports health
NOT_SERVING while the store cannot write, SERVING again once it can. A
failed store refuses new executions, so nothing would ever write to it
again: the purge doubles as the probe that finds it writable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2

from flowservice.api.recording import RunningExecutions
from flowservice.errors import StoreUnavailableError
from flowservice.history import ExecutionStore

__all__ = ["CHECK_INTERVAL", "HistoryKeeper"]

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
"""Seconds between looks at the store's health."""
_LONGEST_PURGE_INTERVAL = 3600.0
_DAY = 86400.0


class HistoryKeeper:
    """Owns the server's store and keeps it: `start` it with the server, `stop` it after."""

    def __init__(self, store: ExecutionStore, retention_days: float, services: Sequence[str]):
        self.store = store
        self.running = RunningExecutions()
        self._retention = timedelta(days=retention_days)
        self._purge_interval = min(retention_days * _DAY / 100, _LONGEST_PURGE_INTERVAL)
        self._services = tuple(services)
        self._task: asyncio.Task[None] | None = None

    def start(self, health: health_aio.HealthServicer) -> None:
        """Starts the background task that keeps the store."""
        self._task = asyncio.get_running_loop().create_task(self._keep(health))

    async def stop(self) -> None:
        """Cancels the executions still running, writes what is queued, closes the store."""
        await self.running.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.store.close)

    async def _keep(self, health: health_aio.HealthServicer) -> None:
        serving = True
        next_purge = 0.0
        while True:
            if self.store.failure or time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self._purge_interval
                await self._purge()
            if serving != (not self.store.failure):
                serving = not self.store.failure
                await self._report(health, serving)
            await asyncio.sleep(min(CHECK_INTERVAL, self._purge_interval))

    async def _purge(self) -> None:
        try:
            purged = await self.store.purge(datetime.now(UTC) - self._retention)
        except StoreUnavailableError:
            return  # the store's failure says why; health reports it
        if purged:
            logger.info("deleted %d executions older than the retention", purged)

    async def _report(self, health: health_aio.HealthServicer, serving: bool) -> None:
        if serving:
            logger.info("the execution history is writable again")
        else:
            logger.error("%s; reporting NOT_SERVING", self.store.failure)
        status = health_pb2.HealthCheckResponse
        for service in self._services:
            await health.set(service, status.SERVING if serving else status.NOT_SERVING)
