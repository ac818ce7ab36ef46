"""Every limit: the status code a caller gets and the details naming the limit."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from flowservice.limits import Limits
from flowservice.settings import Settings
from tests.api.conftest import Gate, execute_request

Stub = flow_service_pb2_grpc.FlowServiceStub

LIMITS = Limits(
    max_tasks=5,
    max_conditions=3,
    max_name_length=16,
    max_steps_ceiling=50,
    default_max_steps=10,
    max_attempts=4,
    max_output_bytes=1_000,
    max_request_bytes=20_000,
    max_concurrent_executions=2,
    max_results_bytes=3_000,
    max_expression_seconds=0.001,
)


@pytest.fixture
def settings() -> Settings:
    return Settings(store="memory", address="127.0.0.1:0", limits=LIMITS)


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "the error carries no google.rpc.Status details"
    info = error_details_pb2.ErrorInfo()
    fields: list[str] = []
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields = [violation.field for violation in bad_request.field_violations]
    return info, fields


def tasks(count: int) -> list[dict[str, Any]]:
    return [{"name": f"t{i}"} for i in range(count)]


@pytest.mark.parametrize(
    ("flow", "field", "limit", "value"),
    [
        pytest.param(
            {"start_task": "t0", "tasks": tasks(6)}, "flow.tasks", "max_tasks", "5", id="tasks"
        ),
        pytest.param(
            {
                "start_task": "t0",
                "tasks": tasks(2),
                "conditions": [{"source_task": "t0", "outcome": "success"}] * 4,
            },
            "flow.conditions",
            "max_conditions",
            "3",
            id="conditions",
        ),
        pytest.param(
            {"start_task": "t0", "tasks": [{"name": "t0"}, {"name": "x" * 17}]},
            "flow.tasks[1].name",
            "max_name_length",
            "16",
            id="name length",
        ),
        pytest.param(
            {"start_task": "t0", "tasks": tasks(1), "max_steps": 51},
            "flow.max_steps",
            "max_steps_ceiling",
            "50",
            id="step ceiling",
        ),
        pytest.param(
            {"start_task": "t0", "tasks": [{"name": "t0", "retry": {"max_attempts": 5}}]},
            "flow.tasks[0].retry.max_attempts",
            "max_attempts",
            "4",
            id="attempts",
        ),
    ],
)
async def test_definition_limits_are_invalid_argument_naming_the_limit(
    stub: Stub, flow: dict[str, Any], field: str, limit: str, value: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request({"flow": flow}))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = details(raised.value)
    assert field in fields
    assert info.metadata["limit"] == limit
    assert info.metadata["limit_value"] == value
    assert f"({limit})" in (raised.value.details() or "") or len(fields) > 1


async def test_a_request_over_the_size_limit_is_resource_exhausted(stub: Stub, gate: Gate) -> None:
    body = {
        "flow": {
            "start_task": "t0",
            "tasks": [{"name": "t0", "type": "gate", "description": "x" * 30_000}],
        }
    }

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(body))

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "20000" in (raised.value.details() or "")
    assert not gate.entered.is_set()


async def test_an_output_over_the_limit_fails_the_task_with_a_clear_reason(stub: Stub) -> None:
    body = {
        "flow": {
            "start_task": "t0",
            "tasks": [{"name": "t0", "params": {"output": {"b": "x" * 2_000}}}],
        }
    }

    response = await stub.Execute(execute_request(body))

    assert response.status == pb.EXECUTION_STATUS_FAILED
    result = response.task_results[0]
    assert result.error_type == "OutputTooLarge"
    assert response.error_type == "OutputTooLarge"


async def test_the_default_step_limit_comes_from_the_settings(stub: Stub) -> None:
    body = {
        "flow": {
            "start_task": "t0",
            "tasks": tasks(1),
            "conditions": [
                {"source_task": "t0", "outcome": "success", "target_task_success": "t0"}
            ],
        }
    }

    response = await stub.Execute(execute_request(body))

    assert len(response.executed_tasks) == 10
    assert response.status == pb.EXECUTION_STATUS_FAILED
    assert response.error_type == "StepLimitReached"
    assert response.failed_task == ""


async def test_outputs_past_the_results_limit_fail_the_execution(stub: Stub) -> None:
    body = {
        "flow": {
            "start_task": "t0",
            "max_steps": 50,
            "tasks": [{"name": "t0", "params": {"output": {"b": "x" * 900}}}],
            "conditions": [
                {"source_task": "t0", "outcome": "success", "target_task_success": "t0"}
            ],
        }
    }

    response = await stub.Execute(execute_request(body))

    # Three outputs of about 910 bytes fit in 3,000; the fourth does not.
    assert list(response.executed_tasks) == ["t0"] * 4
    assert response.status == pb.EXECUTION_STATUS_FAILED
    assert response.failed_task == "t0"
    assert response.error_type == "ResultsTooLarge"
    assert response.task_results[-1].error_type == "ResultsTooLarge"
    assert not response.task_results[-1].HasField("output")


async def test_expressions_past_the_time_budget_fail_the_execution(stub: Stub) -> None:
    body = {
        "flow": {
            "start_task": "t0",
            "max_steps": 50,
            "tasks": [{"name": "t0"}],
            "conditions": [
                {
                    "source_task": "t0",
                    "expression": "input.l.all(x, input.l.all(y, true))",
                    "target_task_success": "t0",
                }
            ],
        },
        "input": {"l": list(range(99))},
    }

    response = await stub.Execute(execute_request(body))

    # 50 evaluations of 9,801 iterations each take far more than 1 ms.
    assert response.status == pb.EXECUTION_STATUS_FAILED
    assert response.error_type == "ExpressionBudgetSpent"
    assert response.failed_task == ""
    assert len(response.executed_tasks) < 50


async def test_past_the_concurrency_limit_calls_are_shed_at_once(stub: Stub, gate: Gate) -> None:
    body = {"flow": {"start_task": "h", "tasks": [{"name": "h", "type": "gate"}]}}
    held = [asyncio.ensure_future(stub.Execute(execute_request(body))) for _ in range(2)]
    async with asyncio.timeout(5):
        await gate.entered.wait()
        while True:  # both held executions admitted
            try:
                await stub.Execute(execute_request(body), timeout=0.5)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    shed = error
                    break

    info, _ = details(shed)
    assert info.reason == "TOO_MANY_EXECUTIONS"
    assert info.metadata["limit"] == "max_concurrent_executions"
    assert info.metadata["limit_value"] == "2"

    gate.opened.set()
    async with asyncio.timeout(10):
        responses = await asyncio.gather(*held)
    assert all(r.status == pb.EXECUTION_STATUS_COMPLETED for r in responses)
