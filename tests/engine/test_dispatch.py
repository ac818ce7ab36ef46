"""The dispatcher and the `worker` task type, with the real engine and no gRPC.

A "worker" here is a coroutine reading a `WorkerSession`'s outbox, as the
API layer does for a real stream.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from flowservice.dispatch import (
    WORKER_LOST,
    Assignment,
    Cancellation,
    Dispatcher,
    WorkerSession,
    WorkResult,
)
from flowservice.engine import Engine
from flowservice.errors import AssignmentNotFoundError, TooManyWorkersError
from flowservice.models import ExecutionStatus, Flow, RetryPolicy, Task
from flowservice.tasks import TaskRegistry
from flowservice.tasks.worker_task import WorkerTask


def _engine(dispatcher: Dispatcher) -> Engine:
    return Engine(TaskRegistry({"worker": WorkerTask(dispatcher)}))


def _flow(queue: str = "q", **task: object) -> Flow:
    step = Task(name="pay", type="worker", params={"queue": queue, "amount": 3}, **task)  # type: ignore[arg-type]
    return Flow(id="f", name="f", start_task="pay", tasks=(step,))


async def _next_assignment(session: WorkerSession) -> Assignment:
    item = await session.next()
    assert isinstance(item, Assignment)
    return item


async def test_a_worker_completes_an_assignment_with_its_params() -> None:
    dispatcher = Dispatcher()
    session = dispatcher.connect("w", ("q",), 1)
    run = asyncio.create_task(_engine(dispatcher).execute(_flow()))
    assignment = await _next_assignment(session)
    assert assignment.ctx.params["amount"] == 3
    assert assignment.ctx.deadline is not None
    assert assignment.idempotency_key.endswith("/pay/1")
    dispatcher.resolve(assignment.id, WorkResult({"paid": True}))
    summary = await run
    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.task_results[0].output == {"paid": True}


async def test_a_second_result_is_refused_and_a_failure_keeps_its_error_type() -> None:
    dispatcher = Dispatcher()
    session = dispatcher.connect("w", ("q",), 1)
    run = asyncio.create_task(_engine(dispatcher).execute(_flow()))
    assignment = await _next_assignment(session)
    dispatcher.resolve(assignment.id, WorkResult(error="declined", error_type="CardDeclined"))
    with pytest.raises(AssignmentNotFoundError):
        dispatcher.resolve(assignment.id, WorkResult({"paid": True}))
    summary = await run
    assert summary.status is ExecutionStatus.FAILED
    assert summary.task_results[0].error_type == "CardDeclined"
    assert session.free == 1


async def test_an_assignment_waits_for_a_worker_and_counts_in_the_backlog() -> None:
    dispatcher = Dispatcher()
    run = asyncio.create_task(_engine(dispatcher).execute(_flow("late")))
    while dispatcher.backlog() != {"late": 1}:
        await asyncio.sleep(0.01)
    session = dispatcher.connect("w", ("late",), 1)
    assignment = await _next_assignment(session)
    assert dispatcher.backlog() == {}
    dispatcher.resolve(assignment.id, WorkResult())
    assert (await run).status is ExecutionStatus.COMPLETED


async def test_with_no_worker_the_task_times_out_and_leaves_no_backlog() -> None:
    dispatcher = Dispatcher()
    flow = _flow(timeout=timedelta(seconds=0.2))
    summary = await _engine(dispatcher).execute(flow)
    assert summary.task_results[0].error_type == "TaskTimeout"
    assert dispatcher.backlog() == {}


async def test_a_timeout_pushes_a_cancellation_and_a_late_result_is_not_found() -> None:
    dispatcher = Dispatcher()
    session = dispatcher.connect("w", ("q",), 1)
    summary = asyncio.create_task(
        _engine(dispatcher).execute(_flow(timeout=timedelta(seconds=0.2)))
    )
    assignment = await _next_assignment(session)
    cancellation = await session.next()
    assert isinstance(cancellation, Cancellation)
    assert cancellation.assignment_id == assignment.id
    assert cancellation.deadline_passed
    assert (await summary).task_results[0].error_type == "TaskTimeout"
    with pytest.raises(AssignmentNotFoundError):
        dispatcher.resolve(assignment.id, WorkResult())


async def test_a_lost_worker_fails_its_assignment_and_the_retry_reaches_another() -> None:
    dispatcher = Dispatcher()
    first = dispatcher.connect("first", ("q",), 1)
    retry = RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=1))
    run = asyncio.create_task(_engine(dispatcher).execute(_flow(retry=retry)))
    lost = await _next_assignment(first)
    second = dispatcher.connect("second", ("q",), 1)
    dispatcher.disconnect(first)
    assert await first.next() is None
    retried = await _next_assignment(second)
    assert retried.ctx.attempt == 2
    assert retried.idempotency_key == lost.idempotency_key
    with pytest.raises(AssignmentNotFoundError):
        dispatcher.resolve(lost.id, WorkResult())
    dispatcher.resolve(retried.id, WorkResult({"by": "second"}))
    summary = await run
    assert summary.task_results[0].output == {"by": "second"}
    assert summary.task_results[0].attempts == 2


async def test_lost_is_the_error_type_when_no_retry_is_left() -> None:
    dispatcher = Dispatcher()
    session = dispatcher.connect("w", ("q",), 1)
    run = asyncio.create_task(_engine(dispatcher).execute(_flow()))
    await _next_assignment(session)
    dispatcher.disconnect(session)
    assert (await run).task_results[0].error_type == WORKER_LOST


async def test_credits_bound_what_a_worker_holds() -> None:
    dispatcher = Dispatcher()
    session = dispatcher.connect("w", ("q",), 1)
    engine = _engine(dispatcher)
    runs = [asyncio.create_task(engine.execute(_flow())) for _ in range(2)]
    first = await _next_assignment(session)
    while dispatcher.backlog() != {"q": 1}:
        await asyncio.sleep(0.01)
    assert len(session.held) == 1
    dispatcher.add_credits(session, 1)
    second = await _next_assignment(session)
    for assignment in (first, second):
        dispatcher.resolve(assignment.id, WorkResult())
    assert [(await run).status for run in runs] == [ExecutionStatus.COMPLETED] * 2


async def test_workers_and_backlog_are_bounded() -> None:
    dispatcher = Dispatcher(max_workers=1, max_backlog=1)
    dispatcher.connect("w", ("other",), 1)
    with pytest.raises(TooManyWorkersError):
        dispatcher.connect("w2", ("q",), 1)
    engine = _engine(dispatcher)
    waiting = asyncio.create_task(engine.execute(_flow()))
    while dispatcher.backlog() != {"q": 1}:
        await asyncio.sleep(0.01)
    refused = await engine.execute(_flow())
    assert refused.task_results[0].error_type == "BacklogFull"
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert dispatcher.backlog() == {}


async def test_validate_warns_when_no_worker_serves_the_queue() -> None:
    dispatcher = Dispatcher()
    engine = _engine(dispatcher)
    warnings = engine.validate(_flow("payments")).warnings
    assert [(w.field, w.reason) for w in warnings] == [
        ("flow.tasks[0].params.queue", "NO_WORKER_FOR_QUEUE")
    ]
    dispatcher.connect("w", ("payments",), 1)
    assert engine.validate(_flow("payments")).warnings == ()


@pytest.mark.parametrize(
    ("queue", "reason"), [("", "INVALID_QUEUE"), (7, "INVALID_QUEUE"), ("q" * 129, "NAME_TOO_LONG")]
)
def test_validate_refuses_a_literal_queue_that_run_would_refuse(queue: object, reason: str) -> None:
    report = _engine(Dispatcher()).validate(_flow(queue))  # type: ignore[arg-type]
    assert [(v.field, v.reason) for v in report.errors] == [("flow.tasks[0].params.queue", reason)]


@pytest.mark.parametrize("queue", ["", "q" * 129])
async def test_a_queue_from_an_input_mapping_is_checked_at_run_time(queue: str) -> None:
    flow = _flow("placeholder", input_mapping={"queue": "input.queue"})
    summary = await _engine(Dispatcher()).execute(flow, flow_input={"queue": queue})
    assert summary.task_results[0].error_type == "InvalidParams"
