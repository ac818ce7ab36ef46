"""The history stores, without gRPC: SQLite (in tmp_path), memory and PostgreSQL behave alike."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowservice.errors import StoreUnavailableError
from flowservice.history import (
    RUNNING,
    SCHEMA_VERSION,
    ExecutionQuery,
    ExecutionRecord,
    ExecutionStore,
    MemoryStore,
    SqliteStore,
    StoredEvent,
    open_store,
    time_ordered_id,
)
from flowservice.history.sqlite import open_file

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExecutionStore]:
    if request.param == "postgres":
        location: str = request.getfixturevalue("postgres_url")  # a database of its own
    else:
        location = str(tmp_path / "h.db") if request.param == "sqlite" else "memory"
    made = open_store(location)
    yield made
    made.close()


def _record(n: int, flow_id: str = "f") -> ExecutionRecord:
    started = T0 + timedelta(seconds=n)
    # An odd one was run by a call with a deadline (the seconds it allowed).
    return ExecutionRecord(
        f"e{n:03}", flow_id, b"req", "", f"x{n}", started, 2.5 if n % 2 else None
    )


async def _run(
    store: ExecutionStore, n: int, flow_id: str = "f", status: str = "completed"
) -> None:
    store.begin(_record(n, flow_id))
    for sequence in (1, 2, 3):
        store.append(f"e{n:03}", StoredEvent(sequence, b"ev%d" % sequence))
    await store.finish(f"e{n:03}", status, b"sum", T0 + timedelta(seconds=n, milliseconds=5))


async def test_an_execution_is_kept_with_its_events(store: ExecutionStore) -> None:
    await _run(store, 1)
    await _run(store, 2)
    got = await store.get("e001")
    assert got is not None
    assert (got.status, got.summary, got.record) == ("completed", b"sum", _record(1))
    assert got.record.time_allowed == 2.5
    second = await store.get("e002")
    assert second is not None and second.record == _record(2)
    assert got.finished_at == T0 + timedelta(seconds=1, milliseconds=5)
    assert [e.sequence for e in await store.events("e001")] == [1, 2, 3]
    assert await store.events("e001", after=2) == [StoredEvent(3, b"ev3")]
    assert await store.get("nope") is None


async def test_list_is_newest_first_paged_and_filtered(store: ExecutionStore) -> None:
    for n in range(6):
        await _run(
            store, n, flow_id="a" if n % 2 else "b", status="failed" if n == 5 else "completed"
        )
    store.begin(_record(9))
    first = await store.find(ExecutionQuery(limit=4))
    assert [s.record.execution_id for s in first] == ["e009", "e005", "e004", "e003"]
    assert first[0].status == RUNNING
    last = first[-1].record
    rest = await store.find(ExecutionQuery(limit=4, after=(last.started_at, last.execution_id)))
    assert [s.record.execution_id for s in rest] == ["e002", "e001", "e000"]
    only_a = await store.find(ExecutionQuery(limit=10, flow_id="a"))
    assert [s.record.execution_id for s in only_a] == ["e005", "e003", "e001"]
    failed = await store.find(ExecutionQuery(limit=10, status="failed"))
    assert [s.record.execution_id for s in failed] == ["e005"]
    window = ExecutionQuery(
        limit=10, started_after=T0 + timedelta(seconds=2), started_before=T0 + timedelta(seconds=4)
    )
    assert [s.record.execution_id for s in await store.find(window)] == ["e003", "e002"]


async def test_purge_deletes_only_what_finished_before_the_cutoff(store: ExecutionStore) -> None:
    for n in range(3):
        await _run(store, n)
    store.begin(_record(0 + 7))  # running: never purged
    assert await store.purge(T0 + timedelta(seconds=2)) == 2
    assert await store.get("e001") is None
    assert await store.events("e001") == []
    assert await store.get("e002") is not None
    assert await store.get("e007") is not None


async def test_sqlite_history_survives_a_restart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "h.db")
    await _run(store, 1)
    store.close()
    again = SqliteStore(tmp_path / "h.db")
    try:
        got = await again.get("e001")
        assert got is not None and got.status == "completed"
        assert len(await again.events("e001")) == 3
    finally:
        again.close()


def version_1_file(path: Path, request: bytes = b"\x00", summary: bytes = b"\x01") -> None:
    """A file as the first schema version wrote it, with one finished execution, "old"."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE executions (
            execution_id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, status TEXT NOT NULL,
            request BLOB NOT NULL, caller_request_id TEXT NOT NULL,
            started_at INTEGER NOT NULL, finished_at INTEGER, summary BLOB NOT NULL DEFAULT x''
        );
        CREATE TABLE events (
            execution_id TEXT NOT NULL, sequence INTEGER NOT NULL, payload BLOB NOT NULL,
            PRIMARY KEY (execution_id, sequence)
        ) WITHOUT ROWID;
        """
    )
    db.execute(
        "INSERT INTO executions VALUES ('old', 'f', 'completed', ?, 'x', 1767225600000000,"
        " 1767225601000000, ?)",
        (request, summary),
    )
    db.commit()
    db.close()


async def test_an_older_file_is_migrated_and_keeps_its_executions(tmp_path: Path) -> None:
    version_1_file(tmp_path / "h.db")
    store = SqliteStore(tmp_path / "h.db")
    try:
        old = await store.get("old")
        assert old is not None and old.record.request_id == "" and old.status == "completed"
        assert old.record.time_allowed is None  # no deadline was kept before version 5
        await _run(store, 1)  # the new column is written
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / "h.db")
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "h.db").close()
    db = sqlite3.connect(tmp_path / "h.db")
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreUnavailableError, match="newer"):
        SqliteStore(tmp_path / "h.db")


async def test_a_store_that_cannot_write_fails_finish_and_refuses_new_executions(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "h.db", busy_timeout=0.05)
    try:
        blocker = sqlite3.connect(tmp_path / "h.db", timeout=0)
        blocker.execute("PRAGMA busy_timeout = 0")
        blocker.execute("BEGIN EXCLUSIVE")  # a file locked by another process
        store.begin(_record(1))
        with pytest.raises(StoreUnavailableError):
            await store.finish("e001", "completed", b"", T0)
        assert store.failure
        with pytest.raises(StoreUnavailableError):
            store.begin(_record(2))
        blocker.rollback()
        blocker.close()
    finally:
        store.close()


async def _waiting(store: ExecutionStore, execution_id: str) -> asyncio.Task[None]:
    """A task in `wait_for_change` for the execution, with no timeout that could end it."""
    waiter = asyncio.create_task(store.wait_for_change(execution_id, 3600))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()
    return waiter


async def test_a_waiter_wakes_when_its_execution_has_a_new_event_or_ends(
    store: ExecutionStore,
) -> None:
    store.begin(_record(1))
    await store.get("e001")  # written: nothing left to wake anyone
    waiter = await _waiting(store, "e001")
    store.append("e001", StoredEvent(1, b"ev1"))
    async with asyncio.timeout(30):
        await waiter
    assert await store.events("e001") == [StoredEvent(1, b"ev1")]

    waiter = await _waiting(store, "e001")
    await store.finish("e001", "completed", b"sum", T0)
    async with asyncio.timeout(30):
        await waiter
    got = await store.get("e001")
    assert got is not None and got.status == "completed"


async def test_a_change_to_another_execution_wakes_nobody(store: ExecutionStore) -> None:
    # e001 is begun only after the wait: PostgreSQL's notice of its begin
    # could arrive after the waiter starts and wake it (which the contract allows).
    waiter = await _waiting(store, "e001")
    await _run(store, 2)  # written, and its waiters woken, once finish returns
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    store.begin(_record(1))
    store.append("e001", StoredEvent(1, b"ev1"))  # nobody waits: nothing to wake
    assert len(await store.events("e001")) == 1


async def test_another_process_s_change_is_seen_when_the_wait_times_out(tmp_path: Path) -> None:
    ours, theirs = SqliteStore(tmp_path / "h.db"), SqliteStore(tmp_path / "h.db")
    try:
        theirs.begin(_record(1))
        await theirs.get("e001")
        waiting = asyncio.create_task(ours.wait_for_change("e001", 0.05))
        await theirs.finish("e001", "completed", b"sum", T0)
        await waiting  # the timeout, not a wake-up: the write was another store's
        got = await ours.get("e001")
        assert got is not None and got.status == "completed"
    finally:
        ours.close()
        theirs.close()


async def test_a_batch_of_hundreds_of_rows_is_written_whole(store: ExecutionStore) -> None:
    """More rows of each kind than one statement takes, and ends of executions begun earlier."""
    for n in range(300):
        store.begin(_record(n))
        for sequence in range(1, 8):
            store.append(f"e{n:03}", StoredEvent(sequence, b"ev%d" % sequence))
    await store.get("e000")  # all of it in one batch, written
    await asyncio.gather(*(store.finish(f"e{n:03}", "failed", b"s%d" % n, T0) for n in range(300)))
    assert store.count == 300
    found = await store.find(ExecutionQuery(limit=1000, status="failed"))
    assert sorted(s.record.execution_id for s in found) == [f"e{n:03}" for n in range(300)]
    last = await store.get("e299")
    assert last is not None and last.summary == b"s299"
    assert [e.sequence for e in await store.events("e299")] == list(range(1, 8))


def test_time_ordered_ids_are_version_7_uuids_that_sort_by_time() -> None:
    earlier = time_ordered_id()
    time.sleep(0.002)  # the next millisecond at least
    later = time_ordered_id()
    assert uuid.UUID(earlier).version == uuid.UUID(later).version == 7
    assert uuid.UUID(later).variant == uuid.RFC_4122
    assert str(uuid.UUID(later)) == later  # the canonical text: lower-case, 8-4-4-4-12
    assert earlier < later
    assert len({time_ordered_id() for _ in range(1000)}) == 1000


def test_memory_is_what_store_memory_names() -> None:
    assert isinstance(open_store("memory"), MemoryStore)


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    # `--workers N` starts N processes on one file; each runs the migrations.
    # Threads with their own connections race the same way.
    path = tmp_path / "h.db"
    start = threading.Barrier(6)
    failures: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            open_file(path).close()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
