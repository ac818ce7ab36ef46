"""What only the PostgreSQL store does: replicas sharing it, migrations at once, a database lost.

The store contract itself (what every store does) is tests/history/test_store.py,
run against PostgreSQL there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from flowservice.errors import StoreUnavailableError
from flowservice.history import ExecutionQuery, ExecutionRecord, StoredEvent, open_store, postgres
from flowservice.history.postgres import SCHEMA_VERSION, PostgresStore
from tests.history.postgres_server import running_postgres

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPLICAS = 6
WAIT = 30.0  # seconds a wake-up may take on a loaded machine before the test fails


def _record(n: int) -> ExecutionRecord:
    return ExecutionRecord(f"e{n:03}", "f", b"req", f"r{n}", "", T0 + timedelta(seconds=n))


@contextmanager
def opened(url: str, **options: float) -> Iterator[PostgresStore]:
    store = PostgresStore(url, **options)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        store.close()


def test_replicas_starting_at_once_migrate_the_database_once(postgres_url: str) -> None:
    together = threading.Barrier(REPLICAS)

    def start() -> PostgresStore:
        together.wait()
        return PostgresStore(postgres_url)

    with ThreadPoolExecutor(REPLICAS) as pool:
        stores = list(pool.map(lambda _: start(), range(REPLICAS)))
    for store in stores:
        store.close()
    with psycopg.connect(postgres_url) as db:
        versions = db.execute("SELECT version FROM schema_version").fetchall()
        tables = db.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('executions', 'events')"
        ).fetchone()
    assert versions == [(SCHEMA_VERSION,)]
    assert tables == (2,)


def test_a_database_from_a_newer_version_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreUnavailableError, match="newer Flow Manager"):
        PostgresStore(postgres_url)


def test_a_database_that_cannot_be_reached_is_refused_without_its_password() -> None:
    url = "postgresql://flow:secret@127.0.0.1:1/history"
    with pytest.raises(StoreUnavailableError) as raised:
        PostgresStore(url, timeout=2)
    assert "127.0.0.1:1/history" in raised.value.problem
    assert "secret" not in raised.value.problem


async def _watched(reader: PostgresStore, execution_id: str) -> tuple[str, list[StoredEvent]]:
    """Waits, as a watcher does, until the execution has ended; its status and events.

    Each wait lasts an hour unless a change wakes it: only NOTIFYs make
    this return within the test's time.
    """
    async with asyncio.timeout(WAIT):
        while True:
            change = asyncio.create_task(reader.wait_for_change(execution_id, timeout=3600))
            await asyncio.sleep(0)  # waiting before reading: no change slips between
            stored = await reader.get(execution_id)
            if stored is not None and stored.status != "running":
                change.cancel()
                return stored.status, await reader.events(execution_id)
            await change


async def test_another_replica_is_woken_by_what_one_writes(postgres_url: str) -> None:
    with opened(postgres_url) as writer, opened(postgres_url) as reader:
        watching = asyncio.create_task(_watched(reader, "e001"))
        await asyncio.sleep(0.1)  # usually waiting by now; if not, it reads the end at once
        writer.begin(_record(1))
        writer.append("e001", StoredEvent(1, b"first"))
        await writer.finish("e001", "completed", b"sum", T0 + timedelta(seconds=2))
        assert await watching == ("completed", [StoredEvent(1, b"first")])
        found = await reader.find_request("r1")
        assert found is not None and found.summary == b"sum"


async def test_a_wait_without_a_change_returns_after_its_timeout(postgres_url: str) -> None:
    with opened(postgres_url) as store:
        store.begin(_record(1))
        await store.wait_for_change("e002", timeout=0.05)  # another execution's write: no wake
        assert await store.events("e002") == []


async def test_a_lost_database_fails_the_store_until_it_is_back() -> None:
    with running_postgres() as server, opened(server.url(), timeout=2) as store:
        await _run(store, 1)
        server.stop()

        store.begin(_record(2))
        store.begin(_record(5))  # its start is lost with this batch; its end comes later
        with pytest.raises(StoreUnavailableError):
            await store.finish("e002", "completed", b"", T0)
        assert "cannot write to PostgreSQL 127.0.0.1" in store.failure
        with pytest.raises(StoreUnavailableError):
            store.begin(_record(3))

        server.start()
        async with asyncio.timeout(WAIT):
            while store.failure:  # the keeper's probe: a purge, once a second
                with contextlib.suppress(StoreUnavailableError):  # not yet
                    await store.purge(T0)
                await asyncio.sleep(0.1)
        await _run(store, 4)  # writes, and is woken by its own NOTIFY: it listens again
        with pytest.raises(StoreUnavailableError):  # not LeaseLostError: nobody took it over
            await store.finish("e005", "completed", b"", T0)
        got = await store.get("e004")
        assert got is not None and got.status == "completed"
        assert await store.get("e002") is None  # its batch was lost with the database


async def _run(store: PostgresStore, n: int) -> None:
    """Starts, and finishes, execution n; returns once a watcher has been woken by it."""
    execution_id = f"e{n:03}"
    woken = asyncio.create_task(store.wait_for_change(execution_id, timeout=3600))
    await asyncio.sleep(0)
    store.begin(_record(n))
    store.append(execution_id, StoredEvent(1, b"ev"))
    await store.finish(execution_id, "completed", b"", T0 + timedelta(seconds=n))
    async with asyncio.timeout(WAIT):
        await woken


async def test_a_backlog_is_written_in_transactions_of_bounded_size(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "_BATCH", 7)  # 60 operations: at least 9 transactions
    transactions: list[bool] = []
    with opened(postgres_url) as store:
        store.observe(lambda _, ok: transactions.append(ok))
        for n in range(20):
            store.begin(_record(n))
            store.append(f"e{n:03}", StoredEvent(1, b"ev"))
        await asyncio.gather(*(store.finish(f"e{n:03}", "completed", b"", T0) for n in range(20)))
        done = await store.find(ExecutionQuery(limit=100, status="completed"))
    assert len(done) == 20
    assert len(transactions) >= 60 // 7 and all(transactions)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_store_names_postgresql_by_either_url_scheme(postgres_url: str, scheme: str) -> None:
    store = open_store(postgres_url.replace("postgresql", scheme, 1))
    try:
        assert isinstance(store, PostgresStore)
    finally:
        store.close()
