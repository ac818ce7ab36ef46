"""Folded and sparse histories (flowservice.api.journal), with a real server and SQLite file.

An execution nobody listens to that ends at once is stored as its last event
alone; one that runs longer, sparse (without the events its neighbours
imply). Every reader gets back exactly the events the engine emitted, which
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
    """Flows that end in each way a flow can, with every event kind."""
    return {
        "seed": seed_body(),
        "branching": _example("branching-flow.json"),
        "failure": _example("seed-failure.json"),
        "what-if": _example("what-if.json"),
        "timed-out": slow_then_more(timeout="0.2s"),
        "retry": _example("retry-flow.json"),
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


def _rows(messages: list[flow_pb.ExecuteStreamResponse]) -> list[StoredEvent]:
    return [StoredEvent(m.sequence, m.SerializeToString()) for m in messages]


def _read(rows: list[StoredEvent]) -> list[flow_pb.ExecuteStreamResponse]:
    """The stored messages as they are (bytes differ where a map's order does)."""
    return [flow_pb.ExecuteStreamResponse.FromString(r.payload) for r in rows]


def _kinds(rows: list[StoredEvent]) -> list[str | None]:
    return [m.WhichOneof("event") for m in _read(rows)]


def _sparse(sent: list[flow_pb.ExecuteStreamResponse]) -> list[flow_pb.ExecuteStreamResponse]:
    """The events a sparse history keeps: no condition_evaluated, no task_started its
    task_finished follows (the Journal writes one only when its task runs long)."""
    kept = []
    for message, after in zip(sent, [*sent[1:], None], strict=True):
        implied = message.HasField("condition_evaluated") or (
            message.HasField("task_started")
            and after is not None
            and after.HasField("task_finished")
        )
        if not implied:
            kept.append(message)
    return kept


def _assert_sparse(rows: list[StoredEvent], sent: list[flow_pb.ExecuteStreamResponse]) -> None:
    """`rows` are a sparse history of `sent`: some of its events, at least those it keeps
    (more: a task_started whose task was running at a tick of the Journal)."""
    by_sequence = {m.sequence: m for m in sent}
    stored = _read(rows)
    assert all(by_sequence[m.sequence] == m for m in stored)
    assert [m.sequence for m in stored] == sorted({m.sequence for m in stored})
    kept = {m.sequence for m in stored}
    assert all(m.sequence in kept for m in _sparse(sent))
    assert not any(m.HasField("condition_evaluated") for m in stored)


@pytest.mark.parametrize("name", sorted(_flows()))
async def test_every_history_reads_back_as_the_events_the_stream_sent(
    server: FlowServer, stub: flow_service_pb2_grpc.FlowServiceStub, name: str
) -> None:
    sent = await _streamed(stub, _flows()[name])
    store = _store(server)
    stored = await store.get(sent[0].execution_id)
    assert stored is not None and sent[-1].HasField("execution_finished")

    # The histories Execute may have written for the same run: folded and sparse.
    histories = {"one by one": sent, "sparse": _sparse(sent), "folded": sent[-1:]}
    if any(m.HasField("task_retrying") for m in sent):
        del histories["folded"]  # a retry's error and delay are in no summary: never folded
    assert len(histories["sparse"]) < len(sent)
    for kind, history in histories.items():
        rows = _rows(history)
        for after in range(len(sent)):
            # As readers ask the store: from `after` itself.
            read = stored_messages(stored, [r for r in rows if r.sequence >= after], after)
            assert read == sent[after:], (kind, after)
    # A sparse history read while it runs: each stored event with those it implies.
    sparse = histories["sparse"]
    for cut in range(1, len(sparse) + 1):
        last = sparse[cut - 1]
        implies_next = last.HasField("task_finished") and last.task_finished.result.HasField(
            "decision"
        )
        read = stored_messages(stored, _rows(sparse[:cut]))
        assert read == sent[: last.sequence + implies_next], cut
    # ExecuteStream's own history is sparse too: what it sent, but the implied.
    _assert_sparse(await store.events(sent[0].execution_id), sent)


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


async def _watched(
    executions: execution_service_pb2_grpc.ExecutionServiceStub, execution_id: str
) -> list[flow_pb.ExecuteStreamResponse]:
    request = pb.WatchExecutionRequest(execution_id=execution_id)
    return [m.event async for m in executions.WatchExecution(request)]


async def test_a_retry_is_stored_sparse_with_its_task_started(
    server: FlowServer,
    stub: flow_service_pb2_grpc.FlowServiceStub,
    executions: execution_service_pb2_grpc.ExecutionServiceStub,
) -> None:
    response = await stub.Execute(execute_request(_example("retry-flow.json")))
    rows = await _store(server).events(response.execution_id)
    watched = await _watched(executions, response.execution_id)

    assert [m.sequence for m in watched] == list(range(1, len(watched) + 1))
    assert _read(rows) == _sparse(watched)
    kinds = _kinds(rows)
    assert kinds.count("task_retrying") == 2 and kinds[-1] == "execution_finished"
    assert kinds[kinds.index("task_retrying") - 1] == "task_started"  # the retried run's
    assert "condition_evaluated" not in kinds


async def test_a_long_execution_has_its_events_stored_while_it_runs(
    server: FlowServer,
    executions: execution_service_pb2_grpc.ExecutionServiceStub,
    gate: Gate,
) -> None:
    started = await executions.StartExecution(start_request(gated()))
    execution_id = started.execution.execution_id
    store = _store(server)
    await asyncio.wait_for(gate.entered.wait(), 10)

    # Nobody watches: the events wait for the hold to run out, then are stored,
    # the running task's task_started with them.
    async with asyncio.timeout(10):
        while len(rows := await store.events(execution_id)) < 2:
            await asyncio.sleep(HOLD_SECONDS / 5)
    assert _kinds(rows) == ["execution_started", "task_started"]

    gate.opened.set()
    watched = await _watched(executions, execution_id)
    rows = await store.events(execution_id)
    # Sparse until the watcher came, one by one after: every row is an event sent.
    by_sequence = {m.sequence: m for m in watched}
    assert all(by_sequence[m.sequence] == m for m in _read(rows))
    assert [m.sequence for m in watched] == list(range(1, len(watched) + 1))
    assert watched[-1].execution_finished.result.status == flow_pb.EXECUTION_STATUS_COMPLETED


async def test_more_events_than_are_held_are_stored_sparse(
    server: FlowServer,
    stub: flow_service_pb2_grpc.FlowServiceStub,
    executions: execution_service_pb2_grpc.ExecutionServiceStub,
) -> None:
    tasks = MAX_HELD // 3 + 10  # each runs, routed by a condition: three events
    response = await stub.Execute(execute_request({"flow": linear_flow(tasks)}))
    rows = await _store(server).events(response.execution_id)
    watched = await _watched(executions, response.execution_id)

    assert len(response.executed_tasks) == tasks
    assert len(watched) == 3 * tasks + 1 and watched[-1].execution_finished.result == response
    # Stored as the events came (not folded), without those their neighbours imply:
    # each task_finished, and a task_started only if its task was running at a tick.
    kinds = _kinds(rows)
    assert kinds.count("task_finished") == tasks and "condition_evaluated" not in kinds
    assert kinds.count("task_started") < tasks // 2
    _assert_sparse(rows, watched)


async def test_a_watcher_reads_a_sparse_history_from_any_sequence(
    server: FlowServer,
    stub: flow_service_pb2_grpc.FlowServiceStub,
    executions: execution_service_pb2_grpc.ExecutionServiceStub,
) -> None:
    response = await stub.Execute(execute_request({"flow": linear_flow(MAX_HELD // 3 + 2)}))
    watched = await _watched(executions, response.execution_id)

    for after in (1, len(watched) - 3, len(watched) - 2, len(watched) - 1):
        request = pb.WatchExecutionRequest(execution_id=response.execution_id, after_sequence=after)
        assert [m.event async for m in executions.WatchExecution(request)] == watched[after:]
