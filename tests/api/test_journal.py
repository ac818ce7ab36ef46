"""Folded histories (flowservice.api.journal) against a real server and a real SQLite file.

An execution nobody listens to that ends at once is stored as its last event
alone; every reader gets back exactly the events the engine emitted, which
ExecuteStream, sending them one by one, shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.flows import linear_flow
from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import execution_service_pb2_grpc, flow_service_pb2_grpc
from flowmanager.v1 import flow_service_pb2 as flow_pb
from flowservice.api.journal import HOLD_SECONDS, MAX_HELD, stored_messages
from flowservice.history import ExecutionStore, StoredEvent
from flowservice.server import FlowServer
from flowservice.settings import Settings
from tests.api.conftest import Gate, execute_request, stream_request
from tests.api.test_execute import seed_body
from tests.api.test_execution_control import slow_then_more
from tests.api.test_execution_service import gated, start_request

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(address="127.0.0.1:0", store=str(tmp_path / "history.db"))


@pytest.fixture
def executions(channel: grpc.aio.Channel) -> execution_service_pb2_grpc.ExecutionServiceStub:
    return execution_service_pb2_grpc.ExecutionServiceStub(channel)


def _store(server: FlowServer) -> ExecutionStore:
    assert server.history is not None
    return server.history.store


def _example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return body


def _flows() -> dict[str, dict[str, Any]]:
    """Flows that end in each way a flow without retries can: every event kind but a retry's."""
    return {
        "seed": seed_body(),
        "branching": _example("branching-flow.json"),
        "failure": _example("seed-failure.json"),
        "what-if": _example("what-if.json"),
        "timed-out": slow_then_more(timeout="0.2s"),
    }


async def _streamed(
    stub: flow_service_pb2_grpc.FlowServiceStub, body: dict[str, Any]
) -> list[flow_pb.ExecuteStreamResponse]:
    """What ExecuteStream sends for `body`, to its end (a timed-out one's status aside)."""
    sent: list[flow_pb.ExecuteStreamResponse] = []
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for message in stub.ExecuteStream(stream_request(body)):
            sent.append(message)
    return sent


@pytest.mark.parametrize("name", sorted(_flows()))
async def test_a_folded_history_reads_back_as_the_events_the_stream_sent(
    server: FlowServer, stub: flow_service_pb2_grpc.FlowServiceStub, name: str
) -> None:
    sent = await _streamed(stub, _flows()[name])
    store = _store(server)
    stored = await store.get(sent[0].execution_id)
    assert stored is not None and sent[-1].HasField("execution_finished")

    # The history Execute would have written for the same run: its last event alone.
    folded = [StoredEvent(sent[-1].sequence, sent[-1].SerializeToString())]

    assert len(sent) > 2
    assert stored_messages(stored, folded) == sent
    assert stored_messages(stored, folded, after=2) == sent[2:]
    assert stored_messages(stored, folded, after=len(sent) - 1) == sent[-1:]


async def test_execute_stores_its_last_event_alone_and_watch_unfolds_it(
    server: FlowServer,
    stub: flow_service_pb2_grpc.FlowServiceStub,
    executions: execution_service_pb2_grpc.ExecutionServiceStub,
) -> None:
    response = await stub.Execute(execute_request(seed_body()))
    rows = await _store(server).events(response.execution_id)

    assert [
        flow_pb.ExecuteStreamResponse.FromString(r.payload).WhichOneof("event") for r in rows
    ] == ["execution_finished"]
    watched = [
        m.event
        async for m in executions.WatchExecution(
            pb.WatchExecutionRequest(execution_id=response.execution_id)
        )
    ]
    assert [m.sequence for m in watched] == list(range(1, rows[0].sequence + 1))
    assert watched[-1].execution_finished.result == response
    kinds = [m.WhichOneof("event") for m in watched]
    assert kinds[:3] == ["execution_started", "task_started", "task_finished"]
    assert [m.task_finished.result for m in watched if m.HasField("task_finished")] == list(
        response.task_results
    )
    middle = [
        m.event
        async for m in executions.WatchExecution(
            pb.WatchExecutionRequest(execution_id=response.execution_id, after_sequence=4)
        )
    ]
    assert middle == watched[4:]


async def test_a_retry_has_the_events_stored_one_by_one(
    server: FlowServer, stub: flow_service_pb2_grpc.FlowServiceStub
) -> None:
    response = await stub.Execute(execute_request(_example("retry-flow.json")))
    rows = await _store(server).events(response.execution_id)

    assert [r.sequence for r in rows] == list(range(1, len(rows) + 1))
    kinds = [flow_pb.ExecuteStreamResponse.FromString(r.payload).WhichOneof("event") for r in rows]
    assert kinds.count("task_retrying") == 2 and kinds[-1] == "execution_finished"


async def test_a_long_execution_has_its_events_stored_while_it_runs(
    server: FlowServer,
    executions: execution_service_pb2_grpc.ExecutionServiceStub,
    gate: Gate,
) -> None:
    started = await executions.StartExecution(start_request(gated()))
    execution_id = started.execution.execution_id
    store = _store(server)
    await asyncio.wait_for(gate.entered.wait(), 10)

    # Nobody watches: the events wait for the hold to run out, then are stored.
    async with asyncio.timeout(10):
        while len(rows := await store.events(execution_id)) < 2:
            await asyncio.sleep(HOLD_SECONDS / 5)
    kinds = [flow_pb.ExecuteStreamResponse.FromString(r.payload).WhichOneof("event") for r in rows]
    assert kinds == ["execution_started", "task_started"]

    gate.opened.set()
    watched = [
        m.event
        async for m in executions.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id)
        )
    ]
    rows = await store.events(execution_id)
    assert [r.sequence for r in rows] == [m.sequence for m in watched]
    assert watched[-1].execution_finished.result.status == flow_pb.EXECUTION_STATUS_COMPLETED


async def test_more_events_than_are_held_are_stored_one_by_one(
    server: FlowServer, stub: flow_service_pb2_grpc.FlowServiceStub
) -> None:
    tasks = MAX_HELD // 3 + 10  # each runs, routed by a condition: three events
    response = await stub.Execute(execute_request({"flow": linear_flow(tasks)}))
    rows = await _store(server).events(response.execution_id)

    assert len(response.executed_tasks) == tasks
    assert [r.sequence for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) > MAX_HELD
