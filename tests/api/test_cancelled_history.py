"""A cancelled execution's history ends with `execution_finished` CANCELLED, as every other's.

Real server, real SQLite file: CancelExecution of a detached run and of an
`ExecuteStream` call in flight, and a caller going away. Each history then
holds every event, numbered without a gap, the last one the end, whose
summary `GetExecution` returns too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import execution_service_pb2_grpc, flow_service_pb2_grpc
from flowmanager.v1 import flow_service_pb2 as flow_pb
from flowservice.history import ExecutionRecord, SqliteStore, StoredEvent
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry
from tests.api.conftest import Recorder, execute_request, stream_request
from tests.api.test_execution_control import error_info
from tests.api.test_execution_service import finished, start_request

Stub = execution_service_pb2_grpc.ExecutionServiceStub

# `first` runs at once; `slow` (the recorder) sleeps until it is cancelled.
BODY: dict[str, Any] = {
    "flow": {
        "id": "cancel-me",
        "start_task": "first",
        "tasks": [
            {"name": "first", "type": "mock"},
            {"name": "slow", "type": "slow"},
            {"name": "never", "type": "mock"},
        ],
    }
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(address="127.0.0.1:0", store=str(tmp_path / "history.db"))


@pytest.fixture
def executions(channel: grpc.aio.Channel) -> Stub:
    return execution_service_pb2_grpc.ExecutionServiceStub(channel)


@pytest.fixture
def flows(channel: grpc.aio.Channel) -> flow_service_pb2_grpc.FlowServiceStub:
    return flow_service_pb2_grpc.FlowServiceStub(channel)


async def slow_started(recorder: Recorder) -> None:
    async with asyncio.timeout(30):
        while not recorder.started:
            await asyncio.sleep(0.01)


async def watched(executions: Stub, execution_id: str) -> list[flow_pb.ExecuteStreamResponse]:
    """Every event WatchExecution streams, to its end."""
    async with asyncio.timeout(30):
        request = pb.WatchExecutionRequest(execution_id=execution_id)
        return [m.event async for m in executions.WatchExecution(request)]


async def assert_ends_cancelled(
    executions: Stub, execution_id: str, executed: list[str]
) -> list[flow_pb.ExecuteStreamResponse]:
    """The watched history: numbered 1..n, ending CANCELLED after `executed`, as GetExecution."""
    events = await watched(executions, execution_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].HasField("execution_started")
    end = events[-1].execution_finished.result
    assert (end.status, end.error_type) == (flow_pb.EXECUTION_STATUS_CANCELLED, "Cancelled")
    assert (end.execution_id, list(end.executed_tasks)) == (execution_id, executed)
    got = await executions.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
    assert got.execution.status == flow_pb.EXECUTION_STATUS_CANCELLED
    assert got.execution.result == end
    return events


async def test_a_cancelled_detached_execution_ends_with_its_last_event(
    server: FlowServer, executions: Stub, recorder: Recorder
) -> None:
    started = await executions.StartExecution(start_request(BODY))
    execution_id = started.execution.execution_id
    await slow_started(recorder)

    cancelled = await executions.CancelExecution(
        pb.CancelExecutionRequest(execution_id=execution_id)
    )

    assert cancelled.execution.status == flow_pb.EXECUTION_STATUS_CANCELLED
    assert recorder.cancelled == ["slow"]
    events = await assert_ends_cancelled(executions, execution_id, ["first", "slow"])
    interrupted = events[-2].task_finished.result
    assert (interrupted.task, interrupted.outcome) == ("slow", flow_pb.TASK_OUTCOME_FAILURE)
    assert interrupted.error_type == "Cancelled"
    assert cancelled.execution.result == events[-1].execution_finished.result


async def test_the_stream_of_a_cancelled_execution_ends_with_its_end_then_cancelled(
    server: FlowServer,
    executions: Stub,
    flows: flow_service_pb2_grpc.FlowServiceStub,
    recorder: Recorder,
) -> None:
    stream = flows.ExecuteStream(stream_request(BODY))
    received = [await stream.read()]
    await slow_started(recorder)
    execution_id = received[0].execution_id

    await executions.CancelExecution(pb.CancelExecutionRequest(execution_id=execution_id))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async with asyncio.timeout(30):
            while (message := await stream.read()) is not grpc.aio.EOF:
                received.append(message)
    assert raised.value.code() == grpc.StatusCode.CANCELLED
    info = error_info(raised.value)
    assert (info.reason, info.metadata["execution_id"]) == ("EXECUTION_CANCELLED", execution_id)
    events = await assert_ends_cancelled(executions, execution_id, ["first", "slow"])
    assert received == events  # the caller saw every event, its end too


async def test_execute_of_a_cancelled_execution_fails_cancelled_and_so_does_its_repeat(
    server: FlowServer,
    executions: Stub,
    flows: flow_service_pb2_grpc.FlowServiceStub,
    recorder: Recorder,
) -> None:
    request = execute_request({**BODY, "request_id": "cancel-once"})
    call = flows.Execute(request)
    await slow_started(recorder)
    running = await executions.ListExecutions(
        pb.ListExecutionsRequest(state=pb.EXECUTION_STATE_RUNNING)
    )
    [execution] = running.executions
    await executions.CancelExecution(pb.CancelExecutionRequest(execution_id=execution.execution_id))

    for attempt in (call, flows.Execute(request)):  # the first call, then its repeat
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(attempt, 30)
        assert raised.value.code() == grpc.StatusCode.CANCELLED
        assert error_info(raised.value).reason == "EXECUTION_CANCELLED"
    await assert_ends_cancelled(executions, execution.execution_id, ["first", "slow"])


async def test_a_caller_that_goes_away_leaves_a_history_that_ends_cancelled(
    server: FlowServer,
    executions: Stub,
    flows: flow_service_pb2_grpc.FlowServiceStub,
    recorder: Recorder,
) -> None:
    stream = flows.ExecuteStream(stream_request(BODY))
    execution_id = (await stream.read()).execution_id
    await slow_started(recorder)

    stream.cancel()

    await asyncio.wait_for(finished(executions, execution_id), 30)
    events = await assert_ends_cancelled(executions, execution_id, ["first"])
    assert events[-2].task_started.task == "slow"  # it was running: no end of its own


@pytest.fixture
async def lone_server(settings: Settings, registry: TaskRegistry) -> AsyncIterator[Stub]:
    """A server that takes nothing over on its own (only CancelExecution claims), its stub."""
    flow_server = dataclasses.replace(create_server(settings, registry), resumer=None)
    await flow_server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{flow_server.port}") as channel:
        yield execution_service_pb2_grpc.ExecutionServiceStub(channel)
    await flow_server.stop(grace=None)


def abandoned(path: Path) -> str:
    """An execution a dead owner left in the file at `path`: started, its task running."""
    dead = SqliteStore(path, owner="dead", lease_seconds=0)  # expired as soon as taken
    now = datetime.now(UTC)
    started = flow_pb.ExecuteStreamResponse(execution_id="left", sequence=1)
    started.time.FromDatetime(now)
    started.execution_started.flow_id = "cancel-me"
    running = flow_pb.ExecuteStreamResponse(execution_id="left", sequence=2)
    running.time.FromDatetime(now)
    running.task_started.task, running.task_started.step = "first", 1
    request = execute_request(BODY).SerializeToString()
    dead.begin(ExecutionRecord("left", "cancel-me", request, "", "", now))
    for message in (started, running):
        dead.append("left", StoredEvent(message.sequence, message.SerializeToString()))
    dead.close()
    return "left"


async def test_cancelling_a_dead_owners_execution_records_its_last_event(
    lone_server: Stub, settings: Settings
) -> None:
    executions = lone_server
    execution_id = abandoned(Path(settings.store))

    cancelled = await executions.CancelExecution(
        pb.CancelExecutionRequest(execution_id=execution_id)
    )

    assert cancelled.execution.status == flow_pb.EXECUTION_STATUS_CANCELLED
    events = await assert_ends_cancelled(executions, execution_id, [])
    assert len(events) == 3  # started, first started, the end
    assert cancelled.execution.result == events[-1].execution_finished.result
