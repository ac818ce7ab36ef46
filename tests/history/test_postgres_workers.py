"""Worker queues shared by replicas: a worker on replica B runs the worker tasks of replica A.

Two real server processes on one PostgreSQL, and a real worker process
(tests/e2e/worker_process.py) connected to B only; the flows run on A.
The tests wait on the lines the worker prints and on the calls' answers,
never on time.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import json_format

from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import (
    execution_service_pb2_grpc,
    flow_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from flowmanager.v1 import flow_service_pb2 as flow_pb
from tests.e2e.test_task_workers import ManualWorker, WorkerProcess, reason_of, worker_flow
from tests.server_process import RunningServer, serving

CALL_TIMEOUT = 60.0
"""Seconds a call may take: a bound, not a measurement."""


@contextmanager
def replicas_and_worker(
    postgres_url: str, tmp_path: Path, mode: str
) -> Iterator[tuple[RunningServer, WorkerProcess, RunningServer]]:
    """Replicas A and B, and a worker in `mode` connected to B only."""
    flags = ["--store", postgres_url]
    with (
        serving(tmp_path / "a.log", flags) as a,
        serving(tmp_path / "b.log", flags) as b,
    ):
        command = [sys.executable, "-m", "tests.e2e.worker_process", b.address, mode, "on-b"]
        worker = WorkerProcess(command)
        try:
            worker.expect("READY")
            yield a, worker, b
        finally:
            worker.stop()


async def execute_on(server: RunningServer, flow: dict[str, Any]) -> flow_pb.ExecuteResponse:
    request = json_format.ParseDict({"flow": flow}, flow_pb.ExecuteRequest())
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = flow_service_pb2_grpc.FlowServiceStub(channel)
        return await stub.Execute(request, timeout=CALL_TIMEOUT)


def rows(postgres_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(postgres_url) as db:
        return db.execute("SELECT task_id, state FROM worker_tasks").fetchall()


async def test_a_worker_on_another_replica_completes_the_task(
    postgres_url: str, tmp_path: Path
) -> None:
    with replicas_and_worker(postgres_url, tmp_path, "echo") as (a, worker, _):
        response = await execute_on(a, worker_flow())
        assigned = worker.expect("ASSIGNED")

    assert response.status == flow_pb.EXECUTION_STATUS_COMPLETED
    output = json_format.MessageToDict(response.task_results[0].output)
    assert output == {"worker": "on-b", "params": {"queue": "q", "amount": 3}, "attempt": 1}
    assert assigned.split()[1]  # the assignment id A gave
    assert rows(postgres_url) == []  # A collected the result: nothing is left behind


async def test_a_worker_failure_on_another_replica_fails_the_task(
    postgres_url: str, tmp_path: Path
) -> None:
    with replicas_and_worker(postgres_url, tmp_path, "fail") as (a, _, _):
        response = await execute_on(a, worker_flow())

    assert response.status == flow_pb.EXECUTION_STATUS_FAILED
    failed = response.task_results[0]
    assert failed.error_type == "CardDeclined"
    assert json_format.MessageToDict(failed.output) == {"worker": "on-b"}


async def test_cancelling_the_execution_on_its_replica_cancels_the_task_on_the_worker(
    postgres_url: str, tmp_path: Path
) -> None:
    with replicas_and_worker(postgres_url, tmp_path, "hang") as (a, worker, _):
        request = json_format.ParseDict({"flow": worker_flow()}, pb.StartExecutionRequest())
        async with grpc.aio.insecure_channel(a.address) as channel:
            stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            started = await stub.StartExecution(request, timeout=CALL_TIMEOUT)
            assignment_id = worker.expect("ASSIGNED").split()[1]
            assert rows(postgres_url) == [(assignment_id, "taken")]

            execution_id = started.execution.execution_id
            await stub.CancelExecution(
                pb.CancelExecutionRequest(execution_id=execution_id), timeout=CALL_TIMEOUT
            )
            cancelled = worker.expect("CANCELLED")

        assert cancelled == f"CANCELLED {assignment_id}"
        assert rows(postgres_url) == [(assignment_id, "cancelled")]


async def test_the_attempts_timeout_cancels_the_task_on_the_worker(
    postgres_url: str, tmp_path: Path
) -> None:
    with replicas_and_worker(postgres_url, tmp_path, "hang") as (a, worker, _):
        response = await execute_on(a, worker_flow(timeout="1s"))
        assignment_id = worker.expect("ASSIGNED").split()[1]
        cancelled = worker.expect("CANCELLED")

    assert response.status == flow_pb.EXECUTION_STATUS_FAILED
    assert response.task_results[0].error_type == "TaskTimeout"
    assert cancelled == f"CANCELLED {assignment_id}"
    assert rows(postgres_url) == [(assignment_id, "expired")]


async def test_complete_task_on_any_replica_reaches_a_task_another_replicas_worker_holds(
    postgres_url: str, tmp_path: Path
) -> None:
    flags = ["--store", postgres_url]
    with (
        serving(tmp_path / "a.log", flags) as a,
        serving(tmp_path / "b.log", flags) as b,
    ):
        async with (
            grpc.aio.insecure_channel(a.address) as to_a,
            grpc.aio.insecure_channel(b.address) as to_b,
        ):
            worker = ManualWorker(to_b, "manual")  # one credit, on B
            await worker.next("started")
            first = asyncio.create_task(execute_on(a, worker_flow("manual")))
            assignment = await worker.next("assignment")
            assert assignment.idempotency_key == f"{assignment.execution_id}/pay/1"

            # A runs the execution, but only B holds the assignment: the row takes the result.
            on_a = worker_service_pb2_grpc.WorkerServiceStub(to_a)
            complete = worker_service_pb2.CompleteTaskRequest(
                assignment_id=assignment.assignment_id
            )
            complete.output.update({"by": "hand"})
            await on_a.CompleteTask(complete, timeout=CALL_TIMEOUT)
            response = await first
            with pytest.raises(grpc.aio.AioRpcError) as caught:  # applied once
                await on_a.CompleteTask(complete, timeout=CALL_TIMEOUT)

            # B's worker is free again: the next task reaches it.
            second = asyncio.create_task(execute_on(a, worker_flow("manual")))
            again = await worker.next("assignment")
            worker.send(
                worker_service_pb2.WorkRequest(
                    complete=worker_service_pb2.CompleteTaskRequest(
                        assignment_id=again.assignment_id
                    )
                )
            )
            assert (await second).status == flow_pb.EXECUTION_STATUS_COMPLETED
            worker.send(None)

    assert response.status == flow_pb.EXECUTION_STATUS_COMPLETED
    assert json_format.MessageToDict(response.task_results[0].output) == {"by": "hand"}
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "ASSIGNMENT_NOT_FOUND"
    assert again.assignment_id != assignment.assignment_id


async def test_a_replica_killed_while_its_worker_holds_the_task_fails_it_as_worker_lost(
    postgres_url: str, tmp_path: Path
) -> None:
    with replicas_and_worker(postgres_url, tmp_path, "hang") as (a, worker, b):
        run = asyncio.create_task(execute_on(a, worker_flow()))
        await asyncio.to_thread(worker.expect, "ASSIGNED")
        b.process.kill()  # its worker holds the task; nothing will answer it
        response = await run

    assert response.status == flow_pb.EXECUTION_STATUS_FAILED
    assert response.task_results[0].error_type == "WorkerLost"
    assert rows(postgres_url) == []  # A collected the failure
