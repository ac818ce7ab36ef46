"""The history kept in the process's memory: `--store memory`, for tests.

Nothing survives a restart; retention still applies. Every write is
"durable" at once, and wakes those waiting in `wait_for_change` for its
execution at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from flowservice.history.store import (
    RUNNING,
    ExecutionQuery,
    ExecutionRecord,
    StoredEvent,
    StoredExecution,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """An `ExecutionStore` in two dicts."""

    def __init__(self) -> None:
        self._executions: dict[str, StoredExecution] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    @property
    def failure(self) -> str:
        """Always "": memory does not fail to write."""
        return ""

    @property
    def count(self) -> int:
        return len(self._executions)

    def observe(self, on_write: Callable[[float, bool], None]) -> None:
        """Nothing to observe: memory has no write transactions."""

    def begin(self, record: ExecutionRecord) -> None:
        self._executions[record.execution_id] = StoredExecution(record, RUNNING, b"", None)
        self._events[record.execution_id] = []
        self._changed(record.execution_id)

    def append(self, execution_id: str, event: StoredEvent) -> None:
        self._events[execution_id].append(event)
        self._changed(execution_id)

    async def finish(
        self, execution_id: str, status: str, summary: bytes, finished_at: datetime
    ) -> None:
        stored = self._executions[execution_id]
        self._executions[execution_id] = replace(
            stored, status=status, summary=summary, finished_at=finished_at
        )
        self._changed(execution_id)

    async def get(self, execution_id: str) -> StoredExecution | None:
        return self._executions.get(execution_id)

    async def find_request(self, request_id: str) -> StoredExecution | None:
        for stored in self._executions.values():
            if stored.record.request_id == request_id:
                return stored
        return None

    async def events(self, execution_id: str, after: int = 0) -> list[StoredEvent]:
        return [e for e in self._events.get(execution_id, ()) if e.sequence > after]

    async def find(self, query: ExecutionQuery) -> list[StoredExecution]:
        def key(stored: StoredExecution) -> tuple[datetime, str]:
            return stored.record.started_at, stored.record.execution_id

        chosen = [s for s in self._executions.values() if _selected(s, query)]
        chosen.sort(key=key, reverse=True)
        if query.after is not None:
            after = query.after
            chosen = [s for s in chosen if key(s) < after]
        return chosen[: query.limit]

    async def purge(self, finished_before: datetime) -> int:
        old = [
            execution_id
            for execution_id, stored in self._executions.items()
            if stored.finished_at is not None and stored.finished_at < finished_before
        ]
        for execution_id in old:
            del self._executions[execution_id]
            del self._events[execution_id]
        return len(old)

    def close(self) -> None:
        """Nothing to release."""

    async def wait_for_change(self, execution_id: str, timeout: float) -> None:  # noqa: ASYNC109
        changed = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(execution_id, set())
        waiting.add(changed)
        try:
            await asyncio.wait([changed], timeout=timeout)
        finally:
            waiting.discard(changed)
            if not waiting:
                self._waiting.pop(execution_id, None)

    def _changed(self, execution_id: str) -> None:
        """Wakes those waiting for a change to the execution."""
        for changed in self._waiting.get(execution_id, ()):
            if not changed.done():
                changed.set_result(None)


def _selected(stored: StoredExecution, query: ExecutionQuery) -> bool:
    """Whether `stored` passes the filters of `query` (not its page)."""
    record = stored.record
    return (
        (not query.flow_id or record.flow_id == query.flow_id)
        and (not query.status or stored.status == query.status)
        and (query.started_after is None or record.started_at >= query.started_after)
        and (query.started_before is None or record.started_at < query.started_before)
    )
