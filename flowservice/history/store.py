"""The store interface every history implementation follows, and its records.

Writes are split by what the caller waits for. `begin` and `append` only
queue (the execution's hot path never waits on a disk); `finish` returns
once the execution's last event and its end are durable, so no execution is
reported finished before it is in the history. A store that cannot write
raises `StoreUnavailableError` from `finish` and from every later `begin`,
and says so in `failure`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

__all__ = [
    "RUNNING",
    "ExecutionQuery",
    "ExecutionRecord",
    "ExecutionStore",
    "StoredEvent",
    "StoredExecution",
    "open_store",
]

RUNNING = "running"
"""The status of an execution that has not finished (the others are `ExecutionStatus` values)."""


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """What is known of an execution when it starts."""

    execution_id: str
    """The id the engine gave it."""
    flow_id: str
    """The `id` of the flow it runs, for filtering."""
    request: bytes
    """The request that started it (flow, input, stubs), as the API layer serialized it."""
    request_id: str
    """The caller's idempotency key (`request_id` in the request); "" when none."""
    caller_request_id: str
    """The caller's `x-request-id` metadata; "" when none."""
    started_at: datetime
    """When it started (UTC)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of an execution, as the API layer serialized it."""

    sequence: int
    """Its position in the execution, from 1."""
    payload: bytes
    """The event's bytes."""


@dataclass(frozen=True, slots=True)
class StoredExecution:
    """An execution as the history holds it."""

    record: ExecutionRecord
    """What started it."""
    status: str
    """`RUNNING`, or the `ExecutionStatus` value it ended with."""
    summary: bytes
    """Its summary as the API layer serialized it; b"" while it runs."""
    finished_at: datetime | None
    """When it finished (UTC); None while it runs."""


@dataclass(frozen=True, slots=True)
class ExecutionQuery:
    """Which executions `ExecutionStore.find` returns, newest first."""

    limit: int
    """At most this many."""
    flow_id: str = ""
    """Only this flow's; "" for all."""
    status: str = ""
    """Only those with this status; "" for all."""
    started_after: datetime | None = None
    """Only those started at or after this time."""
    started_before: datetime | None = None
    """Only those started before this time."""
    after: tuple[datetime, str] | None = None
    """Only those after this (started_at, execution_id) in newest-first order: a page token."""


class ExecutionStore(Protocol):
    """Where executions are recorded; see the module docstring for the write contract."""

    @property
    def failure(self) -> str:
        """Why the store cannot write; "" while it can."""
        ...

    @property
    def count(self) -> int:
        """How many executions the store holds (running and finished)."""
        ...

    def observe(self, on_write: Callable[[float, bool], None]) -> None:
        """Calls `on_write(seconds, ok)` after each write transaction, from any thread."""
        ...

    def begin(self, record: ExecutionRecord) -> None:
        """Queues a new running execution; StoreUnavailableError if the store has failed."""
        ...

    def append(self, execution_id: str, event: StoredEvent) -> None:
        """Queues one event of a running execution."""
        ...

    async def finish(
        self, execution_id: str, status: str, summary: bytes, finished_at: datetime
    ) -> None:
        """Records the end; returns once it and every event before it are durable."""
        ...

    async def get(self, execution_id: str) -> StoredExecution | None:
        """The execution, None when the history has none by that id."""
        ...

    async def find_request(self, request_id: str) -> StoredExecution | None:
        """The execution started by the request with idempotency key `request_id`, if any."""
        ...

    async def events(self, execution_id: str, after: int = 0) -> list[StoredEvent]:
        """Its stored events whose sequence is greater than `after`, in order."""
        ...

    async def find(self, query: ExecutionQuery) -> list[StoredExecution]:
        """The executions `query` selects, newest first."""
        ...

    async def purge(self, finished_before: datetime) -> int:
        """Deletes the executions that finished before the time; how many."""
        ...

    def close(self) -> None:
        """Writes what is queued, then releases the store."""
        ...


_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""How a `--store` that names a PostgreSQL database begins."""


def open_store(location: str) -> ExecutionStore:
    """The store `--store` names: "memory", a postgresql:// URL, or the path of an SQLite file.

    Raises `StoreUnavailableError` when the file or database cannot be
    opened or was written by a newer version.
    """
    from flowservice.history.memory import MemoryStore
    from flowservice.history.sqlite import SqliteStore

    if location == "memory":
        return MemoryStore()
    if location.startswith(_POSTGRES_SCHEMES):
        from flowservice.history.postgres import PostgresStore  # psycopg only when used

        return PostgresStore(location)
    return SqliteStore(Path(location))
