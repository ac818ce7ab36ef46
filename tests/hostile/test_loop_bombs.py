"""Flows that try to make one execution cost the server too much, against a real server.

A loop of costly conditions must not stall the event loop (Health/Check keeps
answering) and ends when its expression budget is spent; a loop of large
outputs ends when its results budget is spent, before the response is built.
The server runs in a subprocess under an address-space limit, so a regression
fails the test rather than the machine.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from tests.hostile.memory_capped import CappedServer, capped_server

ADDRESS_SPACE = 3 * 1024**3
"""Bytes of address space the server may map (grpc's threads reserve much more than they use)."""
PEAK_RSS = 400 * 1024**2
"""Resident bytes the server may reach (without the results budget: 722 MiB)."""
MAX_HEALTH_WAIT = 2.0
"""Seconds a Health/Check may wait while the loop bomb runs (generous: a shared 2-core machine)."""
MAX_MESSAGE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CappedServer]:
    log_path = tmp_path_factory.mktemp("bombs") / "server.log"
    with capped_server(log_path, address_space=ADDRESS_SPACE) as running:
        yield running


@pytest.fixture
async def channel(server: CappedServer) -> AsyncIterator[grpc.aio.Channel]:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
    async with grpc.aio.insecure_channel(server.address, options=options) as channel:
        yield channel


def _request(body: dict[str, Any]) -> flow_service_pb2.ExecuteRequest:
    return json_format.ParseDict(body, flow_service_pb2.ExecuteRequest())


def _peak_rss(process: subprocess.Popen[bytes]) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


async def test_a_loop_of_costly_conditions_neither_stalls_health_nor_runs_on(
    channel: grpc.aio.Channel,
) -> None:
    body = {
        "flow": {
            "id": "bomb",
            "start_task": "a",
            "max_steps": 10_000,
            "tasks": [{"name": "a", "type": "mock"}],
            "conditions": [
                {
                    "source_task": "a",
                    "expression": "input.l.all(x, input.l.all(y, true))",
                    "target_task_success": "a",
                }
            ],
        },
        "input": {"l": list(range(99))},
    }
    health = health_pb2_grpc.HealthStub(channel)
    waits: list[float] = []
    execution = asyncio.ensure_future(
        flow_service_pb2_grpc.FlowServiceStub(channel).Execute(_request(body), timeout=60)
    )
    while not execution.done():
        asked = time.monotonic()
        await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        waits.append(time.monotonic() - asked)
        await asyncio.sleep(0.05)
    response = await execution

    # Health was answered again and again while the execution ran (a loop
    # that never gave way would answer one check, after the whole run).
    assert len(waits) >= 3
    assert max(waits) < MAX_HEALTH_WAIT
    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    assert response.error_type == "ExpressionBudgetSpent"
    assert 0 < len(response.executed_tasks) < 10_000


async def test_a_loop_of_large_outputs_fails_early_and_the_server_stays_small(
    channel: grpc.aio.Channel, server: CappedServer
) -> None:
    body = {
        "flow": {
            "id": "amplifier",
            "start_task": "a",
            "max_steps": 1_000,
            "tasks": [{"name": "a", "type": "mock", "params": {"output": {"blob": "x" * 200_000}}}],
            "conditions": [{"source_task": "a", "outcome": "success", "target_task_success": "a"}],
        }
    }

    response = await flow_service_pb2_grpc.FlowServiceStub(channel).Execute(
        _request(body), timeout=60
    )

    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    assert response.failed_task == "a"
    assert response.error_type == "ResultsTooLarge"
    assert response.task_results[-1].error_type == "ResultsTooLarge"
    assert len(response.executed_tasks) < 100
    assert _peak_rss(server.process) < PEAK_RSS
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
