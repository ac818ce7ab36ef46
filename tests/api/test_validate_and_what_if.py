"""Validate, what-if runs and expression flows, over the wire."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from tests.api.conftest import execute_request, stream_request
from tests.api.test_execute import seed_body

Stub = flow_service_pb2_grpc.FlowServiceStub


def validate_request(flow: dict[str, Any]) -> pb.ValidateRequest:
    return json_format.ParseDict({"flow": flow}, pb.ValidateRequest())


async def test_validate_accepts_the_seed_flow(stub: Stub) -> None:
    response = await stub.Validate(validate_request(seed_body()["flow"]))

    assert response.valid
    assert list(response.errors) == []
    assert list(response.warnings) == []


async def test_validate_returns_every_error_as_data_with_an_ok_status(stub: Stub) -> None:
    flow = {
        "start_task": "nope",
        "tasks": [{"name": "a", "type": "teleport"}, {"name": "a"}],
        "conditions": [{"source_task": "a", "expression": "result.output.rows =="}],
    }

    response = await stub.Validate(validate_request(flow))

    assert not response.valid
    assert [(e.field, e.reason) for e in response.errors] == [
        ("flow.tasks[0].type", "UNKNOWN_TASK_TYPE"),
        ("flow.tasks[1].name", "DUPLICATE_TASK_NAME"),
        ("flow.start_task", "UNKNOWN_START_TASK"),
        ("flow.conditions[0].expression", "INVALID_EXPRESSION"),
    ]
    assert "line 1, column 22" in response.errors[3].description


async def test_validate_without_a_flow_reports_it_missing(stub: Stub) -> None:
    response = await stub.Validate(pb.ValidateRequest())
    assert [(e.field, e.reason) for e in response.errors] == [("flow", "MISSING_FLOW")]


async def test_validate_warns_about_suspicious_but_runnable_flows(stub: Stub) -> None:
    flow = {
        "start_task": "a",
        "tasks": [{"name": "a"}, {"name": "b"}, {"name": "orphan"}],
        "conditions": [
            {
                "source_task": "a",
                "outcome": "success",
                "target_task_success": "b",
                "target_task_failure": "b",
            },
            {
                "source_task": "b",
                "outcome": "success",
                "target_task_success": "a",
                "target_task_failure": "a",
            },
        ],
    }

    response = await stub.Validate(validate_request(flow))

    assert response.valid
    assert [(w.field, w.reason) for w in response.warnings] == [
        ("flow.tasks[0]", "LOOP_WITHOUT_EXIT"),
        ("flow.tasks[1]", "LOOP_WITHOUT_EXIT"),
        ("flow.tasks[2]", "UNREACHABLE_TASK"),
    ]


@pytest.mark.parametrize(
    ("stubs", "executed", "status", "failed"),
    [
        pytest.param(
            {}, ["task1", "task2", "task3"], pb.EXECUTION_STATUS_COMPLETED, "", id="all succeed"
        ),
        pytest.param(
            {"task1": {"outcome": "TASK_OUTCOME_FAILURE", "error": "source down"}},
            ["task1"],
            pb.EXECUTION_STATUS_FAILED,
            "task1",
            id="fetch fails",
        ),
        pytest.param(
            {"task2": {"outcome": "TASK_OUTCOME_FAILURE", "error": "bad rows"}},
            ["task1", "task2"],
            pb.EXECUTION_STATUS_FAILED,
            "task2",
            id="process fails",
        ),
        pytest.param(
            {"task3": {"outcome": "TASK_OUTCOME_FAILURE"}},
            ["task1", "task2", "task3"],
            pb.EXECUTION_STATUS_FAILED,
            "task3",
            id="store fails",
        ),
    ],
)
async def test_what_if_runs_take_each_branch_of_the_seed_flow(
    stub: Stub, stubs: dict[str, Any], executed: list[str], status: int, failed: str
) -> None:
    body = {**seed_body(), "stubs": stubs}

    response = await stub.Execute(execute_request(body))

    assert list(response.executed_tasks) == executed
    assert response.status == status
    assert response.failed_task == failed
    for result in response.task_results:
        assert result.stubbed == (result.task in stubs)


async def test_a_stub_for_an_unknown_task_is_invalid(stub: Stub) -> None:
    body = {**seed_body(), "stubs": {"task9": {"outcome": "TASK_OUTCOME_SUCCESS"}}}

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(body))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'stubs["task9"]' in (raised.value.details() or "")


async def test_input_expressions_mappings_and_output_over_the_wire(stub: Stub) -> None:
    body = {
        "input": {"minimum": 15},
        "flow": {
            "id": "orders",
            "start_task": "fetch",
            "output": "{'stored': tasks.store.output.stored, 'region': input.region}",
            "tasks": [
                {"name": "fetch", "type": "fetch_data", "params": {"count": 3}},
                {
                    "name": "process",
                    "type": "process_data",
                    "input_mapping": {
                        "records": "tasks.fetch.output.records.filter(r, r.value >= input.minimum)"
                    },
                },
                {"name": "store", "type": "store_data"},
                {"name": "nothing_to_do"},
            ],
            "conditions": [
                {
                    "source_task": "fetch",
                    "expression": "size(result.output.records) == 0",
                    "target_task_success": "nothing_to_do",
                    "target_task_failure": "process",
                }
            ],
        },
    }
    body["input"]["region"] = "eu"

    events = [e async for e in stub.ExecuteStream(stream_request(body))]
    response = await stub.Execute(execute_request(body))

    assert list(response.executed_tasks) == ["fetch", "process", "store", "nothing_to_do"]
    process = response.task_results[1]
    assert [r["id"] for r in process.inputs["records"]] == [2.0, 3.0]
    assert json_format.MessageToDict(response.output) == {"stored": 2.0, "region": "eu"}
    decision = next(e.condition_evaluated for e in events if e.HasField("condition_evaluated"))
    assert decision.expression == "size(result.output.records) == 0"
    assert decision.value is False
    assert decision.next_task == "process"
    assert response.task_results[0].decision.next_task == "process"
