"""ExecuteStream: events as they happen, and the same summary Execute returns."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from tests.api.conftest import Gate, execute_request, stream_request
from tests.api.test_execute import seed_body

Stub = flow_service_pb2_grpc.FlowServiceStub


async def test_the_seed_stream_has_every_event_in_order(stub: Stub) -> None:
    events = [event async for event in stub.ExecuteStream(stream_request(seed_body()))]

    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == [
        "execution_started",
        "task_started",
        "task_finished",
        "condition_evaluated",
        "task_started",
        "task_finished",
        "condition_evaluated",
        "task_started",
        "task_finished",
        "execution_finished",
    ]
    assert [event.sequence for event in events] == list(range(1, 11))
    assert len({event.execution_id for event in events}) == 1
    assert all(event.HasField("time") for event in events)
    assert events[0].execution_started.flow_id == "flow123"
    assert events[0].execution_started.start_task == "task1"
    condition = events[3].condition_evaluated
    assert condition.condition == "condition_task1"
    assert condition.source_task == "task1"
    assert condition.expected_outcome == "success"
    assert condition.actual_outcome == pb.TASK_OUTCOME_SUCCESS
    assert condition.branch == pb.BRANCH_SUCCESS
    assert condition.next_task == "task2"
    result = events[-1].execution_finished.result
    assert result.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(result.executed_tasks) == ["task1", "task2", "task3"]
    assert result.execution_id == events[0].execution_id


async def test_the_stream_ends_with_the_summary_execute_returns(stub: Stub) -> None:
    body = seed_body()
    body["flow"]["tasks"][1]["params"] = {"fail": True, "error": "nope"}

    events = [event async for event in stub.ExecuteStream(stream_request(body))]
    response = await stub.Execute(execute_request(body))

    streamed = events[-1].execution_finished.result
    for field in ("status", "executed_tasks", "failed_task", "error", "flow_id"):
        assert getattr(streamed, field) == getattr(response, field), field
    assert events[-2].condition_evaluated.next_task == "end"
    assert events[-2].condition_evaluated.branch == pb.BRANCH_FAILURE


async def test_early_events_arrive_while_later_tasks_still_run(stub: Stub, gate: Gate) -> None:
    body: dict[str, Any] = {
        "flow": {
            "start_task": "first",
            "tasks": [
                {"name": "first", "params": {"sleep_ms": 50}},
                {"name": "second", "params": {"sleep_ms": 50}},
                {"name": "held", "type": "gate"},
                {"name": "last", "params": {"sleep_ms": 50}},
            ],
        }
    }
    call = stub.ExecuteStream(stream_request(body))
    seen: list[str] = []

    # "held" cannot finish until the gate opens, so every event read before
    # that was sent while the flow was still running.
    async with asyncio.timeout(10):
        while True:
            event = await call.read()
            kind = event.WhichOneof("event")
            seen.append(f"{kind}:{event.task_started.task or event.task_finished.result.task}")
            if kind == "task_started" and event.task_started.task == "held":
                break
    assert seen == [
        "execution_started:",
        "task_started:first",
        "task_finished:first",
        "task_started:second",
        "task_finished:second",
        "task_started:held",
    ]
    # task_started goes out just before the task is called; it then runs and holds.
    async with asyncio.timeout(10):
        await gate.entered.wait()

    gate.opened.set()
    rest = []
    async with asyncio.timeout(10):
        while (event := await call.read()) is not grpc.aio.EOF:
            rest.append(event)
    assert rest[-1].execution_finished.result.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(rest[-1].execution_finished.result.executed_tasks) == [
        "first",
        "second",
        "held",
        "last",
    ]
