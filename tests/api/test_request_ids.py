"""Idempotent requests (AIP-155): a repeated request_id never runs a flow twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from flowmanager.v1 import execution_service_pb2_grpc, flow_service_pb2_grpc
from flowservice.api import idempotency
from flowservice.server import FlowServer
from flowservice.settings import Settings
from tests.api.conftest import Gate, execute_request, stream_request
from tests.api.test_execute import seed_body
from tests.api.test_execution_control import error_info
from tests.api.test_execution_service import gated, read_to_the_end, start_request

FlowStub = flow_service_pb2_grpc.FlowServiceStub


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(address="127.0.0.1:0", store=str(tmp_path / "history.db"))


@pytest.fixture
def executions(channel: grpc.aio.Channel) -> execution_service_pb2_grpc.ExecutionServiceStub:
    return execution_service_pb2_grpc.ExecutionServiceStub(channel)


@pytest.fixture
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeats that never look at the store on their own: only the store's wake-ups move them."""
    monkeypatch.setattr(idempotency, "POLL", 3600.0)


def with_id(body: dict[str, Any], request_id: str) -> dict[str, Any]:
    return {**body, "request_id": request_id}


async def test_a_repeat_while_running_attaches_and_after_finishing_returns_the_result(
    server: FlowServer, stub: FlowStub, gate: Gate, no_polling: None
) -> None:
    body = with_id(gated(), "order-1")
    first = asyncio.ensure_future(stub.Execute(execute_request(body)))
    await asyncio.wait_for(gate.entered.wait(), 30)
    repeat = asyncio.ensure_future(stub.Execute(execute_request(body)))
    await asyncio.sleep(0.2)  # the repeat is waiting; the gate ran once
    gate.opened.set()
    results = await asyncio.gather(first, repeat)
    assert results[0] == results[1]
    assert list(results[0].executed_tasks) == ["gate", "after"]

    later = await stub.Execute(execute_request(body))
    assert later == results[0]
    assert server.history is not None
    assert server.history.store.count == 1


async def test_a_repeat_of_execute_stream_streams_the_first_executions_events(
    server: FlowServer, stub: FlowStub
) -> None:
    body = with_id(seed_body(), "stream-1")
    first = [m async for m in stub.ExecuteStream(stream_request(body))]
    again = [m async for m in stub.ExecuteStream(stream_request(body))]
    assert again == first


async def test_a_repeat_of_execute_stream_while_running_streams_it_live(
    server: FlowServer, stub: FlowStub, gate: Gate, no_polling: None
) -> None:
    body = with_id(gated(), "stream-live")
    first = stub.ExecuteStream(stream_request(body))
    started = await first.read()
    await asyncio.wait_for(gate.entered.wait(), 30)
    repeat = stub.ExecuteStream(stream_request(body))
    async with asyncio.timeout(30):
        replayed = [await repeat.read(), await repeat.read()]  # what is stored: the start
        gate.opened.set()
        first_rest = await read_to_the_end(first)
        replayed += await read_to_the_end(repeat)
    assert replayed == [started, *first_rest]
    assert replayed[-1].HasField("execution_finished")
    assert server.history is not None
    assert server.history.store.count == 1


async def refused_as_reused(stub: FlowStub, body: dict[str, Any], request_id: str) -> str:
    """The execution named by the ALREADY_EXISTS that `body` with another input gets."""
    other = {**body, "input": {"changed": True}}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(with_id(other, request_id)))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(raised.value)
    assert info.reason == "REQUEST_ID_REUSED"
    return info.metadata["execution_id"]


async def test_the_same_id_with_another_body_while_running_is_already_exists(
    server: FlowServer, stub: FlowStub, gate: Gate
) -> None:
    first = stub.ExecuteStream(stream_request(with_id(gated(), "dup-running")))
    started = await first.read()
    assert await refused_as_reused(stub, gated(), "dup-running") == started.execution_id
    gate.opened.set()
    assert (await read_to_the_end(first))[-1].HasField("execution_finished")


async def test_the_same_id_with_another_body_is_already_exists_naming_the_execution(
    server: FlowServer, stub: FlowStub
) -> None:
    first = await stub.Execute(execute_request(with_id(seed_body(), "dup")))
    assert await refused_as_reused(stub, seed_body(), "dup") == first.execution_id


async def test_start_with_a_repeated_id_returns_the_same_execution(
    server: FlowServer,
    executions: execution_service_pb2_grpc.ExecutionServiceStub,
    stub: FlowStub,
    gate: Gate,
) -> None:
    body = with_id(gated(), "start-1")
    started = await executions.StartExecution(start_request(body))
    again = await executions.StartExecution(start_request(body))
    assert again.execution.execution_id == started.execution.execution_id
    gate.opened.set()
    # Execute with the same id and body attaches to the started execution.
    result = await stub.Execute(execute_request(body))
    assert result.execution_id == started.execution.execution_id
    assert gate.entered.is_set()


async def test_an_invalid_request_does_not_hold_its_id(server: FlowServer, stub: FlowStub) -> None:
    broken = seed_body()
    broken["flow"]["start_task"] = "missing"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(with_id(broken, "retry-me")))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    response = await stub.Execute(execute_request(with_id(seed_body(), "retry-me")))
    assert response.status == 1  # COMPLETED: it ran


async def test_a_repeat_reaches_a_new_server_on_the_same_file(
    settings: Settings, stub: FlowStub, server: FlowServer
) -> None:
    first = await stub.Execute(execute_request(with_id(seed_body(), "restart")))
    await server.stop(grace=None)
    from flowservice.server import create_server

    again_server = create_server(settings)
    await again_server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{again_server.port}") as channel:
            again = await flow_service_pb2_grpc.FlowServiceStub(channel).Execute(
                execute_request(with_id(seed_body(), "restart"))
            )
        assert again == first
    finally:
        await again_server.stop(grace=None)
