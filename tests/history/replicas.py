"""Driving replicas from outside, as a client: start slow executions, wait for them, read them.

Shared by the kill -9 test (tests/history/test_postgres_takeover.py) and the
benchmark's takeover figure (bench/replicas.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC

import grpc
from google.protobuf import json_format

from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import execution_service_pb2_grpc
from flowmanager.v1 import flow_service_pb2 as flow_pb
from tests.api.test_execute import seed_body
from tests.server_process import RunningServer

__all__ = ["all_finished", "events", "slow_seed", "start_on", "takeover_seconds"]

Stub = execution_service_pb2_grpc.ExecutionServiceStub


def slow_seed(task_ms: int) -> pb.StartExecutionRequest:
    """The seed flow (three tasks in a row), each of its tasks sleeping `task_ms`."""
    body = seed_body()
    for task in body["flow"]["tasks"]:
        task["params"] = {"sleep_ms": task_ms}
    return json_format.ParseDict(body, pb.StartExecutionRequest())


async def start_on(server: RunningServer, count: int, task_ms: int) -> list[str]:
    """Starts `count` executions of `slow_seed(task_ms)` on `server`; their ids."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = Stub(channel)
        started = [await stub.StartExecution(slow_seed(task_ms)) for _ in range(count)]
    return [response.execution.execution_id for response in started]


async def all_finished(
    server: RunningServer, ids: Sequence[str], within: float
) -> dict[str, pb.Execution]:
    """The executions, once every one has finished; TimeoutError after `within` seconds."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = Stub(channel)
        async with asyncio.timeout(within):
            while True:
                got = {}
                for execution_id in ids:
                    request = pb.GetExecutionRequest(execution_id=execution_id)
                    got[execution_id] = (await stub.GetExecution(request)).execution
                if all(e.state == pb.EXECUTION_STATE_FINISHED for e in got.values()):
                    return got
                await asyncio.sleep(0.2)


async def events(server: RunningServer, execution_id: str) -> list[flow_pb.ExecuteStreamResponse]:
    """Every event of a finished execution, as `WatchExecution` streams them."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        watch = Stub(channel).WatchExecution(pb.WatchExecutionRequest(execution_id=execution_id))
        return [response.event async for response in watch]


def takeover_seconds(history: Sequence[flow_pb.ExecuteStreamResponse], killed_at: float) -> float:
    """Seconds from the kill of an execution's replica (a UNIX time) to its next event."""
    times = [event.time.ToDatetime(UTC).timestamp() for event in history]
    return min(t for t in times if t > killed_at) - killed_at
