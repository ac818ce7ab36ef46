"""The history in PostgreSQL (psycopg 3, async, with psycopg-pool): the store of replicas.

`--store postgresql://...` makes every server process that names the same
database a replica: each serves every RPC from the one history.

The store runs an event loop of its own, in a thread of its own, as the
SQLite store runs its writer thread: callers on any loop (the server's, a
test's) use it, and `close` stays synchronous. `begin`, `append` and
`finish` only put operations in a list; the writer coroutine takes
everything listed at once and writes it in one transaction (one statement
per kind of row, from arrays: new executions, events, ends), then wakes
those who wait in `finish`, with one call per waiting loop. Reads borrow a
pooled connection on the store's loop.

Ownership (see `flowservice.history.store`): each running row holds its
`owner`, `fence` and `lease_expires_at`, in the database's clock. Fencing
is in the writer's statements: events are inserted only for executions at
the fence this store holds (locking those rows FOR SHARE, so a concurrent
claim waits for the insert or the insert sees the claim), ends only while
the execution also still runs; the executions refused are noted, and their
`finish` raises `LeaseLostError`. Claims take expired executions with
`SELECT ... FOR UPDATE SKIP LOCKED`: replicas claiming at once never wait
for each other nor claim one execution twice.

Watches across replicas: the writer's transaction also NOTIFYs channel
`flowmanager_history` with the ids of the executions it wrote to; each
process has one connection that LISTENs and wakes the `wait_for_change`
callers waiting on those ids, whichever replica wrote.

The schema is versioned (`schema_version`); `_MIGRATIONS[n]` takes a
database from version n to n + 1. They run at start-up in one transaction
that holds an advisory lock, so replicas starting together migrate once and
the others find the work done. A database of a newer version than this code
knows is refused with a clear message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from flowservice.errors import LeaseLostError, StoreUnavailableError
from flowservice.history.postgres_queue import WORKER_TASKS_MIGRATION
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

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: executions, their events and their owners' leases.
    """
    CREATE TABLE executions (
        execution_id text PRIMARY KEY,
        flow_id text NOT NULL,
        status text NOT NULL,
        request bytea NOT NULL,
        request_id text NOT NULL,
        caller_request_id text NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz,
        summary bytea NOT NULL,
        owner text NOT NULL,
        fence integer NOT NULL,
        lease_expires_at timestamptz NOT NULL,
        cancel_requested boolean NOT NULL DEFAULT false
    );
    CREATE INDEX executions_by_start ON executions (started_at, execution_id);
    CREATE INDEX executions_by_request_id ON executions (request_id) WHERE request_id <> '';
    CREATE INDEX executions_by_lease ON executions (lease_expires_at) WHERE status = 'running';
    CREATE TABLE events (
        execution_id text NOT NULL,
        sequence integer NOT NULL,
        payload bytea NOT NULL,
        PRIMARY KEY (execution_id, sequence)
    );
    """,
    # 1 -> 2: the flow registry (flowservice.registry.postgres). A creation locks its
    # flow's row in `flows`; ids sort by bytes ("C"), as in the other registries.
    """
    CREATE TABLE flows (
        flow_id text COLLATE "C" PRIMARY KEY,
        latest integer NOT NULL
    );
    CREATE TABLE flow_versions (
        flow_id text COLLATE "C" NOT NULL,
        version integer NOT NULL,
        name text NOT NULL,
        body bytea NOT NULL,
        digest text NOT NULL,
        created_at timestamptz NOT NULL,
        PRIMARY KEY (flow_id, version)
    );
    """,
    # 2 -> 3: the worker tasks that replicas share (flowservice/history/postgres_queue.py).
    WORKER_TASKS_MIGRATION,
    # 3 -> 4: the seconds the deadline of the call running an execution allowed it,
    # kept for its resumption (NULL: none, as for every execution before).
    """
    ALTER TABLE executions ADD COLUMN time_allowed double precision;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this code writes."""

_CHANNEL = "flowmanager_history"
"""The NOTIFY channel: each payload holds ids of executions just written, space-separated."""
_MIGRATION_LOCK = 0x466C6F774D677221  # pg_advisory_xact_lock key: "FlowMgr!"
_PAYLOAD_BYTES = 7900  # a NOTIFY payload must stay below 8000 bytes
_WRITE_TIMEOUT = 30.0  # seconds a batch may take before the store counts as failed
_RELISTEN = 1.0  # seconds between attempts to LISTEN again after the connection broke
_BATCH = 10_000  # operations per transaction, at most
_ATTEMPTS = 3  # tries of a batch that met a deadlock or a serialization failure
_NOT_HELD = -1  # the fence written with an execution this store does not hold: never matches

_T = TypeVar("_T")
_Op = Callable[[psycopg.AsyncConnection[Any]], Awaitable[int]]  # returns executions deleted
# What the writer's list holds: (kind, item).
_INSERT_EXECUTION = "execution"  # item: a row of `executions`, in _EXECUTION_COLUMNS order
_INSERT_EVENT = "event"  # item: (execution_id, sequence, payload, fence)
_FINISH = "finish"  # item: (status, summary, finished_at, execution_id, fence)
_RUN = "run"  # item: an `_Op`, run after the rows
_WAKE = "wake"  # item: (loop, future) resolved with the failure, "" when written
_STOP = "stop"  # item: None; the writer ends after this batch
_Item = tuple[str, Any]
_EXECUTION_COLUMNS = (
    "execution_id, flow_id, status, request, request_id, caller_request_id,"
    " started_at, finished_at, summary, time_allowed"
)
_EXECUTION_TYPES = (
    ("text", "text", "text", "bytea", "text", "text")
    + ("timestamptz",) * 2
    + ("bytea", "double precision")
)
_COLUMNS = (
    "execution_id, flow_id, request, request_id, caller_request_id, started_at,"
    " status, summary, finished_at, time_allowed"
)
_QUALIFIED_COLUMNS = ", ".join("e." + column.strip() for column in _COLUMNS.split(","))
_LEASE = "now() + make_interval(secs => %(lease)s)"  # a lease taken now, in the database's clock
_RETRIED = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class PostgresStore:
    """An `ExecutionStore` in the PostgreSQL database at `url` (a libpq URL or conninfo).

    `pool_size`: connections at most (the writer's, readers'; the listener
    has one more). `timeout`: seconds to connect, or to wait for a pooled
    connection, before the database counts as unavailable.
    """

    def __init__(
        self,
        url: str,
        *,
        owner: str = "",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        pool_size: int = 8,
        timeout: float = 5.0,
    ) -> None:
        self._where = _describe(url)
        self._failure = ""
        self._owner = owner or str(uuid.uuid4())
        self._lease_seconds = lease_seconds
        self._held: dict[str, int] = {}  # the fence of each execution begun or claimed here
        self._lost: set[str] = set()  # held ones whose writes were refused (the writer adds)
        self._unwritten: set[str] = set()  # ...because their start never was (a failed batch)
        self._count = 0
        self._on_write: Callable[[float, bool], None] | None = None
        self._lock = threading.Lock()  # guards _pending, _signalled, _waiters, _lost, _unwritten
        self._pending: list[_Item] = []
        self._signalled = False
        self._waiters: dict[str, list[_Waiter]] = {}
        self._closed = False
        self._loop_thread = _LoopThread("history-postgres")
        try:
            self._connections = self._loop_thread.run(self._open(url, pool_size, timeout)).result()
        except BaseException:
            self._loop_thread.stop()
            raise

    async def _open(self, url: str, pool_size: int, patience: float) -> _Connections:
        """On the store's loop: the pool, the schema, the writer and the listener."""
        try:
            options = _options(url, patience)
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"cannot use {self._where}: {exc}") from None
        pool = _new_pool(url, options, pool_size, patience, "flowmanager-history")
        try:
            await pool.open(wait=True, timeout=patience)
            async with pool.connection() as db:
                await _migrate(db)
                counted = await (await db.execute("SELECT count(*) FROM executions")).fetchone()
            listening = await _listening(url, options)  # before the first write is possible
        except StoreUnavailableError:
            await pool.close()
            raise
        except (psycopg.Error, OSError) as exc:
            await pool.close()
            raise StoreUnavailableError(f"cannot open {self._where}: {_said(exc)}") from None
        self._count = int(counted[0]) if counted else 0
        self._wake = asyncio.Event()
        writer = asyncio.create_task(self._write_loop(pool))
        listener = asyncio.create_task(self._listen(listening, url, options))
        return _Connections(pool, writer, listener)

    @property
    def failure(self) -> str:
        """Why the last write failed; "" while writes succeed."""
        return self._failure

    @property
    def count(self) -> int:
        """Executions in the database when it opened, plus this process's, less its purges."""
        return self._count

    def observe(self, on_write: Callable[[float, bool], None]) -> None:
        self._on_write = on_write

    def begin(self, record: ExecutionRecord) -> None:
        if self._failure:
            raise StoreUnavailableError(self._failure)
        row = (
            record.execution_id,
            record.flow_id,
            RUNNING,
            record.request,
            record.request_id,
            record.caller_request_id,
            record.started_at,
            None,
            b"",
            record.time_allowed,
        )
        self._held[record.execution_id] = 1
        self._put(_INSERT_EXECUTION, row)

    def append(self, execution_id: str, event: StoredEvent) -> None:
        fence = self._held.get(execution_id, _NOT_HELD)
        self._put(_INSERT_EVENT, (execution_id, event.sequence, event.payload, fence))

    async def finish(
        self, execution_id: str, status: str, summary: bytes, finished_at: datetime
    ) -> None:
        fence = self._held.pop(execution_id, _NOT_HELD)
        self._put(_FINISH, (status, summary, finished_at, execution_id, fence))
        await self._written()
        with self._lock:
            lost = execution_id in self._lost
            unwritten = execution_id in self._unwritten
            self._lost.discard(execution_id)
            self._unwritten.discard(execution_id)
        if unwritten:
            raise StoreUnavailableError(f"the start of execution {execution_id} was not written")
        if lost or fence == _NOT_HELD:
            raise LeaseLostError(execution_id)

    def _put(self, kind: str, item: Any) -> None:
        """Lists one operation; wakes the writer unless a wake-up is on its way already."""
        with self._lock:
            self._pending.append((kind, item))
            if self._signalled:
                return
            self._signalled = True
        self._loop_thread.loop.call_soon_threadsafe(self._wake.set)

    async def _written(self, *, check: bool = True) -> None:
        """Returns once everything listed so far is committed; StoreUnavailableError if not."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[str] = loop.create_future()
        self._put(_WAKE, (loop, written))  # resolved after the batch that holds it
        failure = await written
        if failure and check:
            raise StoreUnavailableError(failure)

    async def _write_loop(self, pool: AsyncConnectionPool[Any]) -> None:
        """The writer: one transaction for whatever was listed since the last one.

        At most `_BATCH` operations at a time: a backlog (the database was
        slow) is written in transactions of bounded size and time.
        """
        while True:
            await self._wake.wait()
            with self._lock:
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                if not self._pending:
                    self._signalled = False
                    self._wake.clear()
            await self._write(pool, batch)
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[str]]] = {}
            for kind, item in batch:
                if kind == _WAKE:
                    waiting.setdefault(item[0], []).append(item[1])
            for loop, futures in waiting.items():
                _call_on(loop, _resolve_all, futures, self._failure)
            if any(kind == _STOP for kind, _ in batch):
                return

    async def _write(self, pool: AsyncConnectionPool[Any], batch: Sequence[_Item]) -> None:
        """Writes `batch` in one transaction; on an error, notes it in `failure`.

        A deadlock (replicas cancelling each other's executions at once) or
        a serialization failure rolls the batch back whole: it is tried again.
        """
        rows = _Rows.of(batch, self._owner, self._lease_seconds)
        if rows.empty:
            return
        started = time.perf_counter()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with (
                    asyncio.timeout(_WRITE_TIMEOUT),
                    pool.connection() as db,
                    db.transaction(),
                ):
                    purged, lost, unwritten = await rows.write(db)
            except _RETRIED as exc:
                if attempt < _ATTEMPTS:
                    continue
                self._failure = f"cannot write to {self._where}: {_said(exc)}"
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._failure = f"cannot write to {self._where}: {_said(exc)}"
            else:
                self._failure = ""
                self._count += len(rows.started) - purged
                if lost or unwritten:
                    with self._lock:
                        self._lost |= lost
                        self._unwritten |= unwritten
            break
        if self._on_write is not None:
            self._on_write(time.perf_counter() - started, not self._failure)

    async def wait_for_change(self, execution_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """Returns when the execution may have new stored events or an end, or after `timeout` s.

        Any replica's write wakes it, through LISTEN/NOTIFY. A write that
        commits between the caller's last read and this call is seen only at
        the timeout: keep it short enough to bound that rare delay.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop, loop.create_future())
        with self._lock:
            self._waiters.setdefault(execution_id, []).append(waiter)
        try:
            await asyncio.wait([waiter.changed], timeout=timeout)
        finally:
            with self._lock:
                waiters = self._waiters.get(execution_id, [])
                waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(execution_id, None)

    async def _listen(
        self, db: psycopg.AsyncConnection[Any], url: str, options: dict[str, Any]
    ) -> None:
        """The listener: wakes the waiters of the executions each NOTIFY names.

        `db` listens already. When its connection breaks, a new one listens
        as soon as the database answers, and wakes every waiter: what was
        written meanwhile was announced to nobody.
        """
        while True:
            try:
                async with db:
                    async for notice in db.notifies():
                        self._changed(notice.payload.split())
            except (psycopg.Error, OSError):
                pass
            while True:
                await asyncio.sleep(_RELISTEN)
                with contextlib.suppress(psycopg.Error, OSError):
                    db = await _listening(url, options)
                    break
            self._changed(None)

    def _changed(self, execution_ids: Iterable[str] | None) -> None:
        """Wakes the waiters on `execution_ids` (None: on every execution)."""
        with self._lock:
            if execution_ids is None:
                waiters = [w for some in self._waiters.values() for w in some]
            else:
                waiters = [w for i in execution_ids for w in self._waiters.get(i, ())]
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter in waiters:
            by_loop.setdefault(waiter.loop, []).append(waiter.changed)
        for loop, futures in by_loop.items():
            _call_on(loop, _resolve_all, futures, None)

    async def get(self, execution_id: str) -> StoredExecution | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM executions WHERE execution_id = %s", (execution_id,)
        )
        return _execution(rows[0]) if rows else None

    async def find_request(self, request_id: str) -> StoredExecution | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM executions WHERE request_id = %s AND request_id <> ''"
            " ORDER BY started_at LIMIT 1",
            (request_id,),
        )
        return _execution(rows[0]) if rows else None

    async def events(self, execution_id: str, after: int = 0) -> list[StoredEvent]:
        rows = await self._read(
            "SELECT sequence, payload FROM events WHERE execution_id = %s AND sequence > %s"
            " ORDER BY sequence",
            (execution_id, after),
        )
        return [StoredEvent(sequence, payload) for sequence, payload in rows]

    async def find(self, query: ExecutionQuery) -> list[StoredExecution]:
        conditions, values = _conditions(query)
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM executions WHERE {conditions}"
            " ORDER BY started_at DESC, execution_id DESC LIMIT %(limit)s",
            {**values, "limit": query.limit},
        )
        return [_execution(row) for row in rows]

    async def purge(self, finished_before: datetime) -> int:
        counts: list[int] = []

        async def delete(db: psycopg.AsyncConnection[Any]) -> int:
            # What finished before the cutoff started before it: the index on
            # started_at narrows the search.
            old = "FROM executions WHERE started_at < %(cutoff)s AND finished_at < %(cutoff)s"
            cutoff = {"cutoff": finished_before}
            await db.execute(
                f"DELETE FROM events WHERE execution_id IN (SELECT execution_id {old})", cutoff
            )
            deleted = await db.execute(f"DELETE {old}", cutoff)
            counts.append(deleted.rowcount)
            return deleted.rowcount

        self._put(_RUN, delete)
        await self._written()
        return sum(counts)

    async def _read(self, sql: str, args: Sequence[Any] | dict[str, Any]) -> list[Any]:
        async def read() -> list[Any]:
            async with self._connections.pool.connection() as db:
                return await (await db.execute(sql, args)).fetchall()

        await self._written(check=False)  # a read sees every write listed before it
        try:
            return await asyncio.wrap_future(self._loop_thread.run(read()))
        except (psycopg.Error, OSError) as exc:
            raise StoreUnavailableError(f"cannot read {self._where}: {_said(exc)}") from None

    def close(self) -> None:
        """Writes what is listed, stops listening, closes the connections and the loop."""
        if self._closed:
            return
        self._closed = True
        self._put(_STOP, None)
        self._loop_thread.run(self._shut()).result()
        self._loop_thread.stop()

    async def _shut(self) -> None:
        connections = self._connections
        await connections.writer
        connections.listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connections.listener
        await connections.pool.close()

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    async def renew(self, execution_ids: Collection[str]) -> Renewal:
        ids = list(execution_ids)
        if not ids:  # an idle replica's renewals cost the database nothing
            return Renewal(frozenset(), frozenset())
        fences = [self._held.get(i, _NOT_HELD) for i in ids]
        renewed: dict[str, bool] = {}

        async def renew(db: psycopg.AsyncConnection[Any]) -> int:
            renewed.clear()  # a retried batch starts over
            rows = await db.execute(
                f"UPDATE executions AS e SET lease_expires_at = {_LEASE}"
                " FROM unnest(%(ids)s::text[], %(fences)s::integer[]) AS h (id, fence)"
                " WHERE e.execution_id = h.id AND e.fence = h.fence AND e.owner = %(owner)s"
                " AND e.status = 'running' RETURNING e.execution_id, e.cancel_requested",
                {"ids": ids, "fences": fences, "owner": self._owner, "lease": self._lease_seconds},
            )
            renewed.update(await rows.fetchall())
            return 0

        self._put(_RUN, renew)
        await self._written()
        # Held still: not finished meanwhile (`finish` lets go of it first).
        lost = frozenset(i for i in ids if i not in renewed and i in self._held)
        with self._lock:
            self._lost -= lost  # reported here: their runs stop without a `finish`
        return Renewal(lost, frozenset(i for i, cancel in renewed.items() if cancel))

    async def claim(self, limit: int, execution_id: str = "") -> list[Claim]:
        expired = (
            "status = 'running' AND lease_expires_at <= now()"
            " AND (%(only)s = '' OR execution_id = %(only)s)"
        )
        # A cheap read first (the index on running leases): most looks find nothing.
        if limit <= 0 or not await self._read(
            f"SELECT 1 FROM executions WHERE {expired} LIMIT 1", {"only": execution_id}
        ):
            return []
        values = {
            "only": execution_id,
            "limit": limit,
            "owner": self._owner,
            "lease": self._lease_seconds,
        }
        claimed: list[Claim] = []

        async def claim(db: psycopg.AsyncConnection[Any]) -> int:
            claimed.clear()
            rows = await db.execute(
                "WITH expired AS (SELECT execution_id FROM executions"
                f" WHERE {expired}"
                " ORDER BY lease_expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                f" UPDATE executions AS e SET owner = %(owner)s, fence = e.fence + 1,"
                f" lease_expires_at = {_LEASE} FROM expired"
                " WHERE e.execution_id = expired.execution_id"
                f" RETURNING {_QUALIFIED_COLUMNS}, e.fence, e.cancel_requested",
                values,
            )
            claimed.extend(Claim(_execution(r), r[-2], r[-1]) for r in await rows.fetchall())
            return 0

        self._put(_RUN, claim)
        await self._written()
        for each in claimed:
            self._held[each.execution.record.execution_id] = each.fence
        return claimed

    async def request_cancel(self, execution_id: str) -> bool:
        done: list[bool] = []

        async def request(db: psycopg.AsyncConnection[Any]) -> int:
            # Only the flag, even when the owner is gone: whoever claims it next
            # records the end, with the last event that only the API layer builds.
            flagged = await db.execute(
                "UPDATE executions SET cancel_requested = true WHERE execution_id = %s"
                " AND status = 'running'",
                (execution_id,),
            )
            done[:] = [bool(flagged.rowcount)]
            return 0

        self._put(_RUN, request)
        await self._written()
        return bool(done and done[0])


class _LoopThread:
    """An event loop of its own, in a daemon thread.

    The PostgreSQL store and registry run their connections here, so they
    serve callers on any loop (or none: `close` is synchronous).
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Runs `work` on the loop; its result, from any thread."""
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def stop(self) -> None:
        """Stops the loop, waits for the thread, and closes the loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@dataclass(frozen=True, slots=True)
class _Connections:
    """What the store's loop runs once the database is open."""

    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    writer: asyncio.Task[None]
    listener: asyncio.Task[None]


@dataclass(frozen=True, slots=True, eq=False)  # each call is its own waiter: compared by identity
class _Waiter:
    """A `wait_for_change` call: its loop, and the future that a change resolves."""

    loop: asyncio.AbstractEventLoop
    changed: asyncio.Future[None]


@dataclass(slots=True)
class _Rows:
    """One batch's operations, grouped into the statements that write them."""

    owner: str
    lease_seconds: float
    started: dict[str, list[Any]]
    """New executions' rows by id; an execution that also ended in the batch, with its end."""
    events: list[tuple[str, int, bytes, int]]
    ends: list[tuple[str, bytes, datetime, str, int]]
    """Ends of executions that started in an earlier batch."""
    runs: list[_Op]

    @classmethod
    def of(cls, batch: Sequence[_Item], owner: str, lease_seconds: float) -> _Rows:
        rows = cls(owner, lease_seconds, {}, [], [], [])
        for kind, item in batch:
            if kind == _INSERT_EXECUTION:
                rows.started[item[0]] = list(item)
            elif kind == _INSERT_EVENT:
                rows.events.append(item)
            elif kind == _FINISH:
                row = rows.started.get(item[3])
                if row is None or item[4] != 1:
                    rows.ends.append(item)
                else:  # a short execution: one insert of the whole row
                    row[2], row[8], row[7] = item[:3]
            elif kind == _RUN:
                rows.runs.append(item)
        return rows

    @property
    def empty(self) -> bool:
        return not (self.started or self.events or self.ends or self.runs)

    async def write(self, db: psycopg.AsyncConnection[Any]) -> tuple[int, set[str], set[str]]:
        """Writes the rows, runs the operations, notifies.

        Returns how many executions were deleted, the executions whose events
        or end the fence refused (lost to another owner), and those refused
        because they have no row at all (their start was in a failed batch).
        """
        refused: set[str] = set()
        if self.started:
            await self._insert_executions(db)
        if self.events:
            refused |= await self._insert_events(db)
        if self.ends:
            refused |= await self._update_ends(db)
        purged = 0
        for run in self.runs:
            purged += await run(db)
        touched = {*self.started, *(e[0] for e in self.events), *(e[3] for e in self.ends)}
        if touched:
            await _notify(db, sorted(touched))
        if not refused:
            return purged, set(), set()
        found = await db.execute(
            "SELECT execution_id FROM executions WHERE execution_id = ANY(%s)", (list(refused),)
        )
        present = {row[0] for row in await found.fetchall()}
        return purged, refused & present, refused - present

    async def _insert_executions(self, db: psycopg.AsyncConnection[Any]) -> None:
        arrays = ", ".join(f"%(c{i})s::{kind}[]" for i, kind in enumerate(_EXECUTION_TYPES))
        columns = {f"c{i}": array for i, array in enumerate(_arrays(self.started.values()))}
        await db.execute(
            f"INSERT INTO executions ({_EXECUTION_COLUMNS}, owner, fence, lease_expires_at)"
            f" SELECT *, %(owner)s, 1, {_LEASE} FROM unnest({arrays})",
            {**columns, "owner": self.owner, "lease": self.lease_seconds},
        )

    async def _insert_events(self, db: psycopg.AsyncConnection[Any]) -> set[str]:
        """Inserts the events of executions still at the writer's fence; the others' ids."""
        inserted = await db.execute(
            "INSERT INTO events (execution_id, sequence, payload)"
            " SELECT u.id, u.sequence, u.payload FROM unnest(%s::text[], %s::integer[],"
            " %s::bytea[], %s::integer[]) AS u (id, sequence, payload, fence)"
            " JOIN executions AS e ON e.execution_id = u.id AND e.fence = u.fence"
            " FOR SHARE OF e",  # a claim of one of them waits for this transaction
            _arrays(self.events),
        )
        if inserted.rowcount == len(self.events):
            return set()
        # Rare: some were fenced off. Which, by their executions' fences now.
        fences = {execution_id: fence for execution_id, _, _, fence in self.events}
        found = await db.execute(
            "SELECT execution_id, fence FROM executions WHERE execution_id = ANY(%s)",
            (list(fences),),
        )
        now = dict(await found.fetchall())
        return {
            execution_id for execution_id, fence in fences.items() if now.get(execution_id) != fence
        }

    async def _update_ends(self, db: psycopg.AsyncConnection[Any]) -> set[str]:
        """Records the ends of executions still running at the writer's fence; the others' ids."""
        updated = await db.execute(
            "UPDATE executions AS e SET status = u.status, summary = u.summary,"
            " finished_at = u.finished_at, cancel_requested = false"
            " FROM unnest(%s::text[], %s::bytea[], %s::timestamptz[], %s::text[],"
            " %s::integer[]) AS u (status, summary, finished_at, id, fence)"
            " WHERE e.execution_id = u.id AND e.fence = u.fence AND e.status = 'running'"
            " RETURNING e.execution_id",
            _arrays(self.ends),
        )
        written = {row[0] for row in await updated.fetchall()}
        return {end[3] for end in self.ends} - written


def _describe(url: str) -> str:
    """The database `url` names, for messages: host, port and name, never a password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "PostgreSQL (an unreadable URL)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"PostgreSQL {host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


def _new_pool(
    url: str, options: dict[str, Any], size: int, patience: float, name: str
) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """A pool, not yet open, of up to `size` connections; `patience`: seconds to get one.

    Also the flow registry's (`flowservice.registry.postgres`).
    """
    return AsyncConnectionPool(
        url,
        kwargs=options,
        min_size=1,
        max_size=size,
        timeout=patience,
        check=AsyncConnectionPool.check_connection,  # after a restart, pooled ones are dead
        open=False,
        name=name,
    )


async def _listening(url: str, options: dict[str, Any]) -> psycopg.AsyncConnection[Any]:
    """A new connection that LISTENs on `_CHANNEL`."""
    db = await psycopg.AsyncConnection.connect(url, **options)
    try:
        await db.execute(f"LISTEN {_CHANNEL}")
    except BaseException:
        await db.close()
        raise
    return db


def _options(url: str, timeout: float) -> dict[str, Any]:
    """Connection options: autocommit (transactions are explicit), a connect timeout unless set."""
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in conninfo_to_dict(url):
        options["connect_timeout"] = max(2, round(timeout))  # libpq's least is 2 s
    return options


async def _migrate(db: psycopg.AsyncConnection[Any]) -> None:
    """Brings the database to `SCHEMA_VERSION`; refuses one written by a newer version.

    The advisory lock serialises replicas starting at once: the first
    migrates, the others wait, then find the version current.
    """
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = await (await db.execute("SELECT max(version) FROM schema_version")).fetchone()
        version = 0 if row is None or row[0] is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreUnavailableError(
                f"schema version {version} was written by a newer Flow Manager; this one "
                f"reads up to {SCHEMA_VERSION}. Upgrade the server or point --store elsewhere"
            )
        for migration in _MIGRATIONS[version:]:
            await db.execute(migration)
        if version < SCHEMA_VERSION:
            await db.execute("DELETE FROM schema_version")
            await db.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))


def _conditions(query: ExecutionQuery) -> tuple[str, dict[str, Any]]:
    """The WHERE conditions (named parameters) of `query`'s filters and page."""
    values: dict[str, Any] = {}
    conditions = ["TRUE"]
    if query.flow_id:
        values["flow_id"] = query.flow_id
        conditions.append("flow_id = %(flow_id)s")
    if query.status:
        values["status"] = query.status
        conditions.append("status = %(status)s")
    if query.started_after is not None:
        values["from"] = query.started_after
        conditions.append("started_at >= %(from)s")
    if query.started_before is not None:
        values["to"] = query.started_before
        conditions.append("started_at < %(to)s")
    if query.after is not None:
        values["after_time"], values["after_id"] = query.after
        conditions.append("(started_at, execution_id) < (%(after_time)s, %(after_id)s)")
    return " AND ".join(conditions), values


def _execution(row: Sequence[Any]) -> StoredExecution:
    """A `StoredExecution` from a row of `_COLUMNS`; times in UTC whatever the session's zone."""
    record = ExecutionRecord(row[0], row[1], row[2], row[3], row[4], row[5].astimezone(UTC), row[9])
    finished = None if row[8] is None else row[8].astimezone(UTC)
    return StoredExecution(record, row[6], row[7], finished)


def _payloads(execution_ids: Iterable[str]) -> list[str]:
    """The ids in as few NOTIFY payloads as fit under PostgreSQL's limit."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for execution_id in execution_ids:
        length = len(execution_id.encode()) + 1
        if current and size + length > _PAYLOAD_BYTES:
            payloads.append(" ".join(current))
            current, size = [], 0
        current.append(execution_id)
        size += length
    if current:
        payloads.append(" ".join(current))
    return payloads


def _arrays(rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """The columns of `rows`, each a list: the arrays a statement unnests into rows again."""
    return [list(column) for column in zip(*rows, strict=True)]


async def _notify(db: psycopg.AsyncConnection[Any], execution_ids: Iterable[str]) -> None:
    """Tells every replica's listener, at the commit, that these executions changed."""
    await db.execute(
        "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (_CHANNEL, _payloads(execution_ids))
    )


def _said(exc: BaseException) -> str:
    """What an error says, on one line (psycopg's messages span several)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _call_on(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Calls `callback(*args)` on `loop`, unless the loop has closed (its waiters with it)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _resolve_all(futures: list[asyncio.Future[Any]], result: Any) -> None:
    for future in futures:
        if not future.done():  # its waiter may have been cancelled
            future.set_result(result)
