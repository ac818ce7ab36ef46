"""Invalid requests: INVALID_ARGUMENT with BadRequest field violations and ErrorInfo."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from tests.api.conftest import Gate, execute_request, stream_request

Stub = flow_service_pb2_grpc.FlowServiceStub


def details(
    error: grpc.aio.AioRpcError,
) -> tuple[list[tuple[str, str]], error_details_pb2.ErrorInfo]:
    """The (field, reason) pairs and the ErrorInfo of an error's google.rpc.Status details."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "the error carries no google.rpc.Status details"
    status = status_pb2.Status.FromString(raw)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violations: list[tuple[str, str]] = []
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            for violation in bad_request.field_violations:
                assert violation.description
                violations.append((violation.field, violation.reason))
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return violations, info


def flow(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start_task": "a",
        "tasks": [{"name": "a"}, {"name": "b"}],
        "conditions": [],
    }
    body.update(changes)
    return {"flow": body}


CASES = [
    pytest.param({}, [("flow", "MISSING_FLOW")], id="missing flow"),
    pytest.param(
        flow(tasks=[]),
        [("flow.tasks", "NO_TASKS"), ("flow.start_task", "UNKNOWN_START_TASK")],
        id="no tasks",
    ),
    pytest.param(
        flow(tasks=[{"name": "a"}, {"name": ""}]),
        [("flow.tasks[1].name", "MISSING_TASK_NAME")],
        id="empty task name",
    ),
    pytest.param(
        flow(tasks=[{"name": "a"}, {"name": "a"}]),
        [("flow.tasks[1].name", "DUPLICATE_TASK_NAME")],
        id="duplicate task name",
    ),
    pytest.param(
        flow(tasks=[{"name": "a"}, {"name": "end"}]),
        [("flow.tasks[1].name", "RESERVED_TASK_NAME")],
        id="task named end",
    ),
    pytest.param(
        flow(start_task=""), [("flow.start_task", "MISSING_START_TASK")], id="missing start"
    ),
    pytest.param(
        flow(start_task="zz"), [("flow.start_task", "UNKNOWN_START_TASK")], id="unknown start"
    ),
    pytest.param(
        flow(conditions=[{"source_task": "zz", "outcome": "success"}]),
        [("flow.conditions[0].source_task", "UNKNOWN_SOURCE_TASK")],
        id="unknown source",
    ),
    pytest.param(
        flow(conditions=[{"source_task": "a", "outcome": "success", "target_task_failure": "q"}]),
        [("flow.conditions[0].target_task_failure", "UNKNOWN_TARGET_TASK")],
        id="unknown target",
    ),
    pytest.param(
        flow(
            conditions=[
                {"source_task": "a", "outcome": "success", "target_task_failure": "b"},
                {"source_task": "a", "outcome": "failure"},
            ]
        ),
        [("flow.conditions[0].target_task_failure", "FAILURE_TARGET_NOT_LAST")],
        id="failure target on an early link of a chain",
    ),
    pytest.param(
        flow(conditions=[{"source_task": "a", "outcome": "done"}]),
        [("flow.conditions[0].outcome", "INVALID_OUTCOME")],
        id="bad outcome",
    ),
    pytest.param(
        flow(tasks=[{"name": "a", "type": "teleport"}]),
        [("flow.tasks[0].type", "UNKNOWN_TASK_TYPE")],
        id="unknown task type",
    ),
    pytest.param(
        flow(max_steps=10_001), [("flow.max_steps", "MAX_STEPS_TOO_LARGE")], id="max_steps"
    ),
]


@pytest.mark.parametrize(("body", "expected"), CASES)
async def test_execute_rejects_each_invalid_flow_with_field_violations(
    stub: Stub, body: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(body))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations, info = details(raised.value)
    assert violations == expected
    assert info.reason == "INVALID_FLOW"
    assert info.domain == "flowmanager"
    assert info.metadata["violations"] == str(len(expected))


@pytest.mark.parametrize(("body", "expected"), CASES[:3])
async def test_execute_stream_rejects_invalid_flows_before_any_event(
    stub: Stub, body: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    received: list[flow_service_pb2.ExecuteStreamResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for event in stub.ExecuteStream(stream_request(body)):
            received.append(event)

    assert received == []
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(raised.value)[0] == expected


async def test_every_problem_comes_back_in_one_error(stub: Stub) -> None:
    body = flow(
        start_task="nope",
        tasks=[{"name": "a", "type": "teleport"}, {"name": "a"}],
        conditions=[{"source_task": "ghost", "outcome": "maybe"}],
    )

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(body))

    violations, info = details(raised.value)
    assert [field for field, _ in violations] == [
        "flow.tasks[0].type",
        "flow.tasks[1].name",
        "flow.start_task",
        "flow.conditions[0].source_task",
        "flow.conditions[0].outcome",
    ]
    assert info.metadata["violations"] == "5"
    assert info.reason == "INVALID_FLOW"


async def test_a_bad_request_never_starts_a_task(stub: Stub, gate: Gate) -> None:
    body = flow(tasks=[{"name": "a", "type": "gate"}, {"name": "a"}])

    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Execute(execute_request(body))

    assert not gate.entered.is_set()
