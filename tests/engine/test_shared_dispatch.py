"""Worker queues shared by replicas, with the real engine and dispatchers and no database.

Two "replicas" in one process: each an engine and a dispatcher with a
`SharedDispatch`, sharing `ListQueue`, a `SharedQueue` in memory that keeps
the states PostgreSQL's rows keep (tests/history/test_postgres_workers.py
runs the real one). Workers are coroutines reading a session's outbox, as
the API layer does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from datetime import datetime

import pytest

from flowservice.dispatch import (
    WORKER_LOST,
    Assignment,
    Cancellation,
    Dispatcher,
    SharedTask,
    WorkerSession,
    WorkResult,
)
from flowservice.engine import Engine
from flowservice.models import ExecutionStatus, ExecutionSummary, Flow, Task
from flowservice.shared_dispatch import (
    ANSWERED,
    OFFERED,
    RESYNC,
    WITHDRAWN,
    Change,
    SharedDispatch,
)
from flowservice.tasks import TaskRegistry
from flowservice.tasks.worker_task import WorkerTask


class ListQueue:
    """A `SharedQueue` in memory: rows by id, each change sent to every listener."""

    def __init__(self) -> None:
        self.rows: dict[str, list[object]] = {}  # id: [task, state, result]
        self._listeners: list[asyncio.Queue[Change | None]] = []
        self.deaf = False
        """True while the listeners' connection is broken: changes reach nobody."""

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        for listener in self._listeners:
            listener.put_nowait(None)

    def _announce(self, change: Change) -> None:
        if self.deaf:
            return
        for listener in self._listeners:
            listener.put_nowait(change)

    def listen_again(self) -> None:
        """Ends an outage of the listeners (`deaf`): they hear `RESYNC`, as after a reconnection."""
        self.deaf = False
        for listener in self._listeners:
            listener.put_nowait(Change(RESYNC))

    async def put(self, task: SharedTask, deadline: datetime | None) -> None:
        self.rows[task.id] = [task, "offered", None]
        self._announce(Change(OFFERED, task.queue))

    async def take(self, queues: dict[str, int]) -> list[SharedTask]:
        taken: list[SharedTask] = []
        for row in self.rows.values():
            task = row[0]
            assert isinstance(task, SharedTask)
            if row[1] == "offered" and sum(t.queue == task.queue for t in taken) < queues.get(
                task.queue, 0
            ):
                row[1] = "taken"
                taken.append(SharedTask(task.id, task.queue, task.payload))
        return taken

    async def release(self, task_ids: Collection[str]) -> None:
        for task_id in task_ids:
            self.rows[task_id][1] = "offered"
            self._announce(Change(OFFERED, str(getattr(self.rows[task_id][0], "queue", ""))))

    async def answer(self, task_id: str, result: WorkResult) -> bool:
        row = self.rows.get(task_id)
        if row is None or row[1] not in ("offered", "taken"):
            return False
        row[1:] = ["answered", result]
        self._announce(Change(ANSWERED, task_id))
        return True

    async def collect(self, task_ids: Collection[str]) -> dict[str, WorkResult]:
        answered = [i for i in task_ids if i in self.rows and self.rows[i][1] == "answered"]
        results = {i: self.rows.pop(i)[2] for i in answered}
        return {i: r for i, r in results.items() if isinstance(r, WorkResult)}

    async def withdraw(self, task_id: str, deadline_passed: bool) -> None:
        row = self.rows.get(task_id)
        if row is None or row[1] != "taken":
            self.rows.pop(task_id, None)
            return
        row[1] = "expired" if deadline_passed else "cancelled"
        self._announce(Change(WITHDRAWN, task_id, deadline_passed))

    async def fail_lost(self) -> None:
        pass  # its replicas never go away

    async def missed(self, task_ids: Collection[str]) -> list[Change]:
        changes = []
        for task_id in task_ids:
            state = self.rows[task_id][1] if task_id in self.rows else ""
            if state == "answered":
                changes.append(Change(ANSWERED, task_id))
            elif state != "taken":  # (one replica's taken rows are all there is here)
                changes.append(Change(WITHDRAWN, task_id, state == "expired"))
        return changes

    async def changes(self) -> AsyncIterator[Change]:
        listener: asyncio.Queue[Change | None] = asyncio.Queue()
        self._listeners.append(listener)
        yield Change(RESYNC)
        while (change := await listener.get()) is not None:
            yield change


class Replica:
    """An engine and a dispatcher sharing `queue`."""

    def __init__(self, queue: ListQueue) -> None:
        self.dispatcher = Dispatcher()
        self.sharing = SharedDispatch(self.dispatcher, queue, lambda a: a.id.encode())
        self.engine = Engine(TaskRegistry({"worker": WorkerTask(self.dispatcher)}))


def _flow(**task: object) -> Flow:
    step = Task(name="pay", type="worker", params={"queue": "q"}, **task)  # type: ignore[arg-type]
    return Flow(id="f", name="f", start_task="pay", tasks=(step,))


async def _next_shared(session: WorkerSession) -> SharedTask:
    item = await session.next()
    assert isinstance(item, SharedTask), item
    return item


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[ListQueue, Replica, Replica]]:
    """Two replicas, A and B, on one `ListQueue`, stopped after the test."""
    queue = ListQueue()
    a, b = Replica(queue), Replica(queue)
    await a.sharing.start()
    await b.sharing.start()
    yield queue, a, b
    await a.sharing.stop()
    await b.sharing.stop()


async def _run_on_a_held_by_b(
    a: Replica, b: Replica
) -> tuple[WorkerSession, asyncio.Task[ExecutionSummary], SharedTask]:
    """An execution running on A, whose worker task a worker on B holds."""
    worker = b.dispatcher.connect("on-b", ("q",), 1)
    run = asyncio.create_task(a.engine.execute(_flow()))
    return worker, run, await _next_shared(worker)


async def test_a_worker_of_another_replica_runs_the_task_and_its_result_comes_back(
    replicas: tuple[ListQueue, Replica, Replica],
) -> None:
    queue, a, b = replicas
    _, run, task = await _run_on_a_held_by_b(a, b)
    assert queue.rows[task.id][1] == "taken"
    assert task.payload == task.id.encode()  # what the owner's API layer encoded

    b.dispatcher.resolve(task.id, WorkResult({"paid": True}))
    summary = await run

    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.task_results[0].output == {"paid": True}
    assert queue.rows == {}
    assert b.dispatcher.free_credits() == {"q": 1}


async def test_a_worker_lost_on_another_replica_fails_the_attempt_as_worker_lost(
    replicas: tuple[ListQueue, Replica, Replica],
) -> None:
    _, a, b = replicas
    worker, run, _ = await _run_on_a_held_by_b(a, b)

    b.dispatcher.disconnect(worker)
    summary = await run

    assert summary.status is ExecutionStatus.FAILED
    assert summary.task_results[0].error_type == WORKER_LOST


async def test_cancelling_the_execution_withdraws_the_task_and_tells_the_worker(
    replicas: tuple[ListQueue, Replica, Replica],
) -> None:
    queue, a, b = replicas
    worker, run, task = await _run_on_a_held_by_b(a, b)

    run.cancel()
    told = await worker.next()

    assert told == Cancellation(task.id, deadline_passed=False)
    assert queue.rows[task.id][1] == "cancelled"
    assert b.dispatcher.free_credits() == {"q": 1}


async def test_a_withdrawal_missed_while_not_listening_reaches_the_worker_after(
    replicas: tuple[ListQueue, Replica, Replica],
) -> None:
    queue, a, b = replicas
    worker, run, task = await _run_on_a_held_by_b(a, b)

    queue.deaf = True  # B's listening connection breaks
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.sleep(0.05)
    assert queue.rows[task.id][1] == "cancelled" and b.dispatcher.free_credits() == {}

    queue.listen_again()
    async with asyncio.timeout(10):
        told = await worker.next()

    assert told == Cancellation(task.id, deadline_passed=False)
    assert b.dispatcher.free_credits() == {"q": 1}


async def test_a_busy_local_worker_takes_the_offered_task_once_free(
    replicas: tuple[ListQueue, Replica, Replica],
) -> None:
    queue, a, _ = replicas
    worker = a.dispatcher.connect("on-a", ("q",), 1)
    first = asyncio.create_task(a.engine.execute(_flow()))
    held = await worker.next()
    assert isinstance(held, Assignment)  # a free worker here: no offer at all
    second = asyncio.create_task(a.engine.execute(_flow()))
    while not queue.rows:  # offered, since the only worker is busy
        await asyncio.sleep(0)

    a.dispatcher.resolve(held.id, WorkResult({"n": 1}))
    task = await _next_shared(worker)
    a.dispatcher.resolve(task.id, WorkResult({"n": 2}))

    assert [(await run).task_results[0].output for run in (first, second)] == [{"n": 1}, {"n": 2}]
    assert queue.rows == {}
