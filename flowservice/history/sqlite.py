"""The history in an SQLite file (stdlib `sqlite3`, WAL mode): the default store.

One writer thread owns the writing connection. The event loop only puts
operations on its queue; when someone waits for them to be written (an
end, a read, a watcher) the thread takes everything queued at once and
writes it in one transaction (one commit for many executions' events),
then wakes those who wait in `finish`, and those in
`wait_for_change` for an execution the batch touched: one
`call_soon_threadsafe` per event loop and batch, and none while nobody
watches. Reads use a second connection, in a worker thread, which WAL lets
run beside the writer. Another process writing the same file wakes nobody
here: `wait_for_change` then returns at its timeout.

The schema is versioned (`schema_version`); `_MIGRATIONS[n]` takes a file
from version n to n + 1, and they run at start-up, in one transaction. A file
of a newer version than this code knows is refused with a clear message.

Ownership (see `flowservice.history.store`): each running row holds its
`owner`, `fence` and `lease_expires_at`. Fencing is in the writer's
statements themselves: an event is inserted only while its execution's
fence is the one this store holds, an end only while it also still runs;
a batch that wrote fewer rows than it had finds out which executions were
lost (`_lost`), and their `finish` raises `LeaseLostError`. Renewals,
claims and cancel requests go through the writer queue too, so they see
every write queued before them. Several processes may share a file (each
its own owner): SQLite's write lock serializes their transactions.
"""

from __future__ import annotations

import asyncio
import functools
import json
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowservice.errors import LeaseLostError, StoreUnavailableError
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

__all__ = ["SCHEMA_VERSION", "SqliteStore", "open_file"]

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: executions and their events.
    """
    CREATE TABLE executions (
        execution_id TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        request BLOB NOT NULL,
        caller_request_id TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        summary BLOB NOT NULL DEFAULT x''
    );
    CREATE INDEX executions_by_start ON executions (started_at, execution_id);
    CREATE TABLE events (
        execution_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        payload BLOB NOT NULL,
        PRIMARY KEY (execution_id, sequence)
    ) WITHOUT ROWID;
    """,
    # 1 -> 2: the caller's idempotency key, looked up on every request that has one.
    """
    ALTER TABLE executions ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX executions_by_request_id ON executions (request_id) WHERE request_id != '';
    """,
    # 2 -> 3: ownership of running executions (leases, fences, cancel requests).
    # Rows running from an older version get lease 0: expired, so they are
    # claimed and resumed like those of a process that died.
    """
    ALTER TABLE executions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN lease_expires_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX executions_by_lease ON executions (lease_expires_at) WHERE status = 'running';
    """,
    # 3 -> 4: the flow registry's versions (flowservice.registry.sqlite).
    """
    CREATE TABLE flow_versions (
        flow_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        name TEXT NOT NULL,
        body BLOB NOT NULL,
        digest TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (flow_id, version)
    ) WITHOUT ROWID;
    """,
    # 4 -> 5: the seconds the deadline of the call running an execution allowed it,
    # kept for its resumption (NULL: none, as for every execution before).
    """
    ALTER TABLE executions ADD COLUMN time_allowed REAL;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this code writes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH = 2000  # operations per transaction, at most
_CHUNK = 256  # rows per statement, at most (a power of two; `_write_rows`)
_LINGER = 0.05  # seconds queued starts and events wait, at most, when nobody waits for them
_Op = Callable[[sqlite3.Connection], int]  # returns how many executions it deleted
# What the writer thread's queue holds: (kind, item).
_INSERT_EXECUTION = "execution"  # item: a row of `executions` (the _INSERT_EXECUTION columns)
_INSERT_EVENT = "event"  # item: (execution_id, sequence, payload, fence)
_FINISH = "finish"  # item: (status, summary, finished_at, execution_id, fence)
_RUN = "run"  # item: an `_Op`, run after the rows
_WAKE = "wake"  # item: (loop, future) resolved with the failure, "" when written
_STOP = "stop"  # item: None; the thread ends after this batch
_STATEMENTS = {
    _INSERT_EXECUTION: "INSERT INTO executions (execution_id, flow_id, status, request,"
    " request_id, caller_request_id, started_at, finished_at, summary, owner, fence,"
    " lease_expires_at, time_allowed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
    # Fenced: written only while the execution's fence is the writer's.
    _INSERT_EVENT: "INSERT INTO events (execution_id, sequence, payload) SELECT ?1, ?2, ?3"
    " WHERE EXISTS (SELECT 1 FROM executions WHERE execution_id = ?1 AND fence = ?4)",
    _FINISH: "UPDATE executions SET status = ?1, summary = ?2, finished_at = ?3,"
    " cancel_requested = 0 WHERE execution_id = ?4 AND fence = ?5 AND status = 'running'",
}
_NOT_HELD = -1  # the fence written with an execution this store does not hold: never matches


def _micros(moment: datetime) -> int:
    """`moment` as integer microseconds since the epoch: compact and sortable."""
    since = moment - _EPOCH  # exact: a float timestamp may be one microsecond off
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


class SqliteStore:
    """An `ExecutionStore` in the SQLite file at `path` (made, with its directory, if missing)."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        owner: str = "",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        """`busy_timeout`: seconds a write waits for a file another process has locked;
        `owner` and `lease_seconds`: see `ExecutionStore` ("" owner: a new random id)."""
        self._path = path
        self._failure = ""
        self._owner = owner or str(uuid.uuid4())
        self._lease_micros = round(lease_seconds * 1_000_000)
        self._held: dict[str, int] = {}  # the fence of each execution begun or claimed here
        self._lost: set[str] = set()  # held ones whose writes were refused (the writer adds)
        self._unwritten: set[str] = set()  # ...because their start never was (a failed batch)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = _connect(path, busy_timeout)
            _migrate(writer)
            self._count = int(writer.execute("SELECT count(*) FROM executions").fetchone()[0])
            self._reader = _connect(path, busy_timeout)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"cannot open {path}: {exc}") from None
        self._read_lock = threading.Lock()
        self._on_write: Callable[[float, bool], None] | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wanted = threading.Event()  # set when someone waits for what is queued
        # Execution id -> futures of those in wait_for_change; the writer thread reads it.
        self._watching: dict[str, set[asyncio.Future[str]]] = {}
        self._watching_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._write_loop, args=(writer,), name="history-writer", daemon=True
        )
        self._thread.start()

    @property
    def failure(self) -> str:
        """Why the last write failed; "" while writes succeed."""
        return self._failure

    @property
    def count(self) -> int:
        """Executions in the file, as this process has written them (others' aside)."""
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
            _micros(record.started_at),
            None,
            b"",
            self._owner,
            _micros(datetime.now(UTC)) + self._lease_micros,
            record.time_allowed,
        )
        self._held[record.execution_id] = 1
        self._queue.put((_INSERT_EXECUTION, row))
        if record.request_id:  # other processes look for it before they run a repeat
            self._want()

    def append(self, execution_id: str, event: StoredEvent) -> None:
        fence = self._held.get(execution_id, _NOT_HELD)
        self._queue.put((_INSERT_EVENT, (execution_id, event.sequence, event.payload, fence)))
        if self._watching:  # someone waits for new events (of this or another execution)
            self._want()

    async def finish(
        self, execution_id: str, status: str, summary: bytes, finished_at: datetime
    ) -> None:
        fence = self._held.pop(execution_id, _NOT_HELD)
        row = (status, summary, _micros(finished_at), execution_id, fence)
        self._queue.put((_FINISH, row))
        await self._written()
        if execution_id in self._unwritten:
            self._unwritten.discard(execution_id)
            self._lost.discard(execution_id)
            raise StoreUnavailableError(f"the start of execution {execution_id} was not written")
        if execution_id in self._lost or fence == _NOT_HELD:
            self._lost.discard(execution_id)
            raise LeaseLostError(execution_id)

    async def _written(self, *, check: bool = True) -> None:
        """Returns once everything queued so far is committed; StoreUnavailableError if not."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[str] = loop.create_future()
        self._queue.put((_WAKE, (loop, written)))  # resolved after the batch that holds it
        self._want()
        failure = await written
        if failure and check:
            raise StoreUnavailableError(failure)

    def _want(self) -> None:
        """Wakes the writer thread for what is queued, unless it is awake for it already.

        `Event.set` takes a lock and notifies even when the event is set:
        under load, most ends find it set (the writer clears it before it
        takes the batch, so what was queued before this check goes with it).
        """
        if not self._wanted.is_set():
            self._wanted.set()

    def _write_loop(self, db: sqlite3.Connection) -> None:
        """The writer thread: one transaction per batch of whatever is queued.

        It writes when someone waits for a commit (`_wanted`: an end, a read,
        a watcher, a start with a request id, closing), or `_LINGER` seconds
        after it last looked. Other starts
        and events alone neither wake it nor make a transaction of their own:
        they go with the next end, so a short execution is one transaction.
        """
        full = False
        while True:
            if not full:  # a full batch may have left more queued: no waiting then
                self._wanted.wait(_LINGER)
            self._wanted.clear()
            batch: list[Any] = []
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            full = len(batch) == _BATCH
            if not batch:
                continue
            self._write(db, batch)
            # One wake-up of each loop per batch, not one per waiter: each
            # call_soon_threadsafe writes to the loop's self-pipe.
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[str]]] = {}
            for kind, item in batch:
                if kind == _WAKE:
                    waiting.setdefault(item[0], []).append(item[1])
            for future in self._watchers(batch):
                waiting.setdefault(future.get_loop(), []).append(future)
            for loop, futures in waiting.items():
                loop.call_soon_threadsafe(_resolve_all, futures, self._failure)
            if any(kind == _STOP for kind, _ in batch):
                db.close()
                return

    def _watchers(self, batch: Sequence[tuple[str, Any]]) -> list[asyncio.Future[str]]:
        """The futures of those waiting for a change to an execution that `batch` wrote."""
        if not self._watching:  # the usual case: nobody watches; no work per row
            return []
        with self._watching_lock:
            watched = set(self._watching)
            touched = {_execution_id(kind, item) for kind, item in batch} & watched
            return [future for execution_id in touched for future in self._watching[execution_id]]

    async def wait_for_change(self, execution_id: str, timeout: float) -> None:  # noqa: ASYNC109
        changed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        with self._watching_lock:
            self._watching.setdefault(execution_id, set()).add(changed)
        try:
            await asyncio.wait([changed], timeout=timeout)
        finally:
            with self._watching_lock:
                waiting = self._watching.get(execution_id, set())
                waiting.discard(changed)
                if not waiting:
                    self._watching.pop(execution_id, None)

    def _write(self, db: sqlite3.Connection, batch: Sequence[tuple[str, Any]]) -> None:
        """Writes `batch` in one transaction; on an error, notes it in `failure`.

        Rows of a kind go in a few multi-row statements (`_write_rows`): the
        executions first, so that the ends and events in the same batch find
        theirs, the ends last.
        """
        rows: dict[str, list[Any]] = {kind: [] for kind in _STATEMENTS}
        runs: list[_Op] = []
        for kind, item in batch:
            if kind in rows:
                rows[kind].append(item)
            elif kind == _RUN:
                runs.append(item)
        _merge_finished(rows)
        if not any(rows.values()) and not runs:
            return
        started = time.perf_counter()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for kind in _STATEMENTS:
                    before = db.total_changes
                    _write_rows(db, kind, rows[kind])
                    if db.total_changes - before < len(rows[kind]):
                        self._refused(db, kind, rows[kind])
                purged = sum(run(db) for run in runs)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._failure = ""
            self._count += len(rows[_INSERT_EXECUTION]) - purged
        except sqlite3.Error as exc:
            self._failure = f"cannot write {self._path}: {exc}"
        if self._on_write is not None:
            self._on_write(time.perf_counter() - started, not self._failure)

    def _refused(self, db: sqlite3.Connection, kind: str, rows: Sequence[Any]) -> None:
        """Notes the executions of `rows` (events or ends) whose fenced write was refused.

        Only looked for when a statement changed fewer rows than it had: a
        rare path, one lookup per execution in the batch. An execution
        without a row lost its start to a failed batch, not its lease.
        """
        for row in rows:
            if kind == _INSERT_EVENT:
                execution_id, fence, wanted = row[0], row[3], None
            else:
                execution_id, fence, wanted = row[3], row[4], (row[0], row[2])
            found = db.execute(
                "SELECT fence, status, finished_at FROM executions WHERE execution_id = ?",
                (execution_id,),
            ).fetchone()
            if found is None:
                self._unwritten.add(execution_id)
            elif found[0] != fence or (wanted and (found[1], found[2]) != wanted):
                self._lost.add(execution_id)

    async def get(self, execution_id: str) -> StoredExecution | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM executions WHERE execution_id = ?", (execution_id,)
        )
        return _execution(rows[0]) if rows else None

    async def find_request(self, request_id: str) -> StoredExecution | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM executions WHERE request_id = ? AND request_id != ''"
            " ORDER BY started_at LIMIT 1",
            (request_id,),
        )
        return _execution(rows[0]) if rows else None

    async def events(self, execution_id: str, after: int = 0) -> list[StoredEvent]:
        rows = await self._read(
            "SELECT sequence, payload FROM events WHERE execution_id = ? AND sequence > ?"
            " ORDER BY sequence",
            (execution_id, after),
        )
        return [StoredEvent(sequence, payload) for sequence, payload in rows]

    async def find(self, query: ExecutionQuery) -> list[StoredExecution]:
        where, args = _where(query)
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM executions {where}"
            " ORDER BY started_at DESC, execution_id DESC LIMIT ?",
            (*args, query.limit),
        )
        return [_execution(row) for row in rows]

    async def purge(self, finished_before: datetime) -> int:
        cutoff = _micros(finished_before)
        counts: list[int] = []

        def delete(db: sqlite3.Connection) -> int:
            # What finished before the cutoff started before it: the index on
            # started_at narrows the search.
            old = "FROM executions WHERE started_at < ?1 AND finished_at < ?1"
            db.execute(
                f"DELETE FROM events WHERE execution_id IN (SELECT execution_id {old})", (cutoff,)
            )
            counts.append(db.execute(f"DELETE {old}", (cutoff,)).rowcount)
            return counts[-1]

        self._queue.put((_RUN, delete))
        await self._written()
        return sum(counts)

    async def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        def read() -> list[Any]:
            with self._read_lock:
                return self._reader.execute(sql, args).fetchall()

        await self._written(check=False)  # a read sees every write queued before it
        try:
            return await asyncio.to_thread(read)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot read {self._path}: {exc}") from None

    def close(self) -> None:
        """Writes what is queued, waits for the writer thread, then closes the file."""
        self._queue.put((_STOP, None))
        self._wanted.set()
        self._thread.join()
        # A read may still run in a worker thread (its caller was cancelled):
        # closing the connection under it crashes the process, so wait for it.
        with self._read_lock:
            self._reader.close()

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def lease_seconds(self) -> float:
        return self._lease_micros / 1_000_000

    async def renew(self, execution_ids: Collection[str]) -> Renewal:
        held = json.dumps([[i, self._held.get(i, _NOT_HELD)] for i in execution_ids])
        renewed: dict[str, bool] = {}

        def renew(db: sqlite3.Connection) -> int:
            renewed.clear()  # a retried batch starts over
            rows = db.execute(
                "UPDATE executions SET lease_expires_at = ?1"
                " FROM (SELECT value ->> 0 AS id, value ->> 1 AS fence FROM json_each(?3)) AS held"
                " WHERE executions.execution_id = held.id AND executions.fence = held.fence"
                " AND owner = ?2 AND status = 'running'"
                " RETURNING execution_id, cancel_requested",
                (self._expiry(), self._owner, held),
            ).fetchall()
            renewed.update((execution_id, bool(cancel)) for execution_id, cancel in rows)
            return 0

        if not execution_ids:
            return Renewal(frozenset(), frozenset())
        self._queue.put((_RUN, renew))
        await self._written()
        # Held still: not finished meanwhile (`finish` lets go of it first).
        lost = frozenset(i for i in execution_ids if i not in renewed and i in self._held)
        return Renewal(lost, frozenset(i for i, cancel in renewed.items() if cancel))

    async def claim(self, limit: int, execution_id: str = "") -> list[Claim]:
        # A cheap read first: most looks find nothing, and need no write lock.
        only = " AND execution_id = ?2" if execution_id else " AND ?2 = ''"
        expired = "status = 'running' AND lease_expires_at <= ?1" + only
        if limit <= 0 or not await self._read(
            f"SELECT 1 FROM executions WHERE {expired} LIMIT 1",
            (_micros(datetime.now(UTC)), execution_id),
        ):
            return []
        claimed: list[Claim] = []

        def claim(db: sqlite3.Connection) -> int:
            claimed.clear()
            now = _micros(datetime.now(UTC))
            rows = db.execute(
                "UPDATE executions SET owner = ?3, fence = fence + 1, lease_expires_at = ?4"
                f" WHERE execution_id IN (SELECT execution_id FROM executions WHERE {expired}"
                "  ORDER BY lease_expires_at LIMIT ?5)"
                f" RETURNING {_COLUMNS}, fence, cancel_requested",
                (now, execution_id, self._owner, self._expiry(), limit),
            ).fetchall()
            claimed.extend(Claim(_execution(row), row[-2], bool(row[-1])) for row in rows)
            return 0

        self._queue.put((_RUN, claim))
        await self._written()
        for each in claimed:
            self._held[each.execution.record.execution_id] = each.fence
        return claimed

    async def request_cancel(self, execution_id: str) -> bool:
        done: list[bool] = []

        def request(db: sqlite3.Connection) -> int:
            flagged = db.execute(
                "UPDATE executions SET cancel_requested = 1"
                " WHERE execution_id = ? AND status = 'running'",
                (execution_id,),
            ).rowcount
            done[:] = [bool(flagged)]
            return 0

        self._queue.put((_RUN, request))
        await self._written()
        return bool(done and done[0])

    def _expiry(self) -> int:
        """When a lease taken now expires, in `_micros`."""
        return _micros(datetime.now(UTC)) + self._lease_micros


_COLUMNS = (
    "execution_id, flow_id, request, request_id, caller_request_id, started_at,"
    " status, summary, finished_at, time_allowed"
)


def _execution(row: Sequence[Any]) -> StoredExecution:
    """A `StoredExecution` from a row of `_COLUMNS`."""
    record = ExecutionRecord(row[0], row[1], row[2], row[3], row[4], _moment(row[5]), row[9])
    finished = None if row[8] is None else _moment(row[8])
    return StoredExecution(record, row[6], row[7], finished)


def _where(query: ExecutionQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) of `query`'s filters and page."""
    clauses: list[str] = []
    args: list[Any] = []
    if query.flow_id:
        clauses.append("flow_id = ?")
        args.append(query.flow_id)
    if query.status:
        clauses.append("status = ?")
        args.append(query.status)
    if query.started_after is not None:
        clauses.append("started_at >= ?")
        args.append(_micros(query.started_after))
    if query.started_before is not None:
        clauses.append("started_at < ?")
        args.append(_micros(query.started_before))
    if query.after is not None:
        clauses.append("(started_at, execution_id) < (?, ?)")
        args += [_micros(query.after[0]), query.after[1]]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def _write_rows(db: sqlite3.Connection, kind: str, rows: Sequence[Sequence[Any]]) -> None:
    """Writes `rows` of `kind` with one statement per chunk of up to `_CHUNK` rows.

    Why not `executemany`: it runs one step per row, and sqlite3 releases the
    GIL around each step. Taking it back while the event loop runs Python
    waits up to the switch interval (5 ms): row by row, the writer thread
    crawled whenever the server was busy, and calls waited for their ends.
    A multi-row statement is one step, one hand-over of the GIL.
    """
    done = 0
    size = _CHUNK
    while done < len(rows):
        while size > len(rows) - done:
            size //= 2
        chunk = rows[done : done + size]
        db.execute(_statement(kind, size), [value for row in chunk for value in row])
        done += size


@functools.cache
def _statement(kind: str, count: int) -> str:
    """The statement that writes `count` rows of `kind`.

    Counts are powers of two, so there are few texts, which sqlite3 keeps
    compiled (its statement cache). Events and ends are fenced as in
    `_STATEMENTS`: their rows join the executions whose fence is the writer's.
    """
    if kind == _INSERT_EXECUTION:
        statement = _STATEMENTS[kind]
        row = statement[statement.rindex(" VALUES ") + len(" VALUES ") :]
        return statement + f", {row}" * (count - 1)
    if kind == _INSERT_EVENT:
        values = ", ".join(["(?, ?, ?, ?)"] * count)
        return (
            "INSERT INTO events (execution_id, sequence, payload)"
            f" SELECT v.column1, v.column2, v.column3 FROM (VALUES {values}) AS v"
            " JOIN executions AS e ON e.execution_id = v.column1 AND e.fence = v.column4"
        )
    values = ", ".join(["(?, ?, ?, ?, ?)"] * count)
    return (
        "UPDATE executions SET status = v.column1, summary = v.column2,"
        f" finished_at = v.column3, cancel_requested = 0 FROM (VALUES {values}) AS v"
        " WHERE executions.execution_id = v.column4 AND executions.fence = v.column5"
        " AND executions.status = 'running'"
    )


def _merge_finished(rows: dict[str, list[Any]]) -> None:
    """Folds the ends of executions that started in the same batch into their inserts.

    A short execution starts and ends within one batch: one insert of the
    whole row then replaces an insert and an update. Of two ends of one
    execution, the later is kept (one multi-row update would pick either).
    Only an end at the fence the start wrote (1) folds: any other is fenced
    by the update, as it would be in a later batch.
    """
    rows[_FINISH] = list({row[3]: row for row in rows[_FINISH]}.values())
    started = {row[0]: i for i, row in enumerate(rows[_INSERT_EXECUTION])}
    if not started:
        return
    updates = []
    for end in rows[_FINISH]:
        status, summary, finished_at, execution_id, fence = end
        i = started.get(execution_id)
        if i is None or fence != 1:
            updates.append(end)
        else:
            row = rows[_INSERT_EXECUTION][i]
            rows[_INSERT_EXECUTION][i] = (
                *row[:2],
                status,
                *row[3:7],
                finished_at,
                summary,
                *row[9:],
            )
    rows[_FINISH] = updates


def _execution_id(kind: str, item: Any) -> str:
    """The id of the execution a queued operation writes; "" for one of no execution."""
    if kind in (_INSERT_EXECUTION, _INSERT_EVENT):
        return str(item[0])
    if kind == _FINISH:
        return str(item[3])
    return ""


def _resolve_all(futures: list[asyncio.Future[str]], failure: str) -> None:
    for future in futures:
        if not future.done():  # its waiter may have been cancelled
            future.set_result(failure)


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection in WAL mode, `synchronous = NORMAL`; autocommit outside `with`.

    What a commit then survives: a crash of the process (the WAL is written
    with write(2) before COMMIT returns), not one of the operating system or
    a power loss, which may lose the last transactions (never corrupt the
    file): SQLite fsyncs at checkpoints only. FULL, an fsync per commit,
    made the writer thread's batches ten times slower (milliseconds, not
    tenths), and every call waits for one (docs/history.md).
    """
    db = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
    _turn_to_wal(db, busy_timeout)
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def _turn_to_wal(db: sqlite3.Connection, busy_timeout: float) -> None:
    """Puts the file in WAL mode, waiting up to `busy_timeout` for its lock.

    Turning a new file to WAL needs its exclusive lock, and SQLite answers
    "locked" at once, without its busy handler, while another process
    opening the file at the same moment (`--workers N`) holds it.
    """
    give_up = time.monotonic() + busy_timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > give_up:
                raise
        time.sleep(0.01)


def open_file(path: Path, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """A connection to the file at `path` (made if missing), its schema at `SCHEMA_VERSION`.

    For the stores that keep their tables in the history's file (the flow
    registry); `sqlite3.Error` or `OSError` when it cannot be opened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = _connect(path, busy_timeout)
    _migrate(db)
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """Brings the file to `SCHEMA_VERSION`; refuses one written by a newer version.

    The version is read again under the write lock: processes starting at
    once on a new file (`--workers N`) would otherwise both migrate it.
    """
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    if _schema_version(db) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(db)
        for migration in _MIGRATIONS[version:]:
            for statement in migration.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _schema_version(db: sqlite3.Connection) -> int:
    """The file's schema version; refuses one written by a newer version."""
    row = db.execute("SELECT version FROM schema_version").fetchone()
    version = 0 if row is None else int(row[0])
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} was written by a newer Flow Manager; this one "
            f"reads up to {SCHEMA_VERSION}. Upgrade the server or point --store elsewhere"
        )
    return version
