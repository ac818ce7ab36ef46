"""The history kept in the process's memory: `--store memory`, for tests.

Nothing survives a restart; retention still applies. Every write is
"durable" at once, and wakes those waiting in `wait_for_change` for its
execution at once. Leases and fences follow the store contract, though one
process is the only owner a memory store ever has: they matter here only
to a run that ended without `finish`, which `claim` then hands back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from flowservice.errors import LeaseLostError
from flowservice.history.store import (
    DEFAULT_LEASE_SECONDS,
    RUNNING,
    Claim,
    ExecutionQuery,
    ExecutionRecord,
    Renewal,
    StoredEvent,
    StoredExecution,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Lease:
    """Who owns a running execution, until when, and at which fence."""

    owner: str
    fence: int
    expires: datetime
    cancel_requested: bool = False


class MemoryStore:
    """An `ExecutionStore` in a few dicts."""

    def __init__(self, *, owner: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self._executions: dict[str, StoredExecution] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._owner = owner or str(uuid.uuid4())
        self._lease = timedelta(seconds=lease_seconds)
        self._leases: dict[str, _Lease] = {}  # running executions only
        self._held: dict[str, int] = {}  # fences this owner began or claimed executions at
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
        execution_id = record.execution_id
        self._executions[execution_id] = StoredExecution(record, RUNNING, b"", None)
        self._events[execution_id] = []
        self._leases[execution_id] = _Lease(self._owner, 1, _now() + self._lease)
        self._held[execution_id] = 1
        self._changed(execution_id)

    def append(self, execution_id: str, event: StoredEvent) -> None:
        if self._owns(execution_id):  # fencing: a lost execution's events are dropped
            self._events[execution_id].append(event)
            self._changed(execution_id)

    async def finish(
        self, execution_id: str, status: str, summary: bytes, finished_at: datetime
    ) -> None:
        owned = self._owns(execution_id)
        self._held.pop(execution_id, None)
        if not owned:
            raise LeaseLostError(execution_id)
        del self._leases[execution_id]
        stored = self._executions[execution_id]
        self._executions[execution_id] = replace(
            stored, status=status, summary=summary, finished_at=finished_at
        )
        self._changed(execution_id)

    def _owns(self, execution_id: str) -> bool:
        """Whether this owner still holds the running execution at the fence it had."""
        lease = self._leases.get(execution_id)
        return (
            lease is not None
            and lease.owner == self._owner
            and lease.fence == self._held.get(execution_id)
        )

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

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def lease_seconds(self) -> float:
        return self._lease.total_seconds()

    async def renew(self, execution_ids: Collection[str]) -> Renewal:
        lost: set[str] = set()
        cancel: set[str] = set()
        expires = _now() + self._lease
        for execution_id in execution_ids:
            if execution_id not in self._held:
                continue  # finished here
            if not self._owns(execution_id):
                lost.add(execution_id)
                continue
            lease = self._leases[execution_id]
            lease.expires = expires
            if lease.cancel_requested:
                cancel.add(execution_id)
        return Renewal(frozenset(lost), frozenset(cancel))

    async def claim(self, limit: int, execution_id: str = "") -> list[Claim]:
        now = _now()
        expired = sorted(
            (lease.expires, id_)
            for id_, lease in self._leases.items()
            if lease.expires <= now and (not execution_id or id_ == execution_id)
        )
        claims = []
        for _, id_ in expired[: max(limit, 0)]:
            lease = self._leases[id_]
            lease.owner, lease.fence = self._owner, lease.fence + 1
            lease.expires = now + self._lease
            self._held[id_] = lease.fence
            claims.append(Claim(self._executions[id_], lease.fence, lease.cancel_requested))
        return claims

    async def request_cancel(self, execution_id: str) -> bool:
        lease = self._leases.get(execution_id)
        if lease is None:
            return False
        lease.cancel_requested = True
        return True

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


def _now() -> datetime:
    return datetime.now(UTC)


def _selected(stored: StoredExecution, query: ExecutionQuery) -> bool:
    """Whether `stored` passes the filters of `query` (not its page)."""
    record = stored.record
    return (
        (not query.flow_id or record.flow_id == query.flow_id)
        and (not query.status or stored.status == query.status)
        and (query.started_after is None or record.started_at >= query.started_after)
        and (query.started_before is None or record.started_at < query.started_before)
    )
