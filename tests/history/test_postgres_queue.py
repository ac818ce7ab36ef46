"""`PostgresWorkQueue` on a real PostgreSQL: the states of `worker_tasks` rows and their changes.

Two queue objects on one database stand for two replicas. The end-to-end
path (real servers and a real worker) is tests/history/test_postgres_workers.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from flowservice.dispatch import SharedTask, WorkResult
from flowservice.history.postgres import PostgresStore
from flowservice.history.postgres_queue import PostgresWorkQueue
from flowservice.shared_dispatch import ANSWERED, OFFERED, RESYNC, WITHDRAWN, Change

WAIT = 30.0  # seconds a change may take to arrive on a loaded machine before the test fails
SOON = datetime.now(UTC) + timedelta(hours=1)


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[tuple[PostgresWorkQueue, PostgresWorkQueue]]:
    PostgresStore(postgres_url).close()  # the history's migrations create the table
    a = PostgresWorkQueue(postgres_url, owner="a")
    b = PostgresWorkQueue(postgres_url, owner="b")
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


def _task(n: int, queue: str = "q") -> SharedTask:
    return SharedTask(f"t{n}", queue, f"payload {n}".encode())


async def _next(changes: AsyncIterator[Change], kind: str) -> Change:
    """The next change of `kind` (others are skipped)."""
    async with asyncio.timeout(WAIT):
        async for change in changes:
            if change.kind == kind:
                return change
    raise AssertionError("the changes ended")


async def test_replicas_taking_at_once_never_take_one_task_twice(
    replicas: tuple[PostgresWorkQueue, PostgresWorkQueue],
) -> None:
    a, b = replicas
    for n in range(10):
        await a.put(_task(n), SOON)
    await a.put(_task(10, "other"), SOON)

    taken = await asyncio.gather(*(q.take({"q": 4}) for q in (a, b, a, b)))

    ids = [task.id for some in taken for task in some]
    assert sorted(ids) == sorted(f"t{n}" for n in range(10))  # each once, none of "other"
    assert all(len(some) <= 4 for some in taken)
    assert {task.payload for some in taken for task in some} >= {b"payload 0"}


async def test_a_released_task_is_offered_again_and_an_expired_one_is_not_taken(
    replicas: tuple[PostgresWorkQueue, PostgresWorkQueue],
) -> None:
    a, b = replicas
    await a.put(_task(1), SOON)
    await a.put(_task(2), datetime.now(UTC) - timedelta(seconds=1))  # its attempt is over

    first = await b.take({"q": 5})
    await a.release([task.id for task in first])  # only the taker may release: not a
    held = await a.take({"q": 5})
    await b.release([task.id for task in first])
    again = await a.take({"q": 5})

    assert [task.id for task in first] == ["t1"]
    assert held == []
    assert [task.id for task in again] == ["t1"]


async def test_a_result_is_applied_once_and_reaches_the_owner_as_a_change(
    replicas: tuple[PostgresWorkQueue, PostgresWorkQueue],
) -> None:
    a, b = replicas
    changes = a.changes()
    await _next(changes, RESYNC)  # listening
    await a.put(_task(1), SOON)
    assert await _next(changes, OFFERED) == Change(OFFERED, "q")
    await b.take({"q": 1})

    first = await b.answer("t1", WorkResult({"paid": True}))
    second = await b.answer("t1", WorkResult(error="late", error_type="Late"))
    announced = await _next(changes, ANSWERED)
    collected = await a.collect(["t1", "unknown"])
    await changes.aclose()

    assert (first, second) == (True, False)
    assert announced == Change(ANSWERED, "t1")
    assert collected == {"t1": WorkResult({"paid": True})}
    assert await a.collect(["t1"]) == {}  # read once, then gone


async def test_withdrawing_a_taken_task_tells_its_taker_and_refuses_its_result(
    replicas: tuple[PostgresWorkQueue, PostgresWorkQueue],
) -> None:
    a, b = replicas
    changes = b.changes()
    await _next(changes, RESYNC)
    await a.put(_task(1), SOON)
    await a.put(_task(2), SOON)
    await b.take({"q": 1})  # t1, the older

    await a.withdraw("t1", deadline_passed=True)
    await a.withdraw("t2", deadline_passed=False)  # offered, nobody holds it: deleted
    announced = await _next(changes, WITHDRAWN)
    await changes.aclose()

    assert announced == Change(WITHDRAWN, "t1", deadline_passed=True)
    assert await b.answer("t1", WorkResult()) is False
    assert await b.answer("t2", WorkResult()) is False
    assert await b.take({"q": 5}) == []


async def test_a_replica_that_listened_again_reads_what_its_taken_tasks_missed(
    replicas: tuple[PostgresWorkQueue, PostgresWorkQueue],
) -> None:
    a, b = replicas
    changes = b.changes()
    await _next(changes, RESYNC)
    for n in range(1, 5):
        await a.put(_task(n), SOON)
    assert len(await b.take({"q": 4})) == 4
    await changes.aclose()  # b hears nothing from here on

    await a.withdraw("t1", deadline_passed=False)
    await a.withdraw("t2", deadline_passed=True)
    assert await a.answer("t3", WorkResult({"paid": True}))  # answered elsewhere

    # t4 is still b's; t5 was never there (or is gone): withdrawn.
    assert await b.missed(["t1", "t2", "t3", "t4", "t5"]) == [
        Change(WITHDRAWN, "t1", deadline_passed=False),
        Change(WITHDRAWN, "t2", deadline_passed=True),
        Change(ANSWERED, "t3"),
        Change(WITHDRAWN, "t5", deadline_passed=False),
    ]
    assert await a.missed(["t4"]) == [Change(WITHDRAWN, "t4", deadline_passed=False)]  # b's
