"""WorkerService on a real in-process server: the `flowservice.Worker` helper, the backlog
gauge, request checks, and a shutdown that does not wait for idle workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flowmanager.v1 import flow_service_pb2_grpc, worker_service_pb2
from flowservice import Settings, TaskFailure, Worker, WorkItem, create_server
from flowservice.api.worker_convert import (
    assignment_to_proto,
    result_from_fail,
    start_from_proto,
)
from flowservice.dispatch import Dispatcher
from flowservice.errors import InvalidWorkRequestError
from flowservice.models import Task
from flowservice.observability import Metrics
from flowservice.server import FlowServer
from flowservice.tasks import TaskContext
from tests.api.conftest import execute_request

Stub = flow_service_pb2_grpc.FlowServiceStub


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def server(metrics: Metrics) -> AsyncIterator[FlowServer]:
    flow_server = create_server(Settings(store="memory", address="127.0.0.1:0"), metrics=metrics)
    await flow_server.start()
    yield flow_server
    await flow_server.stop(grace=None)


def worker_body(queue: str = "q", **task: Any) -> dict[str, Any]:
    step = {"name": "w", "type": "worker", "params": {"queue": queue, "n": 2}, **task}
    return {"flow": {"id": "wf", "name": "wf", "start_task": "w", "tasks": [step]}}


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        worker.stop()
        await task


async def test_sync_and_async_handlers_and_their_failures(server: FlowServer, stub: Stub) -> None:
    def double(item: WorkItem) -> dict[str, Any]:
        return {"doubled": item.params["n"] * 2}

    async def refuse(item: WorkItem) -> None:
        raise TaskFailure("declined", output={"why": "limit"}, error_type="Declined")

    async def crash(item: WorkItem) -> None:
        raise KeyError("missing")

    handlers = {"double": double, "refuse": refuse, "crash": crash}
    worker = Worker(f"127.0.0.1:{server.port}", handlers, credits=3)
    async with running(worker):
        await worker.connected.wait()
        doubled = await stub.Execute(execute_request(worker_body("double")))
        refused = await stub.Execute(execute_request(worker_body("refuse")))
        crashed = await stub.Execute(execute_request(worker_body("crash")))
    assert json_format.MessageToDict(doubled.task_results[0].output) == {"doubled": 4}
    assert refused.task_results[0].error_type == "Declined"
    assert json_format.MessageToDict(refused.task_results[0].output) == {"why": "limit"}
    assert crashed.task_results[0].error_type == "KeyError"


async def test_a_worker_started_before_the_server_connects_once_it_listens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on, yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = Worker(f"127.0.0.1:{port}", {"q": lambda item: {}}, backoff=(0.01, 0.05))
    async with running(worker):
        while not any("reconnecting" in record.getMessage() for record in caplog.records):
            await asyncio.sleep(0.01)
        late = create_server(Settings(store="memory", address=f"127.0.0.1:{port}"))
        await late.start()
        try:
            await worker.connected.wait()
            assert late.dispatcher is not None and late.dispatcher.workers_for("q") == 1
        finally:
            worker.stop()
            await late.stop(grace=None)


def backlog(metrics: Metrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "flowmanager_worker_backlog"
        for sample in family.samples
    }


async def test_the_backlog_gauge_counts_runs_waiting_per_queue(
    server: FlowServer, stub: Stub, metrics: Metrics
) -> None:
    call = stub.Execute(execute_request(worker_body("waiting")))
    while backlog(metrics) != {"waiting": 1.0}:
        await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    while backlog(metrics):
        await asyncio.sleep(0.01)


async def test_stop_ends_idle_worker_streams_instead_of_waiting_the_grace() -> None:
    flow_server = create_server(Settings(store="memory", address="127.0.0.1:0"))
    await flow_server.start()
    worker = Worker(f"127.0.0.1:{flow_server.port}", {"q": lambda item: {}}, backoff=(30, 30))
    task = asyncio.create_task(worker.run())
    await worker.connected.wait()
    # A grace longer than the test's timeout: only closing the stream ends it in time.
    await flow_server.stop(grace=600)
    worker.stop()
    await task


def test_start_violations_are_all_reported() -> None:
    start = worker_service_pb2.WorkStart(queues=["", "x" * 200], credits=0)
    with pytest.raises(InvalidWorkRequestError) as caught:
        start_from_proto(start, max_name_length=128)
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("start.queues[0]", "INVALID_QUEUE"),
        ("start.queues[1]", "INVALID_QUEUE"),
        ("start.credits", "INVALID_CREDITS"),
    ]


def test_a_failure_without_a_type_is_a_worker_failure() -> None:
    request = worker_service_pb2.FailTaskRequest(assignment_id="a")
    assignment_id, result = result_from_fail(request, max_name_length=128)
    assert (assignment_id, result.error_type) == ("a", "WorkerFailure")
    too_long = worker_service_pb2.FailTaskRequest(assignment_id="", error_type="T" * 200)
    with pytest.raises(InvalidWorkRequestError) as caught:
        result_from_fail(too_long, max_name_length=128, path="fail.")
    assert {v.field for v in caught.value.violations} == {"fail.assignment_id", "fail.error_type"}


async def test_an_assignment_message_carries_its_deadline_as_wall_time() -> None:
    ctx = TaskContext("e", "f", Task(name="t"), {"a": 1}, {"in": True}, 2, 1, {}, deadline=10.0)
    assignment = Dispatcher().submit(ctx, "q")
    message = assignment_to_proto(assignment, 4.0, datetime(2026, 1, 1, tzinfo=UTC)).assignment
    assert message.deadline.ToJsonString() == "2026-01-01T00:00:06Z"
    assert json_format.MessageToDict(message.params) == {"a": 1}
    assert message.idempotency_key == "e/t/2"
