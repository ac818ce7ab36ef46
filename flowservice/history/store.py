"""The store interface every history implementation follows, and its records.

Writes are split by what the caller waits for. `begin` and `append` only
queue (the execution's hot path never waits on a disk); `finish` returns
once the execution's last event and its end are durable, so no execution is
reported finished before it is in the history. A store that cannot write
raises `StoreUnavailableError` from `finish` and from every later `begin`,
and says so in `failure`.

Ownership (docs/durability.md). Every process that writes to a store is
an *owner*: `owner` is its id, a new random one per store object unless
given. Every running execution has exactly one owner, a *lease* (a time
until which that owner may run it) and a *fence* (an integer that grows by
one each time the execution changes hands):

- `begin` makes this store's owner the owner, with fence 1 and a lease of
  `lease_seconds` from now.
- `renew`, which the owner calls about every `lease_seconds / 3`, extends
  the leases of the executions it still runs, and reports those it no
  longer owns and those someone asked to cancel (`request_cancel`).
- `claim` takes over running executions whose lease has expired (their
  owner died or stalled): it makes this store's owner their owner, adds 1
  to their fence and gives them a new lease. The claimer then resumes
  them from their stored events.
- Fencing: the store remembers the fence at which this owner began or
  claimed each execution. An `append` or `finish` of an execution whose
  fence has moved on (another owner claimed it), or that has finished, is
  refused: an event is dropped and `finish` raises `LeaseLostError`; the
  execution's id is then among `renew`'s `lost`. Two owners therefore
  never both write one execution, even when the old one has not noticed
  that it lost its lease. Refusing is the store's job, inside its write
  transaction (a conditional UPDATE/INSERT on the fence), not the caller's.

Times of leases are the store's clock (an SQLite store: this machine's; a
database server: its own), so owners on machines whose clocks differ agree.

Readers learn of new events without polling: `wait_for_change` returns
once a change to the execution is readable (a change made in this process
wakes its waiters at once; one made by another process sharing the store
may be seen only when `timeout` runs out). It may return without a change:
the caller reads again and decides.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "RUNNING",
    "Claim",
    "ExecutionQuery",
    "ExecutionRecord",
    "ExecutionStore",
    "Renewal",
    "StoredEvent",
    "StoredExecution",
    "open_store",
]

RUNNING = "running"
"""The status of an execution that has not finished (the others are `ExecutionStatus` values)."""

DEFAULT_LEASE_SECONDS = 6.0
"""How long an owner's hold on a running execution lasts without a renewal (`--lease-seconds`)."""


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
    time_allowed: float | None = None
    """The seconds, from its start, that the deadline of the call running it allowed
    (`Execute`, `ExecuteStream`); None: no deadline. A resumed execution keeps it."""


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


@dataclass(frozen=True, slots=True)
class Claim:
    """A running execution this store's owner has just taken over (`ExecutionStore.claim`)."""

    execution: StoredExecution
    """The execution as stored when it was claimed (status `RUNNING`)."""
    fence: int
    """Its new fence: the one this owner's writes to it now carry."""
    cancel_requested: bool
    """True when someone asked to cancel it: the claimer records it cancelled
    (`finish` with status CANCELLED) instead of resuming it."""


@dataclass(frozen=True, slots=True)
class Renewal:
    """What `ExecutionStore.renew` found out about the executions it was given."""

    lost: frozenset[str]
    """The ones this owner no longer owns: another claimed them, they finished
    (a cancel recorded by another process), or they are gone. Their local
    runs must stop at once, without writing: the store would refuse it."""
    cancel_requested: frozenset[str]
    """The ones still owned, whose lease was renewed, that someone asked to
    cancel (`request_cancel`): the owner cancels them and records them cancelled."""


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

    async def wait_for_change(self, execution_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """Returns when the execution may have new stored events or an end, or after `timeout` seconds."""  # noqa: E501
        ...

    # Ownership: see the module docstring. Every method below sees every
    # write queued before it (a `begin` still in a queue counts as written).

    @property
    def owner(self) -> str:
        """This store's owner id: the owner `begin` and `claim` record (unique per process)."""
        ...

    @property
    def lease_seconds(self) -> float:
        """How long a lease lasts from its `begin`, `renew` or `claim`."""
        ...

    async def renew(self, execution_ids: Collection[str]) -> Renewal:
        """Extends by `lease_seconds` the leases of `execution_ids` that this owner still owns.

        `execution_ids` are the executions that run in this process (begun
        or claimed through this store); the leases of any others this owner
        holds are left to expire, so an execution whose local run ended
        without `finish` is taken over by someone. Owned means: running,
        owner is `owner`, fence is the one this store began or claimed it
        with. Each id given is in `Renewal.lost` when not owned, else its
        lease is renewed, and it is in `Renewal.cancel_requested` when
        someone asked to cancel it. An id whose `finish` this store has been
        called for (before or during the renewal) is in neither: it ended
        here, and its run may still be delivering its end. A store that
        cannot write raises StoreUnavailableError (the leases then expire).
        """
        ...

    async def claim(self, limit: int, execution_id: str = "") -> list[Claim]:
        """Takes over up to `limit` running executions whose lease has expired; them.

        With `execution_id`, only that one (a caller retrying the request
        that started it). Each claimed execution gets this owner, its fence
        plus 1, and a lease of `lease_seconds` from now, in one transaction,
        so two claimers never both get one execution. The oldest expired
        leases first. It may be one this owner still runs, whose lease
        expired because this process was too busy to renew it: the caller
        renews before it claims, and never starts a second run of what runs
        here (fences are per execution and owner, not per run: this owner's
        writes then carry the new fence, whichever run makes them).
        """
        ...

    async def request_cancel(self, execution_id: str) -> bool:
        """Asks the owner of a running execution to cancel it; False when it is not running.

        The owner learns of it at its next `renew` and records the execution
        cancelled. If the lease has expired (the owner is gone), whoever
        `claim`s it next (the caller, at once) sees `Claim.cancel_requested`
        and records it cancelled instead of resuming it: the store writes no
        end itself, since the end's last event is the API layer's to build
        from the stored ones. Returns once the request is durable.
        """
        ...


def open_store(
    location: str, *, owner: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> ExecutionStore:
    """The store `--store` names: "memory", a postgresql:// URL, or the path of an SQLite file.

    `owner` is the id its executions are owned by ("": a new random one);
    `lease_seconds` how long a lease lasts. Raises `StoreUnavailableError`
    when the file or database cannot be opened or was written by a newer version.
    """
    from flowservice.history.memory import MemoryStore
    from flowservice.history.sqlite import SqliteStore

    if location == "memory":
        return MemoryStore(owner=owner, lease_seconds=lease_seconds)
    if location.startswith(("postgresql://", "postgres://")):
        from flowservice.history.postgres import PostgresStore  # psycopg only when used

        return PostgresStore(location, owner=owner, lease_seconds=lease_seconds)
    return SqliteStore(Path(location), owner=owner, lease_seconds=lease_seconds)
