"""Execute against a real server on 127.0.0.1, through the generated client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from tests.api.conftest import execute_request

EXAMPLES = Path(__file__).parents[2] / "examples"
Stub = flow_service_pb2_grpc.FlowServiceStub


def seed_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / "seed-flow.json").read_text())
    return body


async def test_the_seed_example_sent_unchanged_completes(stub: Stub) -> None:
    response = await stub.Execute(execute_request(seed_body()))

    assert response.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(response.executed_tasks) == ["task1", "task2", "task3"]
    assert response.flow_id == "flow123"
    assert response.failed_task == ""
    assert response.error_type == ""
    assert response.execution_id
    assert [r.task for r in response.task_results] == ["task1", "task2", "task3"]
    assert all(r.outcome == pb.TASK_OUTCOME_SUCCESS for r in response.task_results)
    assert all(r.HasField("start_time") and r.HasField("duration") for r in response.task_results)


async def test_the_seed_failure_case_is_a_failed_result_not_an_rpc_error(stub: Stub) -> None:
    body = seed_body()
    body["flow"]["tasks"][1]["params"] = {"fail": True, "error": "processing broke"}

    response = await stub.Execute(execute_request(body))

    assert response.status == pb.EXECUTION_STATUS_FAILED
    assert list(response.executed_tasks) == ["task1", "task2"]
    assert response.failed_task == "task2"
    assert "processing broke" in response.error
    assert response.error_type == "TaskFailure"
    assert response.task_results[1].outcome == pb.TASK_OUTCOME_FAILURE
    assert response.task_results[1].error == "processing broke"


async def test_a_failure_routed_to_a_recovery_task_completes(stub: Stub) -> None:
    body = {
        "flow": {
            "id": "payments",
            "start_task": "charge",
            "tasks": [
                {"name": "charge", "params": {"fail": True, "error": "card declined"}},
                {"name": "refund", "params": {"output": {"refunded": True}}},
            ],
            "conditions": [
                {
                    "source_task": "charge",
                    "outcome": "success",
                    "target_task_success": "end",
                    "target_task_failure": "refund",
                }
            ],
        }
    }

    response = await stub.Execute(execute_request(body))

    assert response.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(response.executed_tasks) == ["charge", "refund"]
    assert response.task_results[1].output["refunded"] is True


async def test_a_loop_that_hits_the_step_limit_fails_with_a_reason(stub: Stub) -> None:
    body = {
        "flow": {
            "start_task": "poll",
            "max_steps": 25,
            "tasks": [{"name": "poll"}],
            "conditions": [
                {"source_task": "poll", "outcome": "success", "target_task_success": "poll"}
            ],
        }
    }

    response = await stub.Execute(execute_request(body))

    assert response.status == pb.EXECUTION_STATUS_FAILED
    assert list(response.executed_tasks) == ["poll"] * 25
    assert response.error_type == "StepLimitReached"


async def test_an_exception_inside_a_task_fails_the_flow_and_the_server_carries_on(
    stub: Stub,
) -> None:
    body = {"flow": {"start_task": "a", "tasks": [{"name": "a", "type": "explode"}]}}

    response = await stub.Execute(execute_request(body))

    assert response.status == pb.EXECUTION_STATUS_FAILED
    assert response.failed_task == "a"
    assert response.task_results[0].error == "RuntimeError: the disk is on fire"
    again = await stub.Execute(execute_request(seed_body()))
    assert again.status == pb.EXECUTION_STATUS_COMPLETED


async def test_outputs_travel_as_structs(stub: Stub) -> None:
    body = {
        "flow": {
            "start_task": "fetch",
            "tasks": [
                {"name": "fetch", "type": "fetch_data", "params": {"count": 2}},
                {"name": "process", "type": "process_data"},
                {"name": "store", "type": "store_data"},
            ],
        }
    }

    response = await stub.Execute(execute_request(body))

    assert response.status == pb.EXECUTION_STATUS_COMPLETED
    process = response.task_results[1].output
    assert process["total"] == 60
    assert process["records"][0]["value"] == 20
    assert response.task_results[2].output["stored"] == 2


async def test_an_unexpected_server_fault_is_internal_without_python_text(
    stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowservice.api import recording

    def broken(event: object) -> None:
        raise KeyError("secret internals")

    monkeypatch.setattr(recording, "event_to_proto", broken)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(seed_body()))

    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (raised.value.details() or "")
    assert "KeyError" not in (raised.value.details() or "")
    assert "incident" in (raised.value.details() or "")
