"""Taking over abandoned executions: from stored event bytes back into the engine.

An abandoned execution is written to a store as a server that died would
have left it (begun, some events, no end); a `Resumer` with another engine
takes it over. Also: the status a caller sees when its execution is lost
to another process.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from flowmanager.v1 import flow_service_pb2
from flowservice.api.convert import event_to_proto, flow_from_request, task_result_to_proto
from flowservice.api.journal import stored_messages
from flowservice.api.recording import RunningExecutions
from flowservice.api.resumption import (
    NOT_RESUMABLE,
    Resumer,
    resumption_from_history,
    task_result_from_proto,
)
from flowservice.engine import Engine
from flowservice.events import ExecutionStarted
from flowservice.history import (
    RUNNING,
    ExecutionRecord,
    MemoryStore,
    StoredEvent,
    StoredExecution,
)
from flowservice.models import Branch, Decision, TaskOutcome, TaskResult
from flowservice.server import FlowServer
from flowservice.tasks import FakeTask, TaskContext, TaskRegistry
from tests.api.conftest import Gate, execute_request
from tests.api.test_execution_control import error_info

BODY: dict[str, Any] = {
    "flow": {
        "id": "chain",
        "start_task": "a",
        "tasks": [{"name": name, "type": "count"} for name in ("a", "b", "c")],
    }
}


def counting() -> tuple[TaskRegistry, list[str]]:
    runs: list[str] = []

    def count(ctx: TaskContext) -> dict[str, float]:
        runs.append(ctx.idempotency_key)
        return {"n": float(len(runs))}

    return TaskRegistry({"count": FakeTask(count)}), runs


async def abandon(
    store: MemoryStore, events_kept: int, time_allowed: float | None = None
) -> tuple[str, list[str]]:
    """Runs BODY's flow into `store` until `events_kept` events, then stops as if killed.

    `time_allowed`: the seconds the deadline of the call that ran it allowed.
    """
    registry, runs = counting()
    request = execute_request(BODY)
    execution_id = ""
    run = Engine(registry).run(flow_from_request(request))
    async with contextlib.aclosing(run):
        async for event in run:
            if isinstance(event, ExecutionStarted):
                execution_id = event.execution_id
                record = ExecutionRecord(
                    execution_id,
                    "chain",
                    request.SerializeToString(),
                    "",
                    "",
                    event.time,
                    time_allowed,
                )
                store.begin(record)
            store.append(
                execution_id, StoredEvent(event.sequence, event_to_proto(event).SerializeToString())
            )
            if event.sequence == events_kept:
                break
    return execution_id, runs


async def ended(store: MemoryStore, execution_id: str) -> str:
    async with asyncio.timeout(10):
        while (stored := await store.get(execution_id)) is not None and stored.status == RUNNING:
            await asyncio.sleep(0.01)
    assert stored is not None
    return stored.status


async def taken_over(store: MemoryStore, execution_id: str) -> tuple[str, list[str]]:
    """Another process's `Resumer` takes the execution over: how it ended, and what ran."""
    registry, runs = counting()
    running = RunningExecutions()
    resumer = Resumer(Engine(registry), store, running)
    assert await resumer.take_over(10) == 1
    status = await ended(store, execution_id)
    await running.stop()
    return status, runs


def test_a_task_result_comes_back_from_its_message_as_it_was() -> None:
    result = TaskResult(
        task="b",
        outcome=TaskOutcome.FAILURE,
        step=3,
        started_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        duration=timedelta(seconds=1.5),
        output={"n": 2.0, "nested": {"list": [1.0, "x", None, True]}},
        error="boom",
        error_type="http.503",
        attempts=2,
        stubbed=False,
        inputs={"seen": 1.0},
        decision=Decision(
            "c1", 1, "b", "failure", "", TaskOutcome.FAILURE, True, Branch.SUCCESS, "d", 2
        ),
    )
    assert task_result_from_proto(task_result_to_proto(result)) == result


async def test_an_abandoned_execution_is_taken_over_and_runs_to_its_end() -> None:
    store = MemoryStore(lease_seconds=0)  # every lease has expired at once
    # started; a started, finished; b started: cut off while b runs.
    execution_id, first_runs = await abandon(store, events_kept=4)

    assert await taken_over(store, execution_id) == (
        "completed",
        [f"{execution_id}/b/2", f"{execution_id}/c/3"],
    )

    assert first_runs == [f"{execution_id}/a/1"]
    stored = await store.get(execution_id)
    assert stored is not None
    events = stored_messages(stored, await store.events(execution_id))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    result = events[-1].execution_finished.result
    assert list(result.executed_tasks) == ["a", "b", "c"]
    assert result.task_results[0].output["n"] == 1.0  # a's output, from the history


async def test_a_resumed_execution_keeps_the_deadline_of_the_call_that_started_it() -> None:
    store = MemoryStore(lease_seconds=0)
    # Execute's caller allowed it 0.3 s; its server died after `a`, and the
    # next one takes it over once that time has passed.
    execution_id, _ = await abandon(store, events_kept=4, time_allowed=0.3)
    await asyncio.sleep(0.4)

    # Nothing runs past the caller's deadline.
    assert await taken_over(store, execution_id) == ("timed_out", [])
    stored = await store.get(execution_id)
    assert stored is not None
    summary = flow_service_pb2.ExecuteResponse.FromString(stored.summary)
    assert summary.status == flow_service_pb2.EXECUTION_STATUS_TIMED_OUT
    assert list(summary.executed_tasks) == ["a"]  # from the history


async def test_a_resumed_execution_with_time_left_of_its_deadline_runs_to_its_end() -> None:
    store = MemoryStore(lease_seconds=0)
    execution_id, _ = await abandon(store, events_kept=4, time_allowed=30.0)

    status, runs = await taken_over(store, execution_id)

    assert (status, len(runs)) == ("completed", 2)


async def test_an_execution_whose_flow_no_longer_runs_here_is_recorded_failed() -> None:
    store = MemoryStore(lease_seconds=0)
    execution_id, _ = await abandon(store, events_kept=4)
    resumer = Resumer(Engine(TaskRegistry()), store, RunningExecutions())  # no `count` type

    await resumer.take_over(10)
    assert await ended(store, execution_id) == "failed"
    stored = await store.get(execution_id)
    assert stored is not None
    summary = flow_service_pb2.ExecuteResponse.FromString(stored.summary)
    assert (summary.status, summary.error_type) == (
        flow_service_pb2.EXECUTION_STATUS_FAILED,
        NOT_RESUMABLE,
    )


async def test_a_claimed_execution_with_a_cancel_request_is_recorded_cancelled() -> None:
    store = MemoryStore(lease_seconds=0.2)
    execution_id, _ = await abandon(store, events_kept=4)
    assert await store.request_cancel(execution_id)  # its lease is live: a request
    await asyncio.sleep(0.3)  # the owner never renews
    registry, runs = counting()
    await Resumer(Engine(registry), store, RunningExecutions()).take_over(10)
    assert await ended(store, execution_id) == "cancelled"
    assert runs == []
    history = await store.events(execution_id)
    assert [e.sequence for e in history] == [1, 2, 3, 4, 5]  # its end at the next sequence
    last = flow_service_pb2.ExecuteStreamResponse.FromString(history[-1].payload)
    summary = last.execution_finished.result
    assert summary.status == flow_service_pb2.EXECUTION_STATUS_CANCELLED
    assert (summary.execution_id, summary.error_type) == (execution_id, "Cancelled")
    assert list(summary.executed_tasks) == ["a"]  # b had started, not finished
    stored = await store.get(execution_id)
    assert stored is not None and stored.summary == summary.SerializeToString()


async def test_execute_whose_execution_was_taken_over_fails_with_unavailable(
    server: FlowServer, stub: Any, gate: Gate
) -> None:
    assert server.history is not None
    running = server.history.running
    call = asyncio.ensure_future(
        stub.Execute(
            execute_request({"flow": {"start_task": "g", "tasks": [{"name": "g", "type": "gate"}]}})
        )
    )
    await gate.entered.wait()
    (execution_id,) = running.ids()
    running.lose(execution_id)  # what the keeper does when the store says so

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(raised.value)
    assert (info.reason, info.metadata["execution_id"]) == ("EXECUTION_TAKEN_OVER", execution_id)
    stored = await server.history.store.get(execution_id)
    assert stored is not None and stored.status == RUNNING  # its new owner writes its end


async def test_a_stored_task_finished_implies_its_decision_for_a_resumed_run() -> None:
    body = {
        "flow": {
            "start_task": "a",
            "tasks": [{"name": "a", "type": "count"}, {"name": "b", "type": "count"}],
            "conditions": [{"source_task": "a", "outcome": "success", "target_task_success": "b"}],
        }
    }
    registry, _ = counting()
    request = execute_request(body)
    stored_events = [
        StoredEvent(event.sequence, event_to_proto(event).SerializeToString())
        async for event in Engine(registry).run(flow_from_request(request))
    ]
    started = flow_service_pb2.ExecuteStreamResponse.FromString(stored_events[0].payload)
    record = ExecutionRecord(started.execution_id, "", b"", "", "", datetime.now(UTC))
    stored = StoredExecution(record, RUNNING, b"", None)
    # started; a started, finished (with its decision); the decision's event; ...
    # A task_finished implies its decision's event: the resumed run goes on after it.
    for stored_before in (stored_events[:3], stored_events[:4], [stored_events[2]]):
        resumed = resumption_from_history(stored, stored_before)
        assert resumed.last_sequence == 4 and [r.task for r in resumed.results] == ["a"]
    assert resumption_from_history(stored, stored_events[:2]).last_sequence == 2
