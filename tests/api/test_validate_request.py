"""Validate takes the whole Execute body: its `input` and `stubs` are checked too."""

from __future__ import annotations

import grpc
from google.protobuf import json_format

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from tests.api.conftest import execute_request
from tests.api.test_execute import seed_body

Stub = flow_service_pb2_grpc.FlowServiceStub


def validate_request(body: dict[str, object]) -> pb.ValidateRequest:
    return json_format.ParseDict(body, pb.ValidateRequest())


async def test_one_body_with_input_and_stubs_is_valid_for_validate_and_execute(
    stub: Stub,
) -> None:
    body = {
        **seed_body(),
        "input": {"user": 42},
        "stubs": {"task1": {"outcome": "TASK_OUTCOME_SUCCESS", "output": {"rows": 3}}},
    }

    validated = await stub.Validate(validate_request(body))
    executed = await stub.Execute(execute_request(body))

    assert validated.valid
    assert list(validated.errors) == []
    assert executed.status == pb.EXECUTION_STATUS_COMPLETED


async def test_a_stub_execute_rejects_is_an_error_of_validate(stub: Stub) -> None:
    body = {
        **seed_body(),
        "stubs": {"task9": {"outcome": "TASK_OUTCOME_SUCCESS"}, "task1": {}},
    }

    validated = await stub.Validate(validate_request(body))
    try:
        await stub.Execute(execute_request(body))
    except grpc.aio.AioRpcError as error:
        rejected = error.code()
    else:
        rejected = grpc.StatusCode.OK

    assert not validated.valid
    assert sorted((e.field, e.reason) for e in validated.errors) == [
        ('stubs["task1"].outcome', "MISSING_OUTCOME"),
        ('stubs["task9"]', "UNKNOWN_TASK"),
    ]
    assert rejected == grpc.StatusCode.INVALID_ARGUMENT
