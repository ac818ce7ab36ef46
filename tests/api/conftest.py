"""A real Flow Manager server on an ephemeral loopback port, and a client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from google.protobuf import json_format

from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from flowservice.tasks import TaskContext, TaskRegistry, builtin_registry


class Gate:
    """A task type that waits until the test opens it: lets tests observe a running flow."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = 0

    async def run(self, ctx: TaskContext) -> dict[str, Any]:
        self.entered.set()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return {"gate": ctx.task.name}


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def registry(gate: Gate) -> TaskRegistry:
    registry = builtin_registry()
    registry.register("gate", gate)

    def explode(ctx: TaskContext) -> None:
        raise RuntimeError("the disk is on fire")

    registry.register("explode", explode)
    return registry


@pytest.fixture
async def server(registry: TaskRegistry) -> AsyncIterator[FlowServer]:
    flow_server = create_server(Settings(address="127.0.0.1:0"), registry)
    await flow_server.start()
    yield flow_server
    await flow_server.stop(grace=None)


@pytest.fixture
async def channel(server: FlowServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> flow_service_pb2_grpc.FlowServiceStub:
    return flow_service_pb2_grpc.FlowServiceStub(channel)


def execute_request(body: dict[str, Any]) -> flow_service_pb2.ExecuteRequest:
    """An ExecuteRequest parsed from its proto-JSON form, as grpcurl would send it."""
    return json_format.ParseDict(body, flow_service_pb2.ExecuteRequest())


def stream_request(body: dict[str, Any]) -> flow_service_pb2.ExecuteStreamRequest:
    """The same JSON body, as an ExecuteStreamRequest."""
    return json_format.ParseDict(body, flow_service_pb2.ExecuteStreamRequest())
