"""Ownership of running executions, without gRPC: leases, claims, fencing, cancel requests.

Two store objects on one shared store are two owners, as two processes
would be (`owners` makes them: a store that several processes can share
adds itself to its params); a lease of 0 seconds has expired as soon as it
is taken. A store's writes may be queued: an owner's `renew` returns once
what it queued before is written, which the tests use where another owner
must see it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
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
from tests.history.test_store import version_1_file

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(execution_id, "f", b"req", "", "", T0)


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExecutionStore]:
    where = str(tmp_path / "h.db") if request.param == "sqlite" else "memory"
    if request.param == "postgres":
        where = request.getfixturevalue("postgres_url")  # a database of its own
    made = open_store(where, owner="me", lease_seconds=60)
    yield made
    made.close()


Owners = Callable[[str, float], ExecutionStore]
"""Makes a store object with an owner id and a lease length, on the test's one shared store."""


@pytest.fixture(params=["sqlite", "postgres"])
def owners(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Owners]:
    made: list[ExecutionStore] = []
    where = str(tmp_path / "h.db")
    if request.param == "postgres":
        where = request.getfixturevalue("postgres_url")

    def owner(name: str, lease_seconds: float) -> ExecutionStore:
        made.append(open_store(where, owner=name, lease_seconds=lease_seconds))
        return made[-1]

    yield owner
    for store in made:
        store.close()


@pytest.fixture
def two_owners(owners: Owners) -> tuple[ExecutionStore, ExecutionStore]:
    """A dead-looking owner (leases of 0 s) and a live one."""
    return owners("stale", 0), owners("live", 60)


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
    two_owners: tuple[ExecutionStore, ExecutionStore], owners: Owners
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
    third = owners("third", 60)
    assert await third.claim(10) == []  # the live owner's lease has not expired


async def test_a_stale_owner_cannot_write_what_another_claimed(
    two_owners: tuple[ExecutionStore, ExecutionStore],
) -> None:
    stale, live = two_owners
    stale.begin(_record("a"))
    stale.append("a", StoredEvent(1, b"started"))
    await stale.renew(["a"])  # written, as another process's writes would be by now
    await live.claim(1, "a")
    stale.append("a", StoredEvent(2, b"from the stale owner"))
    assert (await stale.renew(["a"])).lost == {"a"}
    with pytest.raises(LeaseLostError):
        await stale.finish("a", "completed", b"stale", T0)
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


async def test_cancelling_an_abandoned_execution_leaves_it_to_its_claimer_and_fences_its_owner(
    two_owners: tuple[ExecutionStore, ExecutionStore],
) -> None:
    stale, live = two_owners
    stale.begin(_record("a"))
    await stale.renew(["a"])
    assert await live.request_cancel("a")
    got = await live.get("a")
    assert got is not None and got.status == RUNNING  # its end is the claimer's to write
    [claim] = await live.claim(10)
    assert (claim.fence, claim.cancel_requested) == (2, True)
    live.append("a", StoredEvent(1, b"end"))
    await live.finish("a", "cancelled", b"summary", T0)
    with pytest.raises(LeaseLostError):
        await stale.finish("a", "completed", b"", T0)
    assert [e.payload for e in await live.events("a")] == [b"end"]
    assert await live.claim(10) == []


async def test_a_claim_that_finds_a_cancel_request_says_so(owners: Owners) -> None:
    busy, live = owners("busy", 2), owners("live", 60)
    busy.begin(_record("a"))
    await busy.renew(["a"])
    assert await live.request_cancel("a")  # flagged: busy's lease is live
    assert await live.claim(1) == []
    await asyncio.sleep(2.1)  # busy never renews: its lease expires
    claims = await live.claim(1)
    assert [(c.fence, c.cancel_requested) for c in claims] == [(2, True)]


async def test_an_execution_that_finished_here_is_not_reported_lost(store: ExecutionStore) -> None:
    store.begin(_record("a"))
    renewing = asyncio.ensure_future(store.renew(["a"]))
    await store.finish("a", "completed", b"", T0)  # while its run is still delivering its end
    assert (await renewing).lost == frozenset()
    assert (await store.renew(["a"])).lost == frozenset()


async def test_an_execution_left_running_by_an_older_version_is_claimed_after_the_upgrade(
    tmp_path: Path,
) -> None:
    version_1_file(tmp_path / "h.db")
    db = sqlite3.connect(tmp_path / "h.db")
    db.execute("INSERT INTO executions VALUES ('left', 'f', 'running', x'00', '', 0, NULL, x'')")
    db.commit()
    db.close()
    store = SqliteStore(tmp_path / "h.db", owner="new", lease_seconds=60)
    try:
        claims = await store.claim(10)
        assert [(c.execution.record.execution_id, c.fence) for c in claims] == [("left", 1)]
        store.append("left", StoredEvent(1, b"resumed"))
        await store.finish("left", "completed", b"", T0)
        assert [e.payload for e in await store.events("left")] == [b"resumed"]
    finally:
        store.close()
