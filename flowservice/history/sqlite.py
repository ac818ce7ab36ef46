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
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowservice.errors import StoreUnavailableError
from flowservice.history.store import (
    RUNNING,
    ExecutionQuery,
    ExecutionRecord,
    StoredEvent,
    StoredExecution,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

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
)
SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this code writes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH = 2000  # operations per transaction, at most
_CHUNK = 256  # rows per statement, at most (a power of two; `_write_rows`)
_LINGER = 0.05  # seconds queued starts and events wait, at most, when nobody waits for them
_Op = Callable[[sqlite3.Connection], int]  # returns how many executions it deleted
# What the writer thread's queue holds: (kind, item).
_INSERT_EXECUTION = "execution"  # item: a row of `executions`
_INSERT_EVENT = "event"  # item: a row of `events`
_FINISH = "finish"  # item: (status, summary, finished_at, execution_id)
_RUN = "run"  # item: an `_Op`, run after the rows
_WAKE = "wake"  # item: (loop, future) resolved with the failure, "" when written
_STOP = "stop"  # item: None; the thread ends after this batch
_STATEMENTS = {
    _INSERT_EXECUTION: "INSERT INTO executions (execution_id, flow_id, status, request,"
    " request_id, caller_request_id, started_at, finished_at, summary)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    _INSERT_EVENT: "INSERT INTO events VALUES (?, ?, ?)",
    _FINISH: "UPDATE executions SET status = ?, summary = ?, finished_at = ?"
    " WHERE execution_id = ?",
}


def _micros(moment: datetime) -> int:
    """`moment` as integer microseconds since the epoch: compact and sortable."""
    since = moment - _EPOCH  # exact: a float timestamp may be one microsecond off
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


class SqliteStore:
    """An `ExecutionStore` in the SQLite file at `path` (made, with its directory, if missing)."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        """`busy_timeout`: seconds a write waits for a file another process has locked."""
        self._path = path
        self._failure = ""
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
        )
        self._queue.put((_INSERT_EXECUTION, row))
        if record.request_id:  # other processes look for it before they run a repeat
            self._wanted.set()

    def append(self, execution_id: str, event: StoredEvent) -> None:
        row = (execution_id, event.sequence, event.payload)
        self._queue.put((_INSERT_EVENT, row))
        if self._watching:  # someone waits for new events (of this or another execution)
            self._wanted.set()

    async def finish(
        self, execution_id: str, status: str, summary: bytes, finished_at: datetime
    ) -> None:
        row = (status, summary, _micros(finished_at), execution_id)
        self._queue.put((_FINISH, row))
        await self._written()

    async def _written(self, *, check: bool = True) -> None:
        """Returns once everything queued so far is committed; StoreUnavailableError if not."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[str] = loop.create_future()
        self._queue.put((_WAKE, (loop, written)))  # resolved after the batch that holds it
        self._wanted.set()
        failure = await written
        if failure and check:
            raise StoreUnavailableError(failure)

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
                    _write_rows(db, kind, rows[kind])
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
        self._reader.close()


_COLUMNS = (
    "execution_id, flow_id, request, request_id, caller_request_id, started_at,"
    " status, summary, finished_at"
)


def _execution(row: Sequence[Any]) -> StoredExecution:
    """A `StoredExecution` from a row of `_COLUMNS`."""
    record = ExecutionRecord(row[0], row[1], row[2], row[3], row[4], _moment(row[5]))
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
    compiled (its statement cache).
    """
    statement = _STATEMENTS[kind]
    if kind == _FINISH:  # the same update, joined with the rows' values
        values = ", ".join(["(?, ?, ?, ?)"] * count)
        return (
            "UPDATE executions SET status = v.column1, summary = v.column2,"
            f" finished_at = v.column3 FROM (VALUES {values}) AS v"
            " WHERE executions.execution_id = v.column4"
        )
    row = statement[statement.rindex(" VALUES ") + len(" VALUES ") :]
    return statement + f", {row}" * (count - 1)


def _merge_finished(rows: dict[str, list[Any]]) -> None:
    """Folds the ends of executions that started in the same batch into their inserts.

    A short execution starts and ends within one batch: one insert of the
    whole row then replaces an insert and an update. Of two ends of one
    execution, the later is kept (one multi-row update would pick either).
    """
    rows[_FINISH] = list({row[3]: row for row in rows[_FINISH]}.values())
    started = {row[0]: i for i, row in enumerate(rows[_INSERT_EXECUTION])}
    if not started:
        return
    updates = []
    for status, summary, finished_at, execution_id in rows[_FINISH]:
        i = started.get(execution_id)
        if i is None:
            updates.append((status, summary, finished_at, execution_id))
        else:
            row = rows[_INSERT_EXECUTION][i]
            rows[_INSERT_EXECUTION][i] = (*row[:2], status, *row[3:7], finished_at, summary)
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
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """Brings the file to `SCHEMA_VERSION`; refuses one written by a newer version."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    version = 0 if row is None else int(row[0])
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} was written by a newer Flow Manager; this one "
            f"reads up to {SCHEMA_VERSION}. Upgrade the server or point --store elsewhere"
        )
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
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
