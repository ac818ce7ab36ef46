"""The server around the service: health checking, reflection, graceful drain."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from flowservice.limits import Limits
from flowservice.server import FlowServer
from flowservice.settings import Settings
from tests.api.conftest import Gate, execute_request
from tests.hostile.conftest import error_details


async def test_health_reports_serving_overall_and_for_the_flow_service(
    channel: grpc.aio.Channel,
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "flowmanager.v1.FlowService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_every_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async for response in stub.ServerReflectionInfo(iter([request])):
        names = {service.name for service in response.list_services_response.service}
        break

    assert {
        "flowmanager.v1.FlowService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


async def test_drain_goes_not_serving_and_lets_in_flight_calls_finish(
    server: FlowServer, channel: grpc.aio.Channel, gate: Gate
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    body = {"flow": {"start_task": "held", "tasks": [{"name": "held", "type": "gate"}]}}
    in_flight = asyncio.ensure_future(stub.Execute(execute_request(body)))
    async with asyncio.timeout(10):
        await gate.entered.wait()

    stopping = asyncio.ensure_future(server.stop(grace=10, drain_delay=2))
    async with asyncio.timeout(10):
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()  # a watcher that heard NOT_SERVING goes away, as a load balancer would
    gate.opened.set()

    async with asyncio.timeout(10):
        response = await in_flight
        await stopping
    assert response.status == pb.EXECUTION_STATUS_COMPLETED


async def test_an_open_health_watch_ends_when_the_server_drains(
    server: FlowServer, channel: grpc.aio.Channel
) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

    # A grace period the test would time out long before: the watch must not hold it.
    async with asyncio.timeout(20):
        stopping = asyncio.ensure_future(server.stop(grace=60))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await watch.read()
        await stopping
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reasons(ended.value) == ("SERVER_SHUTTING_DOWN", False)


HELD = {"flow": {"start_task": "held", "tasks": [{"name": "held", "type": "gate"}]}}
"""A flow whose one task waits for the test to open the gate."""


async def hold_one_execution(
    stub: flow_service_pb2_grpc.FlowServiceStub, gate: Gate
) -> asyncio.Future[pb.ExecuteResponse]:
    """An Execute call in flight, its task waiting at the gate."""
    in_flight = asyncio.ensure_future(stub.Execute(execute_request(HELD)))
    async with asyncio.timeout(10):
        await gate.entered.wait()
    return in_flight


class TestCallLimit:
    """Past max_concurrent_rpcs calls are shed with RetryInfo; Health/Check still answers."""

    @pytest.fixture
    def settings(self) -> Settings:
        limits = Limits(max_concurrent_rpcs=1, max_concurrent_executions=1)
        return Settings(store="memory", address="127.0.0.1:0", limits=limits)

    async def test_calls_past_the_limit_are_shed_with_retry_info(
        self, stub: flow_service_pb2_grpc.FlowServiceStub, channel: grpc.aio.Channel, gate: Gate
    ) -> None:
        in_flight = await hold_one_execution(stub, gate)

        with pytest.raises(grpc.aio.AioRpcError) as shed:
            await stub.Validate(pb.ValidateRequest())
        assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reasons(shed.value) == ("TOO_MANY_CALLS", True)
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert response.status == health_pb2.HealthCheckResponse.SERVING

        gate.opened.set()
        assert (await in_flight).status == pb.EXECUTION_STATUS_COMPLETED
        await stub.Validate(pb.ValidateRequest())  # the slot is free again


class TestExecutionLimit:
    @pytest.fixture
    def settings(self) -> Settings:
        return Settings(
            store="memory", address="127.0.0.1:0", limits=Limits(max_concurrent_executions=1)
        )

    async def test_too_many_executions_carries_retry_info(
        self, stub: flow_service_pb2_grpc.FlowServiceStub, gate: Gate
    ) -> None:
        in_flight = await hold_one_execution(stub, gate)
        with pytest.raises(grpc.aio.AioRpcError) as shed:
            await stub.Execute(execute_request(HELD))
        assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reasons(shed.value) == ("TOO_MANY_EXECUTIONS", True)
        gate.opened.set()
        await in_flight


def reasons(error: grpc.aio.AioRpcError) -> tuple[str, bool]:
    """The ErrorInfo reason of `error`, and whether it carries a positive RetryInfo delay."""
    info, retry = error_details(error)
    assert info is not None
    return info.reason, retry is not None and retry.retry_delay.ToTimedelta().total_seconds() > 0
