"""SIGTERM under load: calls in flight finish, new ones are refused, a health watch lets go.

The server gets SIGTERM with 200 executions asleep in a task and a health
Watch open. Every execution completes; the watch hears NOT_SERVING and then
ends (it used to hold shutdown for the whole grace period); calls made once
the server stops accepting get UNAVAILABLE; the process exits well before the
grace period would have run out.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from tests.e2e.conftest import RunningServer
from tests.hostile.conftest import error_details

IN_FLIGHT = 200
GRACE_PERIOD = 60.0
"""Long, so that an exit before it proves the server did not wait it out."""
SLEEPING_FLOW = {
    "flow": {
        "id": "drain",
        "start_task": "nap",
        "tasks": [{"name": "nap", "type": "mock", "params": {"sleep_ms": 3000}}],
    }
}
_METRICS = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


def executions_in_flight(server: RunningServer) -> float:
    """The server's `flowmanager_executions_in_flight` gauge, scraped over HTTP."""
    match = _METRICS.search(server.log())
    assert match, server.log()
    url = f"http://127.0.0.1:{match.group(1)}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "flowmanager_executions_in_flight":
                return sample.value
    raise AssertionError("no in-flight gauge")


async def test_sigterm_finishes_calls_in_flight_refuses_new_ones_and_exits_early(
    limited_server: Callable[..., AbstractContextManager[RunningServer]],
) -> None:
    flags = ("--grace-period", str(GRACE_PERIOD), "--drain-delay", "0.5")
    with limited_server(*flags, "--metrics-address", "127.0.0.1:0") as server:
        request = json_format.ParseDict(SLEEPING_FLOW, flow_service_pb2.ExecuteRequest())
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = flow_service_pb2_grpc.FlowServiceStub(channel)
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            calls = [
                asyncio.ensure_future(stub.Execute(request, timeout=30)) for _ in range(IN_FLIGHT)
            ]
            async with asyncio.timeout(20):
                while await asyncio.to_thread(executions_in_flight, server) < IN_FLIGHT:
                    await asyncio.sleep(0.05)

            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            async with asyncio.timeout(20):
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
                try:
                    await watch.read()
                except grpc.aio.AioRpcError as ended:
                    assert ended.code() == grpc.StatusCode.UNAVAILABLE
                    info, _ = error_details(ended)
                    assert info is not None and info.reason == "SERVER_SHUTTING_DOWN"
                else:
                    raise AssertionError("the watch went on after the server drained")
            # The server stops accepting right after it ends the watch.
            late = await asyncio.gather(
                *(stub.Validate(flow_service_pb2.ValidateRequest(), timeout=10) for _ in range(3)),
                return_exceptions=True,
            )
            assert all(isinstance(error, grpc.aio.AioRpcError) for error in late), late
            assert {error.code() for error in late} == {grpc.StatusCode.UNAVAILABLE}

            responses = await asyncio.gather(*calls)
        assert all(r.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED for r in responses)
        await asyncio.to_thread(server.process.wait, GRACE_PERIOD)
        assert server.process.returncode == 0, server.log()
        assert time.monotonic() - signalled < GRACE_PERIOD
