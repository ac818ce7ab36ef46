"""Deadlines, cancellation, retries on the wire, and a blocking task, against a real server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from flowservice.server import FlowServer
from flowservice.tasks import TaskContext, TaskRegistry
from tests.api.conftest import Gate, Recorder, execute_request, stream_request
from tests.api.test_execute import seed_body

Stub = flow_service_pb2_grpc.FlowServiceStub


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "the error carries no google.rpc.Status details"
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the details")


def slow_then_more(**flow_fields: Any) -> dict[str, Any]:
    return {
        "flow": {
            "start_task": "slow",
            "tasks": [{"name": "slow", "type": "slow"}, {"name": "next", "type": "slow"}],
            **flow_fields,
        }
    }


async def test_a_deadline_shorter_than_the_flow_cancels_it(stub: Stub, recorder: Recorder) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(slow_then_more()), timeout=0.3)

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    async with asyncio.timeout(5):
        await recorder.any_cancelled.wait()
    assert recorder.cancelled == ["slow"]
    await asyncio.sleep(0.2)  # had anything been left running, "next" would start now
    assert recorder.started == ["slow"]


async def test_the_flow_timeout_ends_execute_with_deadline_exceeded_and_details(
    stub: Stub, recorder: Recorder
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(slow_then_more(timeout="0.2s")), timeout=10)

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "the flow's timeout of 0.2 s" in (raised.value.details() or "")
    info = error_info(raised.value)
    assert info.reason == "DEADLINE_EXCEEDED"
    assert info.metadata["limit"] == "flow.timeout"
    assert info.metadata["limit_value"] == "0.2s"
    assert info.metadata["executed_tasks"] == "slow"
    assert info.metadata["execution_id"]
    assert recorder.started == ["slow"]
    assert recorder.cancelled == ["slow"]


async def test_a_timed_out_stream_sends_the_finished_event_then_deadline_exceeded(
    stub: Stub,
) -> None:
    call = stub.ExecuteStream(stream_request(slow_then_more(timeout="0.2s")), timeout=10)
    events = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for event in call:
            events.append(event)

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    last = events[-1].execution_finished.result
    assert last.status == pb.EXECUTION_STATUS_TIMED_OUT
    assert list(last.executed_tasks) == ["slow"]
    assert last.task_results[0].error_type == "DeadlineExceeded"


async def test_closing_a_stream_after_the_first_event_stops_the_execution(
    stub: Stub, gate: Gate
) -> None:
    body = {"flow": {"start_task": "held", "tasks": [{"name": "held", "type": "gate"}]}}
    call = stub.ExecuteStream(stream_request(body))
    first = await call.read()
    assert first.WhichOneof("event") == "execution_started"
    async with asyncio.timeout(5):
        await gate.entered.wait()

    call.cancel()

    async with asyncio.timeout(5):
        while not gate.cancelled:
            await asyncio.sleep(0.005)
    assert gate.cancelled == 1
    again = await stub.Execute(execute_request(seed_body()))
    assert again.status == pb.EXECUTION_STATUS_COMPLETED


async def test_cancelling_execute_cancels_the_running_task(stub: Stub, recorder: Recorder) -> None:
    call = stub.Execute(execute_request(slow_then_more()))
    async with asyncio.timeout(5):
        while not recorder.started:
            await asyncio.sleep(0.005)

    call.cancel()

    async with asyncio.timeout(5):
        await recorder.any_cancelled.wait()
    assert recorder.started == ["slow"]
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_the_stream_shows_each_retry_with_its_error_and_delay(stub: Stub) -> None:
    body = {
        "flow": {
            "start_task": "flaky",
            "tasks": [
                {
                    "name": "flaky",
                    "params": {"fail_attempts": 2, "error": "503 from upstream"},
                    "retry": {"max_attempts": 3, "initial_interval": "0.01s"},
                }
            ],
        }
    }

    events = [event async for event in stub.ExecuteStream(stream_request(body))]

    assert [event.WhichOneof("event") for event in events] == [
        "execution_started",
        "task_started",
        "task_retrying",
        "task_retrying",
        "task_finished",
        "execution_finished",
    ]
    first, second = events[2].task_retrying, events[3].task_retrying
    assert (first.task, first.attempt, first.error) == ("flaky", 1, "503 from upstream")
    assert first.error_type == "TaskFailure"
    assert first.delay.ToMilliseconds() == 10
    assert (second.attempt, second.delay.ToMilliseconds()) == (2, 20)
    result = events[4].task_finished.result
    assert result.attempts == 3
    assert result.outcome == pb.TASK_OUTCOME_SUCCESS
    assert events[-1].execution_finished.result.status == pb.EXECUTION_STATUS_COMPLETED


@pytest.fixture
def blocked() -> threading.Event:
    return threading.Event()


@pytest.fixture
def registry(registry: TaskRegistry, blocked: threading.Event) -> TaskRegistry:
    def blocking(ctx: TaskContext) -> dict[str, bool]:
        # Sync code that blocks its thread, as time.sleep or a blocking client would.
        return {"released": blocked.wait(timeout=20)}

    registry.register("blocking", blocking)
    return registry


async def test_a_blocking_task_stalls_neither_other_executions_nor_health_checks(
    stub: Stub, channel: grpc.aio.Channel, blocked: threading.Event
) -> None:
    body = {"flow": {"start_task": "b", "tasks": [{"name": "b", "type": "blocking"}]}}
    stuck = asyncio.ensure_future(stub.Execute(execute_request(body)))
    await asyncio.sleep(0.05)

    # The blocked thread is only released after these complete: were the
    # event loop blocked, they could not, and the timeout would fire.
    async with asyncio.timeout(10):
        other = await stub.Execute(execute_request(seed_body()))
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert not stuck.done()
    assert other.status == pb.EXECUTION_STATUS_COMPLETED
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    blocked.set()
    async with asyncio.timeout(10):
        response = await stuck
    assert response.task_results[0].output["released"] is True


async def test_server_keeps_serving_after_many_cancelled_calls(
    server: FlowServer, stub: Stub
) -> None:
    for _ in range(20):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Execute(execute_request(slow_then_more()), timeout=0.02)
    async with asyncio.timeout(5):
        while server.engine.running:
            await asyncio.sleep(0.01)
    response = await stub.Execute(execute_request(seed_body()))
    assert response.status == pb.EXECUTION_STATUS_COMPLETED
