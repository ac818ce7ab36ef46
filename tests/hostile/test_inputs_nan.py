"""NaN and the infinities in params, input and stub outputs, sent as binary protobuf.

JSON (and so grpcurl) cannot carry them, but a `google.protobuf.Value` can.
Execute and ExecuteStream refuse them with INVALID_ARGUMENT and a field
violation per number; Validate, whose contract is to return problems as data,
returns them as errors with the same paths. The server answers Health after.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowmanager.v1 import flow_pb2, flow_service_pb2, flow_service_pb2_grpc
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings

NAN = math.nan
INF = math.inf


@pytest.fixture
async def server() -> AsyncIterator[FlowServer]:
    flow_server = create_server(Settings(store="memory", address="127.0.0.1:0"))
    await flow_server.start()
    yield flow_server
    await flow_server.stop(grace=None)


@pytest.fixture
async def channel(server: FlowServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def one_task(params: dict[str, Any] | None = None) -> flow_pb2.Flow:
    task = flow_pb2.Task(name="a", type="mock")
    if params is not None:
        task.params.CopyFrom(struct(params))
    return flow_pb2.Flow(id="nan", start_task="a", tasks=[task])


def violations(error: grpc.RpcError) -> dict[str, str]:
    """field: reason of every BadRequest field violation, after checking code and ErrorInfo."""
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    found: dict[str, str] = {}
    reasons: list[str] = []
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.update({v.field: v.reason for v in bad_request.field_violations})
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
    assert reasons == ["INVALID_FLOW"]
    return found


# (params, input, stub output, the fields refused)
CASES = [
    ({"x": NAN}, None, None, {"flow.tasks[0].params.x"}),
    ({"a": {"b": [1, INF]}}, None, None, {"flow.tasks[0].params.a.b[1]"}),
    ({"a b": -INF, "ok": 1}, None, None, {'flow.tasks[0].params["a b"]'}),
    (None, {"a": {"b": NAN}}, None, {"input.a.b"}),
    (None, {"l": [INF, 0, -INF]}, None, {"input.l[0]", "input.l[2]"}),
    (None, None, {"x": NAN}, {'stubs["a"].output.x'}),
]
IDS = ["params", "params-nested", "params-odd-key", "input", "input-list", "stub-output"]


def request(kind: type[Any], params: Any, flow_input: Any, stub_output: Any) -> Any:
    message = kind(flow=one_task(params))
    if flow_input is not None:
        message.input.CopyFrom(struct(flow_input))
    if stub_output is not None:
        message.stubs["a"].output.CopyFrom(struct(stub_output))
    return message


@pytest.mark.parametrize(("params", "flow_input", "stub_output", "fields"), CASES, ids=IDS)
async def test_execute_refuses_non_finite_numbers(
    channel: grpc.aio.Channel, params: Any, flow_input: Any, stub_output: Any, fields: set[str]
) -> None:
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    message = request(flow_service_pb2.ExecuteRequest, params, flow_input, stub_output)

    with pytest.raises(grpc.RpcError) as raised:
        await stub.Execute(message, timeout=10)

    assert violations(raised.value) == dict.fromkeys(fields, "NON_FINITE_NUMBER")


@pytest.mark.parametrize(("params", "flow_input", "stub_output", "fields"), CASES, ids=IDS)
async def test_execute_stream_refuses_non_finite_numbers(
    channel: grpc.aio.Channel, params: Any, flow_input: Any, stub_output: Any, fields: set[str]
) -> None:
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    message = request(flow_service_pb2.ExecuteStreamRequest, params, flow_input, stub_output)

    with pytest.raises(grpc.RpcError) as raised:
        async for _ in stub.ExecuteStream(message, timeout=10):
            pass

    assert violations(raised.value) == dict.fromkeys(fields, "NON_FINITE_NUMBER")


async def test_validate_returns_non_finite_numbers_as_errors(channel: grpc.aio.Channel) -> None:
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    flow = one_task({"x": NAN, "y": [INF]})

    response = await stub.Validate(flow_service_pb2.ValidateRequest(flow=flow), timeout=10)

    assert not response.valid
    assert {(e.field, e.reason) for e in response.errors} == {
        ("flow.tasks[0].params.x", "NON_FINITE_NUMBER"),
        ("flow.tasks[0].params.y[0]", "NON_FINITE_NUMBER"),
    }


@pytest.mark.parametrize("coefficient", [NAN, INF])
async def test_a_non_finite_backoff_coefficient_is_refused(
    channel: grpc.aio.Channel, coefficient: float
) -> None:
    # NaN passes every comparison validation makes; it failed deep in the retry delay.
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    flow = one_task({"fail": True})
    flow.tasks[0].retry.max_attempts = 3
    flow.tasks[0].retry.backoff_coefficient = coefficient

    with pytest.raises(grpc.RpcError) as raised:
        await stub.Execute(flow_service_pb2.ExecuteRequest(flow=flow), timeout=10)

    assert violations(raised.value) == {
        "flow.tasks[0].retry.backoff_coefficient": "NON_FINITE_NUMBER"
    }


async def test_finite_extremes_still_run(channel: grpc.aio.Channel) -> None:
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    params = {"output": {"max": 1.7976931348623157e308, "tiny": 5e-324}}

    response = await stub.Execute(flow_service_pb2.ExecuteRequest(flow=one_task(params)))

    assert response.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    assert response.task_results[0].output["max"] == 1.7976931348623157e308
