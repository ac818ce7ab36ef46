"""The server around the service: health checking, reflection, graceful drain."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from flowservice.server import FlowServer
from tests.api.conftest import Gate, execute_request


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
