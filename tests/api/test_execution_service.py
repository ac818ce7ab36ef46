"""ExecutionService against a real server and a real SQLite file (docs/history.md)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import execution_service_pb2_grpc, flow_service_pb2_grpc
from flowmanager.v1 import flow_service_pb2 as flow_pb
from flowservice.api import idempotency
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry
from tests.api.conftest import Gate, Recorder, execute_request
from tests.api.test_execute import seed_body
from tests.api.test_execution_control import error_info
from tests.history.test_store import version_1_file

Stub = execution_service_pb2_grpc.ExecutionServiceStub


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(address="127.0.0.1:0", store=str(tmp_path / "history.db"))


@pytest.fixture
def executions(channel: grpc.aio.Channel) -> Stub:
    return execution_service_pb2_grpc.ExecutionServiceStub(channel)


@pytest.fixture
def flows(channel: grpc.aio.Channel) -> flow_service_pb2_grpc.FlowServiceStub:
    return flow_service_pb2_grpc.FlowServiceStub(channel)


def start_request(body: dict[str, Any]) -> pb.StartExecutionRequest:
    return json_format.ParseDict(body, pb.StartExecutionRequest())


def gated() -> dict[str, Any]:
    """A flow that waits at `gate` until the test opens it, then runs `after`."""
    return {
        "flow": {
            "id": "gated",
            "start_task": "gate",
            "tasks": [{"name": "gate", "type": "gate"}, {"name": "after", "type": "gate"}],
            "conditions": [
                {
                    "source_task": "gate",
                    "outcome": "success",
                    "target_task_success": "after",
                    "target_task_failure": "end",
                }
            ],
        }
    }


@pytest.fixture
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Watchers that never look at the store on their own: only the store's wake-ups move them."""
    monkeypatch.setattr(idempotency, "POLL", 3600.0)


async def finished(executions: Stub, execution_id: str) -> pb.Execution:
    while True:
        got = await executions.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
        if got.execution.state == pb.EXECUTION_STATE_FINISHED:
            return got.execution
        await asyncio.sleep(0.02)


async def test_start_returns_at_once_and_the_execution_finishes_detached(
    server: FlowServer, executions: Stub, gate: Gate
) -> None:
    started = await executions.StartExecution(start_request(gated()), timeout=1)
    execution = started.execution
    assert execution.state == pb.EXECUTION_STATE_RUNNING
    assert execution.flow_id == "gated" and execution.request.flow.id == "gated"
    assert not execution.HasField("result")

    gate.opened.set()
    done = await finished(executions, execution.execution_id)
    assert done.status == flow_pb.EXECUTION_STATUS_COMPLETED
    assert done.result.execution_id == execution.execution_id
    assert list(done.result.executed_tasks) == ["gate", "after"]
    assert done.HasField("end_time")


async def test_start_validates_like_execute(server: FlowServer, executions: Stub) -> None:
    body = gated()
    body["flow"]["start_task"] = "missing"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executions.StartExecution(start_request(body))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "INVALID_FLOW"


async def test_get_of_an_unknown_id_is_not_found(server: FlowServer, executions: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executions.GetExecution(pb.GetExecutionRequest(execution_id="nope"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(raised.value)
    assert (info.reason, info.metadata["execution_id"]) == ("EXECUTION_NOT_FOUND", "nope")


async def test_execute_is_in_the_history_with_its_request(
    server: FlowServer, executions: Stub, flows: flow_service_pb2_grpc.FlowServiceStub
) -> None:
    request = execute_request(seed_body())
    response = await flows.Execute(request, metadata=[("x-request-id", "abc")])
    got = await executions.GetExecution(pb.GetExecutionRequest(execution_id=response.execution_id))
    assert got.execution.result == response
    assert got.execution.request == request
    assert got.execution.caller_request_id == "abc"
    assert got.execution.status == flow_pb.EXECUTION_STATUS_COMPLETED


async def test_list_pages_newest_first_and_filters(
    server: FlowServer, executions: Stub, flows: flow_service_pb2_grpc.FlowServiceStub
) -> None:
    ids = [(await flows.Execute(execute_request(seed_body()))).execution_id for _ in range(5)]
    failing = seed_body()
    failing["flow"]["id"] = "other"
    failing["flow"]["tasks"][0]["type"] = "explode"
    failed = (await flows.Execute(execute_request(failing))).execution_id

    seen: list[str] = []
    token = ""
    while True:
        page = await executions.ListExecutions(
            pb.ListExecutionsRequest(page_size=2, page_token=token, flow_id="flow123")
        )
        assert len(page.executions) <= 2
        seen += [e.execution_id for e in page.executions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]

    only_failed = await executions.ListExecutions(
        pb.ListExecutionsRequest(status=flow_pb.EXECUTION_STATUS_FAILED)
    )
    assert [e.execution_id for e in only_failed.executions] == [failed]
    assert not only_failed.executions[0].HasField("request")  # lists leave requests out

    everything = await executions.ListExecutions(pb.ListExecutionsRequest())
    middle = everything.executions[3].start_time
    since = await executions.ListExecutions(pb.ListExecutionsRequest(start_time_from=middle))
    assert [e.execution_id for e in since.executions] == [failed, *ids[::-1][:3]]

    with pytest.raises(grpc.aio.AioRpcError) as raised:  # a token for other filters
        first = await executions.ListExecutions(pb.ListExecutionsRequest(page_size=1))
        await executions.ListExecutions(
            pb.ListExecutionsRequest(page_size=1, page_token=first.next_page_token, flow_id="x")
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "INVALID_PAGE_TOKEN"


async def test_watch_from_zero_from_the_middle_and_reconnecting(
    server: FlowServer, executions: Stub, gate: Gate, no_polling: None
) -> None:
    started = await executions.StartExecution(start_request(gated()))
    execution_id = started.execution.execution_id
    await asyncio.wait_for(gate.entered.wait(), 30)

    # Watch while it runs: the stored events, then it waits for more; drop it.
    watch = executions.WatchExecution(pb.WatchExecutionRequest(execution_id=execution_id))
    early = [await watch.read(), await watch.read()]
    assert [m.event.sequence for m in early] == [1, 2]
    assert early[0].event.HasField("execution_started")
    watch.cancel()

    # Reconnect after the last sequence seen; the rest arrives live.
    resumed = executions.WatchExecution(
        pb.WatchExecutionRequest(execution_id=execution_id, after_sequence=2)
    )
    gate.opened.set()
    rest = [m.event async for m in resumed]
    assert [m.sequence for m in rest] == list(range(3, len(rest) + 3))
    assert rest[-1].HasField("execution_finished")

    whole = [
        m.event
        async for m in executions.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id)
        )
    ]
    assert whole == [early[0].event, early[1].event, *rest]


async def read_to_the_end(call: Any) -> list[Any]:
    """What is left of a server stream, read with `read` (a stream read once so cannot iterate)."""
    messages = []
    while (message := await call.read()) != grpc.aio.EOF:
        messages.append(message)
    return messages


async def test_a_watcher_is_woken_by_each_event_of_a_running_execution(
    server: FlowServer,
    executions: Stub,
    flows: flow_service_pb2_grpc.FlowServiceStub,
    gate: Gate,
    no_polling: None,
) -> None:
    """With polling off, the watch moves only when the store says the execution changed."""
    stream = flows.ExecuteStream(json_format.ParseDict(gated(), flow_pb.ExecuteStreamRequest()))
    started = await stream.read()
    watch = executions.WatchExecution(pb.WatchExecutionRequest(execution_id=started.execution_id))
    async with asyncio.timeout(30):
        first = [await watch.read(), await watch.read()]
        await gate.entered.wait()
        gate.opened.set()  # the rest is stored while the watcher waits
        rest = await read_to_the_end(watch)
    sent = [started, *await read_to_the_end(stream)]
    watched = [m.event for m in [*first, *rest]]
    assert watched == sent  # the same messages, in the same order, nothing twice
    assert [m.sequence for m in watched] == list(range(1, len(sent) + 1))
    assert watched[-1].HasField("execution_finished")


async def test_watch_of_an_unknown_id_is_not_found(server: FlowServer, executions: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in executions.WatchExecution(pb.WatchExecutionRequest(execution_id="nope")):
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_ends_a_running_execution_and_refuses_a_finished_one(
    server: FlowServer, executions: Stub, recorder: Recorder
) -> None:
    body = {"flow": {"start_task": "slow", "tasks": [{"name": "slow", "type": "slow"}]}}
    started = await executions.StartExecution(start_request(body))
    execution_id = started.execution.execution_id
    while not recorder.started:
        await asyncio.sleep(0.01)

    cancelled = await executions.CancelExecution(
        pb.CancelExecutionRequest(execution_id=execution_id)
    )
    assert cancelled.execution.state == pb.EXECUTION_STATE_FINISHED
    assert cancelled.execution.status == flow_pb.EXECUTION_STATUS_CANCELLED
    assert recorder.cancelled == ["slow"]

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await executions.CancelExecution(pb.CancelExecutionRequest(execution_id=execution_id))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(raised.value)
    assert (info.reason, info.metadata["status"]) == ("EXECUTION_FINISHED", "cancelled")


async def test_cancel_reaches_an_execute_call_in_flight(
    server: FlowServer,
    executions: Stub,
    flows: flow_service_pb2_grpc.FlowServiceStub,
    recorder: Recorder,
) -> None:
    body = {"flow": {"start_task": "slow", "tasks": [{"name": "slow", "type": "slow"}]}}
    call = flows.Execute(execute_request(body))
    while not recorder.started:
        await asyncio.sleep(0.01)
    running = await executions.ListExecutions(
        pb.ListExecutionsRequest(state=pb.EXECUTION_STATE_RUNNING)
    )
    [execution] = running.executions
    await executions.CancelExecution(pb.CancelExecutionRequest(execution_id=execution.execution_id))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(call, 30)
    assert raised.value.code() == grpc.StatusCode.CANCELLED
    assert error_info(raised.value).reason == "EXECUTION_CANCELLED"


async def test_a_store_that_fails_mid_stream_reports_no_end_and_refuses_new_starts(
    server: FlowServer,
    executions: Stub,
    flows: flow_service_pb2_grpc.FlowServiceStub,
    gate: Gate,
    tmp_path: Path,
) -> None:
    stream = flows.ExecuteStream(json_format.ParseDict(gated(), flow_pb.ExecuteStreamRequest()))
    started = await stream.read()
    await asyncio.wait_for(gate.entered.wait(), 30)
    # A read waits for every write queued before it: the start is in the file.
    await executions.GetExecution(pb.GetExecutionRequest(execution_id=started.execution_id))
    db = sqlite3.connect(tmp_path / "history.db", isolation_level=None)
    db.execute("ALTER TABLE events RENAME TO events_away")  # every write of an event fails
    gate.opened.set()

    received: list[flow_pb.ExecuteStreamResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        while (message := await stream.read()) != grpc.aio.EOF:
            received.append(message)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(failed.value).reason == "STORE_UNAVAILABLE"
    assert not any(m.HasField("execution_finished") for m in received)  # its end was not written

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await executions.StartExecution(start_request(gated()))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(refused.value).reason == "STORE_UNAVAILABLE"
    db.execute("ALTER TABLE events_away RENAME TO events")


async def test_a_server_opens_a_file_of_an_older_schema_with_its_executions(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    request = execute_request(seed_body())
    summary = flow_pb.ExecuteResponse(
        execution_id="old", flow_id="flow123", status=flow_pb.EXECUTION_STATUS_COMPLETED
    )
    version_1_file(tmp_path / "old.db", request.SerializeToString(), summary.SerializeToString())
    # It finished on 2026-01-01: a retention of years keeps it.
    settings = Settings(address="127.0.0.1:0", store=str(tmp_path / "old.db"), retention=3650)
    server = create_server(settings, registry)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            executions = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            old = await executions.GetExecution(pb.GetExecutionRequest(execution_id="old"))
            assert old.execution.status == flow_pb.EXECUTION_STATUS_COMPLETED
            assert (old.execution.request, old.execution.result) == (request, summary)
            new = await flow_service_pb2_grpc.FlowServiceStub(channel).Execute(request)
            listed = await executions.ListExecutions(pb.ListExecutionsRequest())
            assert [e.execution_id for e in listed.executions] == [new.execution_id, "old"]
    finally:
        await server.stop(grace=None)
