"""A burst past every limit is refused with codes a client can act on, never CANCELLED.

grpc's server core cancels calls it has queued for the application once more
than 1,000 wait (`grpc.server.max_pending_requests`); the caller sees
CANCELLED, which it cannot tell from its own cancel and does not retry. Here
four connections of 500 streams each (2,000 calls at once, past that queue)
and a fifth connection past `--max-connections` hit a server that runs at most
20 executions and 60 calls.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from contextlib import AbstractContextManager

import grpc
from google.protobuf import json_format

from flowmanager.v1 import flow_service_pb2
from tests.e2e.conftest import RunningServer
from tests.hostile.conftest import error_details

EXECUTE = "/flowmanager.v1.FlowService/Execute"
FLAGS = (
    "--max-concurrent-executions",
    "20",
    "--max-concurrent-rpcs",
    "60",
    "--max-concurrent-streams",
    "500",
    "--max-connections",
    "4",
)
CONNECTIONS = 5
CALLS_PER_CONNECTION = 500
SLEEPING_FLOW = {
    "flow": {
        "id": "burst",
        "start_task": "nap",
        "tasks": [{"name": "nap", "type": "mock", "params": {"sleep_ms": 1000}}],
    }
}
REFUSALS = {"TOO_MANY_EXECUTIONS", "TOO_MANY_CALLS"}


async def burst(address: str) -> list[grpc.StatusCode | grpc.aio.AioRpcError]:
    """Every call's outcome: OK, or the error it ended with."""
    body = json_format.ParseDict(SLEEPING_FLOW, flow_service_pb2.ExecuteRequest())
    request = body.SerializeToString()
    # One connection per channel: grpc shares them between channels by default.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(CONNECTIONS)]

    async def one(channel: grpc.aio.Channel) -> grpc.StatusCode | grpc.aio.AioRpcError:
        try:
            await channel.unary_unary(EXECUTE)(request, timeout=30)
        except grpc.aio.AioRpcError as error:
            return error
        return grpc.StatusCode.OK

    try:
        return await asyncio.gather(
            *(one(channel) for channel in channels for _ in range(CALLS_PER_CONNECTION))
        )
    finally:
        for channel in channels:
            await channel.close()


async def test_a_burst_past_every_limit_gets_no_cancelled(
    limited_server: Callable[..., AbstractContextManager[RunningServer]],
) -> None:
    with limited_server(*FLAGS) as server:
        outcomes = await burst(server.address)
        codes = collections.Counter(
            outcome if isinstance(outcome, grpc.StatusCode) else outcome.code()
            for outcome in outcomes
        )
        assert set(codes) <= {
            grpc.StatusCode.OK,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.UNAVAILABLE,
        }, codes
        # The limits were passed: some calls ran, some were shed, some refused.
        assert codes[grpc.StatusCode.OK] >= 20
        assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0
        assert codes[grpc.StatusCode.UNAVAILABLE] > 0
        for outcome in outcomes:
            if isinstance(outcome, grpc.aio.AioRpcError) and (
                outcome.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ):
                info, retry = error_details(outcome)
                assert info is not None and info.reason in REFUSALS
                assert retry is not None and retry.retry_delay.ToTimedelta().total_seconds() > 0
        assert server.process.poll() is None
