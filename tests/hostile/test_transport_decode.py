"""Request bytes that do not parse get INVALID_ARGUMENT, never grpc's UNKNOWN with Python text.

Sent through a generic call (bytes in, bytes out), as a hostile client
would, to every FlowService method and to the health service.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flowmanager.v1 import flow_service_pb2
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from tests.hostile.conftest import error_details

SERVICE = flow_service_pb2.DESCRIPTOR.services_by_name["FlowService"]
METHODS = [method.name for method in SERVICE.methods]
PYTHON_TEXT = re.compile(r"Traceback|<class |Error\b|Exception|\.py\b")
"""What Python exception text looks like in a status message."""


def nested_params(depth: int) -> struct_pb2.Struct:
    """A Struct with `depth` levels of `{"a": {"a": ...}}`."""
    top = struct_pb2.Struct()
    level = top
    for _ in range(depth):
        level = level.fields["a"].struct_value
    return top


def deep_request(method_name: str) -> bytes:
    """A valid request of the method's type but for params nested 101 levels deep."""
    method = SERVICE.methods_by_name[method_name]
    request_type = {
        "Execute": flow_service_pb2.ExecuteRequest,
        "ExecuteStream": flow_service_pb2.ExecuteStreamRequest,
        "Validate": flow_service_pb2.ValidateRequest,
    }[method.name]
    request = request_type()
    request.flow.start_task = "a"
    task = request.flow.tasks.add(name="a", type="mock")
    task.params.CopyFrom(nested_params(101))
    return request.SerializeToString()


UNDECODABLE = [
    b"\xff\xff\xff\xff",  # field 0x1fffffff... with a reserved wire type
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end of the message
    b"\x0a\x02\x0a",  # a field cut short
]


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


async def call_raw(
    channel: grpc.aio.Channel, method_name: str, body: bytes
) -> grpc.aio.AioRpcError:
    """Sends `body` as is to the method; the error it ends with."""
    path = f"/{SERVICE.full_name}/{method_name}"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if SERVICE.methods_by_name[method_name].server_streaming:
            async for _ in channel.unary_stream(path)(body, timeout=10):
                pass
        else:
            await channel.unary_unary(path)(body, timeout=10)
    return raised.value


def assert_malformed(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert not PYTHON_TEXT.search(error.details() or ""), error.details()
    info, _ = error_details(error)
    assert info is not None
    assert info.reason == "MALFORMED_REQUEST"
    assert info.domain == "flowmanager"


@pytest.mark.parametrize("method_name", METHODS)
@pytest.mark.parametrize("body", UNDECODABLE, ids=["wire-type", "overlong", "truncated"])
async def test_undecodable_bytes_are_invalid_argument(
    channel: grpc.aio.Channel, method_name: str, body: bytes
) -> None:
    assert_malformed(await call_raw(channel, method_name, body))


@pytest.mark.parametrize("method_name", METHODS)
async def test_params_nested_past_the_recursion_limit_are_invalid_argument(
    channel: grpc.aio.Channel, method_name: str
) -> None:
    assert_malformed(await call_raw(channel, method_name, deep_request(method_name)))


async def test_health_check_with_undecodable_bytes_is_invalid_argument_and_health_still_answers(
    channel: grpc.aio.Channel,
) -> None:
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await check(UNDECODABLE[0], timeout=10)
    assert_malformed(raised.value)

    reply = await check(health_pb2.HealthCheckRequest().SerializeToString(), timeout=10)
    status = health_pb2.HealthCheckResponse.FromString(reply).status
    assert status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_with_undecodable_bytes_is_invalid_argument_and_still_lists_services(
    channel: grpc.aio.Channel,
) -> None:
    info = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in info(iter([UNDECODABLE[0]]), timeout=10):
            pass
    assert_malformed(raised.value)

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in stub.ServerReflectionInfo(iter([request]), timeout=10):
        names = {service.name for service in response.list_services_response.service}
        break
    assert SERVICE.full_name in names
