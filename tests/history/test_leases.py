"""Ownership of running executions, without gRPC: leases, claims, fencing, cancel requests.

Two store objects on one SQLite file are two owners, as two processes
would be; a lease of 0 seconds has expired as soon as it is taken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowservice.errors import LeaseLostError
from flowservice.history import (
    RUNNING,
    ExecutionRecord,
    ExecutionStore,
    MemoryStore,
    SqliteStore,
    StoredEvent,
    open_store,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(execution_id, "f", b"req", "", "", T0)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExecutionStore]:
    where = str(tmp_path / "h.db") if request.param == "sqlite" else "memory"
    made = open_store(where, owner="me", lease_seconds=60)
    yield made
    made.close()


@pytest.fixture
def two_owners(tmp_path: Path) -> Iterator[tuple[SqliteStore, SqliteStore]]:
    """A dead-looking owner (leases of 0 s) and a live one, on one file."""
    stale = SqliteStore(tmp_path / "h.db", owner="stale", lease_seconds=0)
    live = SqliteStore(tmp_path / "h.db", owner="live", lease_seconds=60)
    yield stale, live
    stale.close()
    live.close()


async def test_the_owner_renews_what_it_runs_and_nobody_claims_it(store: ExecutionStore) -> None:
    store.begin(_record("a"))
    renewal = await store.renew(["a"])
    assert (renewal.lost, renewal.cancel_requested) == (frozenset(), frozenset())
    assert await store.claim(10) == []
    assert store.owner == "me"


async def test_claiming_what_this_owner_holds_moves_its_fence_for_its_writes() -> None:
    store = MemoryStore(owner="me", lease_seconds=0)
    store.begin(_record("a"))
    assert [c.fence for c in await store.claim(10, "a")] == [2]
    store.append("a", StoredEvent(1, b"written at the new fence"))
    await store.finish("a", "completed", b"", T0)
    assert [e.payload for e in await store.events("a")] == [b"written at the new fence"]


async def test_an_expired_execution_is_claimed_once_with_a_higher_fence(
    two_owners: tuple[SqliteStore, SqliteStore], tmp_path: Path
) -> None:
    stale, live = two_owners
    stale.begin(_record("a"))
    stale.append("a", StoredEvent(1, b"started"))
    assert not (await stale.renew(["a"])).lost  # renewed (for 0 s), and written
    claims = await live.claim(10)
    assert [(c.execution.record.execution_id, c.fence, c.cancel_requested) for c in claims] == [
        ("a", 2, False)
    ]
    assert claims[0].execution.status == RUNNING
    third = SqliteStore(tmp_path / "h.db", owner="third", lease_seconds=60)
    try:
        assert await third.claim(10) == []  # the live owner's lease has not expired
    finally:
        third.close()


async def test_a_stale_owner_cannot_write_what_another_claimed(
    two_owners: tuple[SqliteStore, SqliteStore],
) -> None:
    stale, live = two_owners
    stale.begin(_record("a"))
    stale.append("a", StoredEvent(1, b"started"))
    await stale.renew(["a"])  # written, as another process's writes would be by now
    await live.claim(1, "a")
    stale.append("a", StoredEvent(2, b"from the stale owner"))
    with pytest.raises(LeaseLostError):
        await stale.finish("a", "completed", b"stale", T0)
    assert (await stale.renew(["a"])).lost == {"a"}
    live.append("a", StoredEvent(2, b"from the new owner"))
    await live.finish("a", "completed", b"live", T0)
    assert [e.payload for e in await live.events("a")] == [b"started", b"from the new owner"]
    got = await live.get("a")
    assert got is not None and (got.status, got.summary) == ("completed", b"live")


async def test_a_cancel_request_reaches_the_owner_at_its_renewal(store: ExecutionStore) -> None:
    store.begin(_record("a"))
    store.begin(_record("b"))
    assert await store.request_cancel("a")
    renewal = await store.renew(["a", "b"])
    assert (renewal.lost, renewal.cancel_requested) == (frozenset(), {"a"})
    await store.finish("a", "cancelled", b"", T0)
    assert not await store.request_cancel("a")  # finished
    assert not await store.request_cancel("nope")


async def test_cancelling_an_abandoned_execution_records_it_and_fences_its_owner(
    two_owners: tuple[SqliteStore, SqliteStore],
) -> None:
    stale, live = two_owners
    stale.begin(_record("a"))
    await stale.renew(["a"])
    assert await live.request_cancel("a")
    got = await live.get("a")
    assert got is not None and got.status == "cancelled"
    with pytest.raises(LeaseLostError):
        await stale.finish("a", "completed", b"", T0)
    assert await live.claim(10) == []


async def test_a_claim_that_finds_a_cancel_request_says_so(tmp_path: Path) -> None:
    busy = SqliteStore(tmp_path / "h.db", owner="busy", lease_seconds=2)
    live = SqliteStore(tmp_path / "h.db", owner="live", lease_seconds=60)
    try:
        busy.begin(_record("a"))
        await busy.renew(["a"])
        assert await live.request_cancel("a")  # flagged: busy's lease is live
        assert await live.claim(1) == []
        await asyncio.sleep(2.1)  # busy never renews: its lease expires
        claims = await live.claim(1)
        assert [(c.fence, c.cancel_requested) for c in claims] == [(2, True)]
    finally:
        busy.close()
        live.close()
