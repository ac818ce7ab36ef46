"""Two real server processes on one PostgreSQL: what one runs, the other serves (replicas.md)."""

from __future__ import annotations

from pathlib import Path

import grpc

from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import execution_service_pb2_grpc
from flowmanager.v1 import flow_service_pb2 as flow_pb
from tests.history.replicas import slow_seed
from tests.server_process import serving

Stub = execution_service_pb2_grpc.ExecutionServiceStub
HOUR_MS = 3_600_000


async def _read_until_task1_runs(
    watch: grpc.aio.UnaryStreamCall[pb.WatchExecutionRequest, pb.WatchExecutionResponse],
) -> list[flow_pb.ExecuteStreamResponse]:
    events = []
    while True:
        response = await watch.read()
        assert isinstance(response, pb.WatchExecutionResponse), "the watch ended while it ran"
        events.append(response.event)
        if response.event.task_started.task == "task1":
            return events


async def test_a_replica_serves_live_an_execution_that_another_runs(
    postgres_url: str, tmp_path: Path
) -> None:
    flags = ["--store", postgres_url]
    with (
        serving(tmp_path / "a.log", flags) as runner,
        serving(tmp_path / "b.log", flags) as other,
    ):
        async with (
            grpc.aio.insecure_channel(runner.address) as to_runner,
            grpc.aio.insecure_channel(other.address) as to_other,
        ):
            on_runner, on_other = Stub(to_runner), Stub(to_other)
            started = await on_runner.StartExecution(slow_seed(HOUR_MS))  # runs until cancelled
            execution_id = started.execution.execution_id

            watch = on_other.WatchExecution(pb.WatchExecutionRequest(execution_id=execution_id))
            live = await _read_until_task1_runs(watch)  # task1 sleeps: this is live, not replayed
            got = await on_other.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
            assert got.execution.state == pb.EXECUTION_STATE_RUNNING
            assert got.execution.request.flow.id == "flow123"
            listed = await on_other.ListExecutions(pb.ListExecutionsRequest(flow_id="flow123"))
            assert [e.execution_id for e in listed.executions] == [execution_id]

            await on_runner.CancelExecution(pb.CancelExecutionRequest(execution_id=execution_id))
            rest = []  # the watch ends once the end is stored: cancelled, without a last event
            while isinstance(response := await watch.read(), pb.WatchExecutionResponse):
                rest.append(response.event)
            assert await watch.code() == grpc.StatusCode.OK
            ended = await on_other.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))

    assert ended.execution.state == pb.EXECUTION_STATE_FINISHED
    assert ended.execution.status == flow_pb.EXECUTION_STATUS_CANCELLED

    events = live + rest
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert all(e.execution_id == execution_id for e in events)
