"""Hostile params for every built-in task, against a real server with a capped address space.

Each value is one a caller can send in a small request: a count that would
build billions of records, a sleep of 1e308 ms, a megabyte where a name
belongs, a value of the wrong kind. Each must fail its task with
`InvalidParams` before any work (a `MemoryError` under the cap, or a dead
server, fails the test), and the server must answer Health afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from flowservice.limits import Limits
from flowservice.tasks.builtin import INVALID_PARAMS, MAX_RECORDS, MAX_TEXT_LENGTH
from tests.hostile.memory_capped import CappedServer, capped_server, health_status

MEBIBYTE = "x" * (1024 * 1024)
MANY_RECORDS = [{"value": 1}] * 100_000

HOSTILE_PARAMS = [
    ("fetch_data", {"count": 2147483647}),
    ("fetch_data", {"count": 3e6}),
    ("fetch_data", {"count": 1e308}),
    ("fetch_data", {"count": -1}),
    ("fetch_data", {"count": 2.5}),
    ("fetch_data", {"count": "10"}),
    ("fetch_data", {"count": True}),
    ("fetch_data", {"source": MEBIBYTE}),
    ("fetch_data", {"source": 5}),
    ("mock", {"sleep_ms": 1e308}),
    ("mock", {"sleep_ms": -5}),
    ("mock", {"sleep_ms": "soon"}),
    ("mock", {"fail_attempts": 1e308}),
    ("mock", {"fail_attempts": [1]}),
    ("mock", {"fail": "yes"}),
    ("mock", {"fail": True, "error": MEBIBYTE}),
    ("mock", {"fail": True, "error_type": MEBIBYTE}),
    ("mock", {"error": {"a": 1}}),
    ("mock", {"output": [1, 2]}),
    ("process_data", {"records": MANY_RECORDS}),
    ("process_data", {"records": "all of them"}),
    ("process_data", {"records": [1, 2]}),
    ("process_data", {"records": [{"value": 1e308}]}),
    ("process_data", {"records": [{"value": "ten"}]}),
    ("process_data", {"from": MEBIBYTE}),
    ("process_data", {"from": 5}),
    ("store_data", {"records": MANY_RECORDS}),
    ("store_data", {"records": [{"value": 1}], "destination": MEBIBYTE}),
    ("store_data", {"records": [{"value": 1}], "destination": None}),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CappedServer]:
    with capped_server(tmp_path_factory.mktemp("capped") / "server.log") as running:
        yield running


def execute(server: CappedServer, body: dict[str, Any]) -> flow_service_pb2.ExecuteResponse:
    request = json_format.ParseDict(body, flow_service_pb2.ExecuteRequest())
    with grpc.insecure_channel(
        server.address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as channel:
        return flow_service_pb2_grpc.FlowServiceStub(channel).Execute(request, timeout=30)


def one_task(task_type: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "flow": {
            "id": "hostile",
            "start_task": "a",
            "tasks": [{"name": "a", "type": task_type, "params": params}],
        }
    }


@pytest.mark.parametrize(
    ("task_type", "params"),
    HOSTILE_PARAMS,
    ids=[f"{t}-{next(iter(p))}-{i}" for i, (t, p) in enumerate(HOSTILE_PARAMS)],
)
def test_a_hostile_param_fails_the_task_before_any_work(
    server: CappedServer, task_type: str, params: dict[str, Any]
) -> None:
    response = execute(server, one_task(task_type, params))

    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    (result,) = response.task_results
    assert result.error_type == INVALID_PARAMS
    assert len(result.error) < 1024  # the message never echoes the value
    assert server.process.poll() is None
    assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING


def test_the_largest_count_fits_the_default_output_limit(server: CappedServer) -> None:
    params = {"count": MAX_RECORDS, "source": "s" * MAX_TEXT_LENGTH}

    response = execute(server, one_task("fetch_data", params))

    assert response.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    output = json_format.MessageToDict(response.task_results[0].output)
    assert len(output["records"]) == MAX_RECORDS
    size = len(json.dumps(output, separators=(",", ":")).encode())
    assert size <= Limits().max_output_bytes


def test_records_from_an_earlier_task_are_bounded_too(server: CappedServer) -> None:
    # mock can output more (tiny) records than MAX_RECORDS within max_output_bytes.
    records: list[dict[str, Any]] = [{}] * (MAX_RECORDS + 1)
    body = {
        "flow": {
            "id": "hostile",
            "start_task": "a",
            "tasks": [
                {"name": "a", "type": "mock", "params": {"output": {"records": records}}},
                {"name": "b", "type": "process_data"},
            ],
            "conditions": [{"source_task": "a", "outcome": "success", "target_task_success": "b"}],
        }
    }

    response = execute(server, body)

    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    assert response.failed_task == "b"
    assert response.task_results[-1].error_type == INVALID_PARAMS
