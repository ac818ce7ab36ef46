"""The history's upkeep while the server runs: retention, health, leases and takeovers.

One background task wakes every `CHECK_INTERVAL` seconds (more often with
short leases). It deletes the executions that finished more than
`--retention` days ago (at start, then about every hundredth of the
retention, at most hourly), and reports health NOT_SERVING while the store
cannot write, SERVING again once it can. A failed store refuses new
executions, so nothing would ever write to it again: the purge doubles as
the probe that finds it writable again.

Ownership (docs/durability.md): about every third of `--lease-seconds` it
renews the leases of the executions this process runs; those the store
says it lost (another process took them over) stop here at once, those
someone asked to cancel from another process are cancelled here. Then, at
each wake-up, it takes over as many abandoned executions (expired leases)
as the engine has room for, and resumes them (`Resumer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2

from flowservice.api.recording import RunningExecutions
from flowservice.api.resumption import Resumer
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
        self._renewal_interval = store.lease_seconds / 3
        self._task: asyncio.Task[None] | None = None

    def start(self, health: health_aio.HealthServicer, resumer: Resumer | None = None) -> None:
        """Starts the background task that keeps the store (and, with `resumer`, takes over)."""
        self._task = asyncio.get_running_loop().create_task(self._keep(health, resumer))

    async def stop_executions(self) -> None:
        """Stops renewing and taking over, then stops the executions still running here.

        They are left running in the store, for another process to resume.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.running.stop()

    async def stop(self) -> None:
        """`stop_executions`, then writes what is queued and closes the store."""
        await self.stop_executions()
        await asyncio.to_thread(self.store.close)

    async def _keep(self, health: health_aio.HealthServicer, resumer: Resumer | None) -> None:
        serving = True
        next_purge = next_renewal = 0.0
        while True:
            if self.store.failure or time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self._purge_interval
                await self._purge()
            if serving != (not self.store.failure):
                serving = not self.store.failure
                await self._report(health, serving)
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + self._renewal_interval
                await self._guarded(self._renew())
            if resumer is not None:  # after the renewal: never what runs here
                await self._guarded(self._take_over(resumer))
            await asyncio.sleep(min(CHECK_INTERVAL, self._purge_interval, self._renewal_interval))

    async def _renew(self) -> None:
        renewal = await self.store.renew(self.running.ids())
        for execution_id in renewal.lost:
            logger.warning(
                "execution %s was taken over by another process; stopping it here",
                execution_id,
                extra={"execution_id": execution_id},
            )
            self.running.lose(execution_id)
        for execution_id in renewal.cancel_requested:
            self.running.cancel(execution_id)

    async def _take_over(self, resumer: Resumer) -> None:
        claimed = await resumer.take_over(resumer.capacity)
        if claimed:
            logger.info("took over %d executions whose server stopped", claimed)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work`; a store that fails is reported by health, anything else is logged."""
        try:
            await work
        except StoreUnavailableError:
            pass
        except Exception:
            logger.exception("keeping the execution history failed; trying again")

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
