"""Property test: random flows built from valid parts never produce a server error,
and the stream's executed tasks always equal the response's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from flowservice.server import create_server
from flowservice.settings import Settings

EXPRESSIONS = [
    "result.outcome == 'success'",
    "result.attempts >= 1",
    "has(result.output.n) && result.output.n > 1.0",
    "input.flag == true",
    "size(tasks) > 2",
    "result.error.contains('x')",
]
TARGET_EXTRAS = ["end", ""]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(min_value=1, max_value=6))
    names = [f"t{i}" for i in range(count)]
    targets = st.sampled_from(names + TARGET_EXTRAS)
    tasks = []
    for name in names:
        params: dict[str, Any] = {}
        if draw(st.booleans()):
            params["fail"] = draw(st.booleans())
            params["error"] = draw(st.sampled_from(["x marks it", "plain"]))
        if draw(st.booleans()):
            params["output"] = {"n": draw(st.integers(min_value=0, max_value=3))}
        task: dict[str, Any] = {"name": name, "params": params}
        if draw(st.booleans()):
            task["retry"] = {"max_attempts": draw(st.integers(1, 3)), "initial_interval": "0.001s"}
        tasks.append(task)
    conditions = []
    for name in names:
        links = draw(st.integers(min_value=0, max_value=2))
        for link in range(links):
            condition: dict[str, Any] = {
                "source_task": name,
                "target_task_success": draw(targets),
            }
            if draw(st.booleans()):
                condition["outcome"] = draw(st.sampled_from(["success", "failure"]))
            else:
                condition["expression"] = draw(st.sampled_from(EXPRESSIONS))
            if link == links - 1:
                condition["target_task_failure"] = draw(targets)
            conditions.append(condition)
    stubs = {
        name: {"outcome": draw(st.sampled_from(["TASK_OUTCOME_SUCCESS", "TASK_OUTCOME_FAILURE"]))}
        for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    }
    return {
        "input": {"flag": draw(st.booleans())},
        "stubs": stubs,
        "flow": {
            "id": "random",
            "start_task": draw(st.sampled_from(names)),
            "tasks": tasks,
            "conditions": conditions,
            "max_steps": draw(st.integers(min_value=1, max_value=20)),
        },
    }


@pytest.fixture(scope="module")
def stub() -> Iterator[flow_service_pb2_grpc.FlowServiceStub]:
    """A real server on its own event loop in a thread, and a blocking client."""
    ready = threading.Event()
    port: list[int] = []
    loop = asyncio.new_event_loop()
    stopped = asyncio.Event()

    async def serve() -> None:
        server = create_server(Settings(store="memory", address="127.0.0.1:0"))
        await server.start()
        port.append(server.port)
        ready.set()
        await stopped.wait()
        await server.stop(grace=None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(timeout=10)
    with grpc.insecure_channel(f"127.0.0.1:{port[0]}") as channel:
        yield flow_service_pb2_grpc.FlowServiceStub(channel)
    loop.call_soon_threadsafe(stopped.set)
    thread.join(timeout=10)
    loop.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=requests())
def test_random_valid_flows_never_fail_the_call_and_stream_matches_execute(
    stub: flow_service_pb2_grpc.FlowServiceStub, body: dict[str, Any]
) -> None:
    request = json_format.ParseDict(body, pb.ExecuteRequest())
    stream_request = json_format.ParseDict(body, pb.ExecuteStreamRequest())

    response = stub.Execute(request, timeout=10)
    events = list(stub.ExecuteStream(stream_request, timeout=10))

    assert response.status in (pb.EXECUTION_STATUS_COMPLETED, pb.EXECUTION_STATUS_FAILED)
    streamed = [e.task_finished.result.task for e in events if e.HasField("task_finished")]
    finished = events[-1].execution_finished.result
    assert streamed == list(finished.executed_tasks) == list(response.executed_tasks)
    assert finished.status == response.status
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len(response.executed_tasks) <= body["flow"]["max_steps"]
