"""A real Flow Manager server on an ephemeral loopback port, and a client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
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


class Recorder:
    """A task type that sleeps `params.seconds`, recording the runs started and cancelled."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.any_cancelled = asyncio.Event()

    async def run(self, ctx: TaskContext) -> dict[str, Any]:
        self.started.append(ctx.task.name)
        try:
            await asyncio.sleep(float(ctx.params.get("seconds", 30)))
        except asyncio.CancelledError:
            self.cancelled.append(ctx.task.name)
            self.any_cancelled.set()
            raise
        return {}


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def settings() -> Settings:
    """The server's settings; a test module overrides this fixture to change limits."""
    return Settings(store="memory", address="127.0.0.1:0")


@pytest.fixture
def registry(gate: Gate, recorder: Recorder) -> TaskRegistry:
    registry = builtin_registry()
    registry.register("gate", gate)
    registry.register("slow", recorder)

    def explode(ctx: TaskContext) -> None:
        raise RuntimeError("the disk is on fire")

    registry.register("explode", explode)
    return registry


@pytest.fixture
async def server(settings: Settings, registry: TaskRegistry) -> AsyncIterator[FlowServer]:
    flow_server = create_server(settings, registry)
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
