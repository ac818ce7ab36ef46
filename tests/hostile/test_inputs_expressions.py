"""Expressions that would multiply memory, against a real server with a capped address space.

Each request is small next to what the expression would build from it (at
least twice the cap of `ADDRESS_SPACE`): without the bounds of
`flowservice.expression_bounds` and `MAX_RESULT_BYTES` the capped server
runs out of memory (an INTERNAL status or a dead process) and the test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from tests.hostile.memory_capped import CappedServer, capped_server, health_status

MEBIBYTE = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CappedServer]:
    with capped_server(tmp_path_factory.mktemp("capped") / "server.log") as running:
        yield running


@pytest.fixture(autouse=True)
def still_serving(server: CappedServer) -> Iterator[None]:
    yield
    assert server.process.poll() is None, server.log()
    assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING


def execute(server: CappedServer, body: dict[str, Any]) -> flow_service_pb2.ExecuteResponse:
    request = json_format.ParseDict(body, flow_service_pb2.ExecuteRequest())
    with grpc.insecure_channel(server.address) as channel:
        return flow_service_pb2_grpc.FlowServiceStub(channel).Execute(request, timeout=30)


def flow(**parts: Any) -> dict[str, Any]:
    return {"id": "bomb", "start_task": "a", "tasks": [{"name": "a"}], **parts}


def condition(expression: str) -> dict[str, Any]:
    return {"source_task": "a", "expression": expression, "target_task_success": "end"}


def invalid_fields(server: CappedServer, body: dict[str, Any]) -> dict[str, str]:
    """The BadRequest field violations (field: reason) of a request that must be refused."""
    with pytest.raises(grpc.RpcError) as raised:
        execute(server, body)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    fields: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.update({v.field: v.reason for v in bad_request.field_violations})
    return fields


def test_concatenation_inside_a_macro_is_refused(server: CappedServer) -> None:
    # 1,000 elements x 2 MiB each: 2 GiB if it ran.
    body = {
        "flow": flow(conditions=[condition("size(input.l.map(x, input.s + input.s)) > 0")]),
        "input": {"l": list(range(1000)), "s": "s" * MEBIBYTE},
    }

    fields = invalid_fields(server, body)

    assert fields == {"flow.conditions[0].expression": "INVALID_EXPRESSION"}


def test_a_long_concatenation_chain_is_refused(server: CappedServer) -> None:
    # The runtime keeps every partial result: 2 + 3 + ... + 28 copies of 3.5 MiB, 1.4 GiB.
    chain = " + ".join(["input.s"] * 28)
    body = {
        "flow": flow(conditions=[condition(f"size({chain}) > 0")]),
        "input": {"s": "s" * (7 * MEBIBYTE // 2)},
    }

    fields = invalid_fields(server, body)

    assert fields == {"flow.conditions[0].expression": "INVALID_EXPRESSION"}


def test_map_over_a_long_list_fails_the_execution_not_the_server(server: CappedServer) -> None:
    # map appends by copying its result: 9,999 elements would take 1.6 GB.
    body = {
        "flow": flow(conditions=[condition("size(input.l.map(x, x)) > 0")]),
        "input": {"l": list(range(9999))},
    }

    response = execute(server, body)

    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    assert list(response.executed_tasks) == ["a"]  # the task ran; its condition failed
    assert response.error_type == "ExpressionError"


def test_exists_over_a_long_list_still_runs(server: CappedServer) -> None:
    body = {
        "flow": flow(conditions=[condition("input.l.exists(x, x < 0.0)")]),
        "input": {"l": list(range(9999))},
    }

    response = execute(server, body)

    assert response.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    assert response.task_results[0].decision.value is False


def test_a_huge_flow_output_fails_the_execution_not_the_server(server: CappedServer) -> None:
    # 2,000 references to one 1 MiB string: small inside CEL, 2 GiB once converted.
    body = {
        "flow": flow(output="input.l.map(x, input.s)"),
        "input": {"l": list(range(2000)), "s": "s" * MEBIBYTE},
    }

    response = execute(server, body)

    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    assert not response.HasField("output")
    assert response.error_type == "ExpressionError"


def test_a_huge_input_mapping_fails_the_execution_not_the_server(server: CappedServer) -> None:
    tasks = [{"name": "a", "input_mapping": {"big": "input.l.map(x, input.s)"}}]
    body = {
        "flow": {"id": "bomb", "start_task": "a", "tasks": tasks},
        "input": {"l": list(range(2000)), "s": "s" * MEBIBYTE},
    }

    response = execute(server, body)

    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    assert not response.task_results  # the task never ran
    assert response.error_type == "ExpressionError"


def test_ordinary_concatenation_still_runs(server: CappedServer) -> None:
    expression = "size('<' + input.s + '>' + input.s) == 2 * size(input.s) + 2"
    body = {
        "flow": flow(conditions=[condition(expression)]),
        "input": {"s": "s" * MEBIBYTE},
    }

    response = execute(server, body)

    assert response.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    assert response.task_results[0].decision.value is True
