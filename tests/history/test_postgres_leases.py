"""Leases on PostgreSQL: replicas that claim at once, fence each other, cancel each other's runs.

Each store object is an owner, as each replica is; one with leases of 0 s
looks dead as soon as it has written.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest

from flowservice.errors import LeaseLostError
from flowservice.history import ExecutionRecord, StoredEvent
from flowservice.history.postgres import PostgresStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXECUTIONS = 40
CLAIMERS = 4


def _record(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(execution_id, "f", b"req", "", "", T0)


@pytest.fixture
def replicas(postgres_url: str) -> Iterator[list[PostgresStore]]:
    """A dead-looking replica (leases of 0 s) first, then live ones, on one database."""
    with ExitStack() as stack:
        made = []
        for n in range(1 + CLAIMERS):
            lease = 0 if n == 0 else 60
            store = PostgresStore(postgres_url, owner=f"r{n}", lease_seconds=lease)
            stack.callback(store.close)
            made.append(store)
        yield made


async def test_replicas_claiming_at_once_take_each_expired_execution_once(
    replicas: list[PostgresStore],
) -> None:
    dead, *claimers = replicas
    ids = [f"e{n:03}" for n in range(EXECUTIONS)]
    for execution_id in ids:
        dead.begin(_record(execution_id))
    assert not (await dead.renew(ids)).lost  # written: what a replica that died left

    async def claim_all(store: PostgresStore) -> list[str]:
        mine: list[str] = []
        while claims := await store.claim(3):
            mine += [c.execution.record.execution_id for c in claims]
            assert {c.fence for c in claims} == {2}
        return mine

    taken = await asyncio.gather(*(claim_all(store) for store in claimers))
    counts = Counter(execution_id for mine in taken for execution_id in mine)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}
    renewals = await asyncio.gather(*(s.renew(m) for s, m in zip(claimers, taken, strict=True)))
    assert all(not renewal.lost for renewal in renewals)  # each owns what it claimed


async def test_one_batch_writes_what_its_replica_holds_and_drops_what_it_lost(
    replicas: list[PostgresStore],
) -> None:
    dead, live, *_ = replicas
    for execution_id in ("kept", "taken"):
        dead.begin(_record(execution_id))
        dead.append(execution_id, StoredEvent(1, b"first"))
    await dead.renew(["kept", "taken"])
    assert [c.fence for c in await live.claim(10, "taken")] == [2]

    for execution_id in ("kept", "taken"):  # one batch: the fence sorts its rows
        dead.append(execution_id, StoredEvent(2, b"second"))
    ends = await asyncio.gather(
        dead.finish("kept", "completed", b"", T0),
        dead.finish("taken", "completed", b"", T0),
        return_exceptions=True,
    )
    assert [type(end) for end in ends] == [type(None), LeaseLostError]
    assert [e.payload for e in await live.events("kept")] == [b"first", b"second"]
    assert [e.payload for e in await live.events("taken")] == [b"first"]
    taken = await live.get("taken")
    assert taken is not None and taken.status == "running"
    live.append("taken", StoredEvent(2, b"the new owner's"))
    await live.finish("taken", "completed", b"", T0)
    assert len(await dead.events("taken")) == 2


async def test_a_cancel_from_another_replica_reaches_a_live_owner_or_the_next_claimer(
    replicas: list[PostgresStore],
) -> None:
    dead, owner, other, *_ = replicas
    owner.begin(_record("live"))
    dead.begin(_record("abandoned"))
    await dead.renew(["abandoned"])
    await owner.renew(["live"])

    assert await other.request_cancel("live")
    assert await other.request_cancel("abandoned")

    assert (await owner.renew(["live"])).cancel_requested == {"live"}
    # The store records no end itself: the claimer does, with the last event.
    still = await other.get("abandoned")
    assert still is not None and still.status == "running"
    [claim] = await other.claim(10)
    assert (claim.execution.record.execution_id, claim.cancel_requested) == ("abandoned", True)
    with pytest.raises(LeaseLostError):
        await dead.finish("abandoned", "completed", b"", T0)
    assert await other.claim(10) == []
