"""Python clients: the grpc.aio load generator (the second opinion) and the other drivers.

Requests are sent pre-serialized and replies are received as bytes, so the
client spends as little as it can per call; a few replies are parsed to check
they are what the benchmark expects. Any RPC error ends the run with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from bench.workers import process_cpu_seconds, process_rss_bytes
from flowmanager.v1 import flow_service_pb2

__all__ = [
    "CHECK_METHOD",
    "EXECUTE_METHOD",
    "STREAM_METHOD",
    "LoadRun",
    "MemoryRun",
    "StreamRun",
    "call_unary",
    "check_execute_reply",
    "sleeping_in_flight",
    "stream_once",
    "unary_load",
]

CHECK_METHOD = "/grpc.health.v1.Health/Check"
EXECUTE_METHOD = "/flowmanager.v1.FlowService/Execute"
STREAM_METHOD = "/flowmanager.v1.FlowService/ExecuteStream"

CALL_TIMEOUT = 120.0
"""Seconds any one call may take."""
WAVE = 500
"""Calls sent at once by `sleeping_in_flight`: half of grpc's pending-call soft limit."""
_MAX_MESSAGE = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
]


@dataclass(frozen=True, slots=True)
class LoadRun:
    """A fixed number of calls made with a fixed number in flight."""

    requests: int
    """Calls made; all succeeded."""
    seconds: float
    """Wall time from the first call to the last reply."""
    latencies_us: tuple[float, ...]
    """Each call's round trip, in microseconds."""
    client_cpu_seconds: float
    """CPU time this process (the client) used meanwhile."""

    @property
    def rps(self) -> float:
        """Calls per second."""
        return self.requests / self.seconds


@dataclass(frozen=True, slots=True)
class StreamRun:
    """One `ExecuteStream` call read to its end."""

    events: int
    """Messages received."""
    seconds: float
    """From the call to its last message."""
    data_bytes: int
    """Bytes of the messages (without gRPC frame prefixes)."""
    last: flow_service_pb2.ExecuteStreamResponse
    """The last event, parsed."""


@dataclass(frozen=True, slots=True)
class MemoryRun:
    """Server memory with many executions asleep in a task at once."""

    executions: int
    """Calls made; all succeeded."""
    in_flight_at_measurement: int
    """Executions whose server-side [start, start + duration] spans the measurement."""
    baseline_rss_bytes: int
    """Server RSS after warm-up, before the calls."""
    in_flight_rss_bytes: int
    """Server RSS once every call had arrived and the server was idle, all asleep."""
    settle_seconds: float
    """From the first call to the measurement."""


async def unary_load(
    address: str,
    method: str,
    body: bytes,
    *,
    in_flight: int,
    requests: int,
    check_reply: Callable[[bytes], None],
) -> LoadRun:
    """Calls `method` `requests` times from `in_flight` concurrent callers on one channel.

    `check_reply` is applied to the first and last reply (parsing every reply
    would make the client the bottleneck); RPC errors raise `grpc.aio.AioRpcError`.
    """
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        latencies: list[float] = []
        remaining = requests
        last: list[bytes] = []

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                reply: bytes = await call(body, timeout=CALL_TIMEOUT)
                latencies.append((time.perf_counter() - started) * 1e6)
                if not last:
                    check_reply(reply)
                last[:] = [reply]

        started = time.perf_counter()
        cpu = time.process_time()
        outcomes = await asyncio.gather(
            *(caller() for _ in range(min(in_flight, requests))), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        check_reply(last[0])
    return LoadRun(requests, seconds, tuple(latencies), cpu)


async def call_unary(address: str, method: str, body: bytes) -> tuple[bytes, float]:
    """One call: its reply and its round trip in seconds."""
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        started = time.perf_counter()
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        reply: bytes = await call(body, timeout=CALL_TIMEOUT)
        return reply, time.perf_counter() - started


async def stream_once(address: str, body: bytes) -> StreamRun:
    """One `ExecuteStream` call, read to the end; its events counted, the last one parsed."""
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        events = 0
        data_bytes = 0
        last = b""
        started = time.perf_counter()
        call: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(STREAM_METHOD)
        async for message in call(body, timeout=CALL_TIMEOUT):
            events += 1
            data_bytes += len(message)
            last = message
        seconds = time.perf_counter() - started
    return StreamRun(
        events, seconds, data_bytes, flow_service_pb2.ExecuteStreamResponse.FromString(last)
    )


async def sleeping_in_flight(
    address: str,
    *,
    server_pid: int,
    body: bytes,
    executions: int,
    warmup_body: bytes,
    warmup_executions: int,
    settle_timeout: float,
) -> MemoryRun:
    """Starts `executions` calls of a flow that sleeps, and reads the server's RSS while all sleep.

    Calls go out in waves of `WAVE`, each once the server has taken the last:
    grpc's server core queues calls the application has not yet picked up and
    cancels some at random once more than 1,000 wait (its
    `grpc.server.max_pending_requests`), so a single burst of thousands would
    lose calls before the Flow Manager ever saw them. The measurement is
    taken once every call has been sent, none has returned, and the server
    has been idle (every execution asleep in its task) for a moment.
    Afterwards each reply's start time and duration tell how many executions
    really were in flight at that instant.
    """
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXECUTE_METHOD)
        await asyncio.gather(
            *(call(warmup_body, timeout=CALL_TIMEOUT) for _ in range(warmup_executions))
        )
        await asyncio.sleep(0.5)
        baseline = process_rss_bytes(server_pid)

        started = time.perf_counter()
        deadline = started + settle_timeout
        calls: list[asyncio.Future[bytes]] = []
        try:
            while len(calls) < executions:
                wave = min(WAVE, executions - len(calls))
                calls += [
                    asyncio.ensure_future(call(body, timeout=CALL_TIMEOUT)) for _ in range(wave)
                ]
                measured_at, rss = await _wait_until_idle(server_pid, calls, deadline)
            settle_seconds = time.perf_counter() - started
            replies: list[bytes] = await asyncio.gather(*calls)
        except BaseException:
            for pending in calls:
                pending.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            raise

    in_flight = 0
    for reply in replies:
        response = check_execute_reply(reply)
        start = response.start_time.ToDatetime().timestamp()
        if start <= measured_at <= start + response.duration.ToTimedelta().total_seconds():
            in_flight += 1
    return MemoryRun(executions, in_flight, baseline, rss, settle_seconds)


async def _wait_until_idle(
    pid: int, calls: list[asyncio.Future[bytes]], deadline: float
) -> tuple[float, int]:
    """Waits until the server's CPU stays idle with no call done; returns (wall time, RSS)."""
    window = 0.3
    idle_cpu = 0.02 * window
    cpu = process_cpu_seconds(pid)
    await asyncio.sleep(window)
    while True:
        done = next((call for call in calls if call.done()), None)
        if done is not None:
            done.result()  # raises the RPC error, if that is what ended it
            raise RuntimeError("an execution returned before all were in flight: sleep longer")
        now_cpu = process_cpu_seconds(pid)
        if now_cpu - cpu <= idle_cpu:
            return time.time(), process_rss_bytes(pid)
        if time.perf_counter() > deadline:
            raise RuntimeError("the server did not go idle with every execution in flight")
        cpu = now_cpu
        await asyncio.sleep(window)


def _check_completed(response: flow_service_pb2.ExecuteResponse) -> None:
    if response.status != flow_service_pb2.EXECUTION_STATUS_COMPLETED:
        raise RuntimeError(f"execution did not complete: {response.status} {response.error!r}")


def check_execute_reply(reply: bytes) -> flow_service_pb2.ExecuteResponse:
    """The parsed `ExecuteResponse`; raises unless its status is COMPLETED."""
    response = flow_service_pb2.ExecuteResponse.FromString(reply)
    _check_completed(response)
    return response
