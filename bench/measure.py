"""The measurements behind each section of the table, one function per section.

Each takes running servers (`bench.workers.RunningServer`) and returns plain
dataclasses; `bench.report` turns them into figures and targets.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grpc_health.v1 import health_pb2

from bench import grpc_load
from bench.config import BenchConfig
from bench.engine_micro import EngineMicroResult
from bench.flows import (
    REPO_ROOT,
    SEED_FLOW_PATH,
    grpc_frame,
    linear_flow,
    seed_request,
    sleeping_flow,
    to_execute_request,
    to_stream_request,
)
from bench.h2load import H2loadRun, percentile, probe, run_h2load
from bench.rest_peer import process as rest_peer
from bench.workers import RunningServer, cpu_seconds
from flowmanager.v1 import flow_service_pb2

__all__ = [
    "CHECK",
    "EXECUTE",
    "REST",
    "REST_WORKERS",
    "REST_WORKER_COUNT",
    "Bodies",
    "FlowSizePoint",
    "LoadPoint",
    "Measured",
    "MemoryResult",
    "MulticoreResult",
    "StreamResult",
    "alternating_rounds",
    "engine_micro",
    "flow_sizes",
    "h2load_point",
    "h2load_with_cpu",
    "machine_busy_seconds",
    "memory",
    "multicore",
    "shape",
    "sized",
    "streaming",
    "transport_h2load",
    "transport_python",
    "url_of",
    "wait_for_quiet",
]

CHECK = "Health/Check"
EXECUTE = "Execute(seed)"
REST = "REST (seed design)"
"""The seed's `POST /flow/execute` of the same flow on `bench.rest_peer`, over HTTP/1.1."""
REST_WORKERS = "rest_workers2"
"""The multi-core section's label of the REST peer served by uvicorn with 2 workers."""
REST_WORKER_COUNT = 2
"""Worker processes of that REST peer: one per core of the project's 2-core machine."""
_METHOD_PATHS = {CHECK: grpc_load.CHECK_METHOD, EXECUTE: grpc_load.EXECUTE_METHOD}
_MAX_CONNECTIONS = 16
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUIET_CORES = 0.25
"""Busy cores below which the machine counts as idle (`wait_for_quiet`)."""
NOISY_CORES = 0.5
"""Cores kept busy by the rest of the machine above which a round is measured again."""


@dataclass(frozen=True, slots=True)
class Bodies:
    """The framed request bodies h2load sends, written once per run."""

    check: Path
    """`grpc.health.v1.HealthCheckRequest{}`."""
    seed: Path
    """`ExecuteRequest` of examples/seed-flow.json."""
    stream: Path
    """`ExecuteStreamRequest` of the long linear flow."""
    rest: Path
    """The seed flow as the REST peer takes it: examples/seed-flow.json, as JSON."""

    @classmethod
    def write(cls, directory: Path, stream_tasks: int) -> Bodies:
        """Serializes each request into `directory`."""
        bodies = cls(
            directory / "check.bin",
            directory / "seed.bin",
            directory / "stream.bin",
            SEED_FLOW_PATH,
        )
        bodies.check.write_bytes(grpc_frame(health_pb2.HealthCheckRequest()))
        bodies.seed.write_bytes(grpc_frame(seed_request()))
        bodies.stream.write_bytes(grpc_frame(to_stream_request(linear_flow(stream_tasks))))
        return bodies

    def for_method(self, method: str) -> Path:
        """The body of `CHECK`, `EXECUTE` or `REST`."""
        return {CHECK: self.check, EXECUTE: self.seed, REST: self.rest}[method]


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """Throughput and latency of one method at one number of calls in flight."""

    generator: str
    """"h2load" or "python"."""
    method: str
    """`CHECK` or `EXECUTE`."""
    in_flight: int
    """Calls in flight."""
    connections: int
    """HTTP/2 connections they were spread over."""
    requests: int
    """Calls measured (warm-up excluded), over all rounds."""
    seconds: float
    """Their total wall time."""
    p50_ms: float
    """Median call latency."""
    p99_ms: float
    """99th-percentile call latency."""
    server_cpu_us_per_call: float
    """Server CPU time (all threads, user + system) per call."""
    client_cpu_us_per_call: float
    """The load generator's CPU time per call."""
    other_cpu_cores: float
    """Cores kept busy meanwhile by everything else on the machine (h2load runs only)."""
    round_rps: tuple[float, ...]
    """Calls per second of each round, to show how steady the machine was."""
    discarded_rounds: int = 0
    """Rounds measured again because the rest of the machine was busy (h2load only)."""

    @property
    def rps(self) -> float:
        """Calls per second over all rounds."""
        return self.requests / self.seconds


@dataclass(frozen=True, slots=True)
class FlowSizePoint:
    """Server-side time of one linear flow size."""

    tasks: int
    """Tasks in the flow, all of which ran."""
    server_seconds: tuple[float, ...]
    """`ExecuteResponse.duration` of each execution."""
    client_seconds: tuple[float, ...]
    """Round trip of each call, as the client saw it."""

    @property
    def median_server_seconds(self) -> float:
        """Median server-side time."""
        return statistics.median(self.server_seconds)

    @property
    def median_client_seconds(self) -> float:
        """Median round trip."""
        return statistics.median(self.client_seconds)


@dataclass(frozen=True, slots=True)
class StreamResult:
    """Events delivered on one `ExecuteStream` call of a long flow."""

    tasks: int
    """Tasks in the flow."""
    events: int
    """Events in the stream (counted by the Python client)."""
    h2load_seconds: tuple[float, ...]
    """Each stream's time from request to end of response, with h2load."""
    server_cpu_us_per_event: float
    """Server CPU time per event during the h2load streams."""
    python_seconds: tuple[float, ...]
    """Each stream's time with the Python client."""

    @property
    def h2load_events_per_s(self) -> float:
        """Events per second, median stream, h2load."""
        return self.events / statistics.median(self.h2load_seconds)

    @property
    def python_events_per_s(self) -> float:
        """Events per second, median stream, Python client."""
        return self.events / statistics.median(self.python_seconds)


@dataclass(frozen=True, slots=True)
class MemoryResult:
    """Server RSS with many executions asleep in a task at once."""

    executions: int
    """Executions started; all completed."""
    in_flight: int
    """Executions that were running when RSS was read (all of them, or the run failed)."""
    baseline_rss_bytes: int
    """RSS after warm-up."""
    in_flight_rss_bytes: int
    """RSS with every execution asleep."""
    sleep_ms: int
    """How long each slept."""
    settle_seconds: float
    """From the first call to the measurement."""

    @property
    def bytes_per_execution(self) -> float:
        """RSS growth per execution in flight."""
        return (self.in_flight_rss_bytes - self.baseline_rss_bytes) / self.in_flight


@dataclass(frozen=True, slots=True)
class MulticoreResult:
    """Execute(seed) throughput of several server layouts, rounds interleaved."""

    in_flight: int
    """Calls in flight, over `connections` connections."""
    connections: int
    """HTTP/2 connections: the kernel spreads connections, not calls, over workers."""
    round_rps: dict[str, tuple[float, ...]]
    """Per layout ("workers1", "workers2", ..., and `REST_WORKERS` when measured), each
    round's calls per second."""
    rps: dict[str, float]
    """Per layout, calls per second over all rounds."""
    cpu_share: dict[str, tuple[float, ...]]
    """Per layout, each worker's share of the CPU time the layout used."""
    cores_used: dict[str, float]
    """Per layout, the servers' CPU seconds per second of load: cores kept busy."""
    other_cpu_cores: dict[str, float]
    """Per layout, cores kept busy meanwhile by other processes than the server and h2load."""
    discarded_rounds: int
    """Rounds measured again because the rest of the machine was busy."""


def shape(in_flight: int, http1: bool = False) -> tuple[int, int]:
    """(connections, streams per connection) for `in_flight` calls: up to 16 connections.

    HTTP/1.1 (the REST peer) has one request at a time per connection, so one
    connection per call in flight, as wrk and every HTTP/1.1 client do.
    """
    if http1:
        return in_flight, 1
    connections = min(in_flight, _MAX_CONNECTIONS)
    if in_flight % connections:
        raise ValueError(f"{in_flight} calls in flight do not divide over {connections}")
    return connections, in_flight // connections


def url_of(group: RunningServer, path: str) -> str:
    return f"http://{group.address}{path}"


def sized(config: BenchConfig, rps: float) -> int:
    wanted = round(rps * config.h2load_seconds)
    return max(config.h2load_min_requests, min(config.h2load_max_requests, wanted))


@dataclass(frozen=True, slots=True)
class Measured:
    """One h2load run and the CPU time spent around it."""

    run: H2loadRun
    server_cpu: tuple[float, ...]
    """Each worker's CPU seconds."""
    other_cpu: float
    """CPU seconds of every other process on the machine, h2load excluded."""


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


def h2load_with_cpu(
    group: RunningServer,
    *,
    url: str,
    body: Path,
    requests: int,
    in_flight: int,
    http1: bool = False,
) -> Measured:
    connections, streams = shape(in_flight, http1)
    before, machine_before = cpu_seconds(group), machine_busy_seconds()
    run = run_h2load(
        url=url,
        body=body,
        requests=requests,
        connections=connections,
        streams=streams,
        http1=http1,
    )
    after, machine_after = cpu_seconds(group), machine_busy_seconds()
    server = tuple(b - a for a, b in zip(before, after, strict=True))
    other = machine_after - machine_before - sum(server) - run.client_cpu_seconds
    return Measured(run, server, max(other, 0.0))


def wait_for_quiet(limit: float) -> float:
    """Waits up to `limit` seconds for the machine to be idle; returns the busy cores last seen.

    Idle means under `QUIET_CORES` cores busy over a one-second window.
    """
    deadline = time.monotonic() + limit
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = machine_busy_seconds() - before
        if busy < QUIET_CORES or time.monotonic() >= deadline:
            return busy


def alternating_rounds(
    config: BenchConfig,
    labels: Sequence[str],
    measure_one: Callable[[str], Measured],
) -> tuple[dict[str, list[Measured]], int]:
    """`config.rounds` rounds, each measuring every label back to back; and the rounds redone.

    The order alternates from round to round, so drift in the machine's speed
    hits every label alike. A round during which the rest of the machine kept
    more than `NOISY_CORES` cores busy in any run is thrown away and measured
    again (after waiting a little for the machine to quieten), at most
    `config.rounds // 2` times in all; the count of rounds thrown away is returned with the runs.
    """
    runs: dict[str, list[Measured]] = {label: [] for label in labels}
    attempt = discarded = 0
    while len(runs[labels[0]]) < config.rounds:
        order = list(labels) if attempt % 2 == 0 else list(reversed(labels))
        attempt += 1
        measured = {label: measure_one(label) for label in order}
        noisiest = max(m.other_cpu / m.run.seconds for m in measured.values())
        if config.redo_noisy_rounds and noisiest > NOISY_CORES and discarded < config.rounds // 2:
            discarded += 1
            wait_for_quiet(5.0)
            continue
        for label in labels:
            runs[label].append(measured[label])
    return runs, discarded


def transport_h2load(
    config: BenchConfig, group: RunningServer, bodies: Bodies, rest: RunningServer | None = None
) -> tuple[LoadPoint, ...]:
    """Health/Check and Execute(seed) with h2load, alternating, at each number in flight.

    With `rest` (the REST peer, `bench.rest_peer`), its `POST /flow/execute`
    of the same flow joins every round as a third label.
    """
    targets = {
        CHECK: (group, url_of(group, _METHOD_PATHS[CHECK])),
        EXECUTE: (group, url_of(group, _METHOD_PATHS[EXECUTE])),
    }
    for method, (_, url) in targets.items():
        probe(url=url, body=bodies.for_method(method))
    if rest is not None:
        rest_peer.probe(rest)
        targets[REST] = (rest, url_of(rest, rest_peer.EXECUTE_PATH))
    points = []
    for in_flight in config.in_flight:

        def measure_one(method: str, requests: int, in_flight: int = in_flight) -> Measured:
            server, url = targets[method]
            return h2load_with_cpu(
                server,
                url=url,
                body=bodies.for_method(method),
                requests=requests,
                in_flight=in_flight,
                http1=method == REST,
            )

        counts = {
            method: sized(config, measure_one(method, config.warmup_requests).run.rps)
            for method in targets
        }
        runs, discarded = alternating_rounds(
            config,
            tuple(targets),
            lambda method, counts=counts: measure_one(method, counts[method]),
        )
        for method in targets:
            points.append(h2load_point(method, in_flight, runs[method], discarded))
    return tuple(points)


def h2load_point(method: str, in_flight: int, runs: list[Measured], discarded: int) -> LoadPoint:
    requests = sum(m.run.requests for m in runs)
    seconds = sum(m.run.seconds for m in runs)
    latencies = [latency for m in runs for latency in m.run.latencies_us]
    return LoadPoint(
        generator="h2load",
        method=method,
        in_flight=in_flight,
        connections=shape(in_flight, method == REST)[0],
        requests=requests,
        seconds=seconds,
        p50_ms=percentile(latencies, 0.50) / 1000,
        p99_ms=percentile(latencies, 0.99) / 1000,
        server_cpu_us_per_call=sum(sum(m.server_cpu) for m in runs) / requests * 1e6,
        client_cpu_us_per_call=sum(m.run.client_cpu_seconds for m in runs) / requests * 1e6,
        other_cpu_cores=sum(m.other_cpu for m in runs) / seconds,
        round_rps=tuple(m.run.rps for m in runs),
        discarded_rounds=discarded,
    )


def _check_health_reply(reply: bytes) -> None:
    response = health_pb2.HealthCheckResponse.FromString(reply)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"health check answered {response.status}")


def _check_execute_reply(reply: bytes) -> None:
    grpc_load.check_execute_reply(reply)


def transport_python(
    config: BenchConfig, group: RunningServer, bodies: Bodies
) -> tuple[LoadPoint, ...]:
    """The same comparison with the Python grpc.aio generator (one channel), alternating rounds."""
    checks: dict[str, Callable[[bytes], None]] = {
        CHECK: _check_health_reply,
        EXECUTE: _check_execute_reply,
    }

    def load(method: str, in_flight: int, requests: int) -> tuple[grpc_load.LoadRun, float]:
        before = sum(cpu_seconds(group))
        run = asyncio.run(
            grpc_load.unary_load(
                group.address,
                _METHOD_PATHS[method],
                bodies.for_method(method).read_bytes()[5:],  # without the frame prefix
                in_flight=in_flight,
                requests=requests,
                check_reply=checks[method],
            )
        )
        return run, sum(cpu_seconds(group)) - before

    points = []
    for in_flight in config.in_flight:
        runs: dict[str, list[tuple[grpc_load.LoadRun, float]]] = {CHECK: [], EXECUTE: []}
        for method in (CHECK, EXECUTE):
            load(method, in_flight, config.warmup_requests)
        for round_ in range(config.python_rounds):
            for method in (CHECK, EXECUTE) if round_ % 2 == 0 else (EXECUTE, CHECK):
                runs[method].append(load(method, in_flight, config.python_requests))
        for method, measured in runs.items():
            requests = sum(run.requests for run, _ in measured)
            latencies = [latency for run, _ in measured for latency in run.latencies_us]
            points.append(
                LoadPoint(
                    generator="python",
                    method=method,
                    in_flight=in_flight,
                    connections=1,
                    requests=requests,
                    seconds=sum(run.seconds for run, _ in measured),
                    p50_ms=percentile(latencies, 0.50) / 1000,
                    p99_ms=percentile(latencies, 0.99) / 1000,
                    server_cpu_us_per_call=sum(cpu for _, cpu in measured) / requests * 1e6,
                    client_cpu_us_per_call=sum(run.client_cpu_seconds for run, _ in measured)
                    / requests
                    * 1e6,
                    other_cpu_cores=0.0,
                    round_rps=tuple(run.rps for run, _ in measured),
                )
            )
    return tuple(points)


def engine_micro(config: BenchConfig) -> EngineMicroResult:
    """`bench.engine_micro` in a fresh interpreter of its own."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.engine_micro", *engine_micro_args(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"engine microbenchmark failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout)
    return EngineMicroResult(result["steps"], tuple(result["seconds"]))


def engine_micro_args(config: BenchConfig) -> list[str]:
    """The `python -m bench.engine_micro` arguments of `config`."""
    return ["--steps", str(config.engine_steps), "--repeats", str(config.engine_repeats)]


def flow_sizes(config: BenchConfig, group: RunningServer) -> tuple[FlowSizePoint, ...]:
    """Server-side time (`ExecuteResponse.duration`) of linear flows of each size."""
    points = []
    for tasks, repeats in zip(config.flow_sizes, config.flow_repeats, strict=True):
        body = to_execute_request(linear_flow(tasks)).SerializeToString()
        server, client = [], []
        for run in range(repeats + 1):  # the first is a warm-up
            reply, seconds = asyncio.run(
                grpc_load.call_unary(group.address, grpc_load.EXECUTE_METHOD, body)
            )
            response = grpc_load.check_execute_reply(reply)
            if len(response.executed_tasks) != tasks:
                raise RuntimeError(f"{len(response.executed_tasks)} of {tasks} tasks ran")
            if run:
                server.append(response.duration.ToTimedelta().total_seconds())
                client.append(seconds)
        points.append(FlowSizePoint(tasks, tuple(server), tuple(client)))
    return tuple(points)


def streaming(config: BenchConfig, group: RunningServer, bodies: Bodies) -> StreamResult:
    """Events per second on one `ExecuteStream` of the long flow: Python client, then h2load."""
    body = bodies.stream.read_bytes()[5:]
    python_runs = []
    for repeat in range(config.stream_repeats + 1):  # the first is a warm-up
        stream = asyncio.run(grpc_load.stream_once(group.address, body))
        finished = stream.last.execution_finished.result
        if (
            not stream.last.HasField("execution_finished")
            or finished.status != flow_service_pb2.EXECUTION_STATUS_COMPLETED
            or len(finished.executed_tasks) != config.stream_tasks
        ):
            raise RuntimeError(f"the stream did not finish the flow: {stream.last}")
        if repeat:
            python_runs.append(stream)
    events = python_runs[0].events
    url = url_of(group, grpc_load.STREAM_METHOD)
    probe(url=url, body=bodies.stream)
    h2load_seconds = []
    cpu = 0.0
    for _ in range(config.stream_repeats):
        before = sum(cpu_seconds(group))
        run = run_h2load(
            url=url,
            body=bodies.stream,
            requests=1,
            connections=1,
            streams=1,
            # Every event is a frame of at least 6 bytes; most are far larger.
            min_data_bytes=events * 6,
        )
        cpu += sum(cpu_seconds(group)) - before
        if run.data_bytes < 0.95 * (python_runs[0].data_bytes + 5 * events):
            raise RuntimeError(
                f"h2load got {run.data_bytes} bytes of events, the Python client "
                f"{python_runs[0].data_bytes}: the stream ended early"
            )
        h2load_seconds.append(run.latencies_us[0] / 1e6)
    return StreamResult(
        tasks=config.stream_tasks,
        events=events,
        h2load_seconds=tuple(h2load_seconds),
        server_cpu_us_per_event=cpu / (events * config.stream_repeats) * 1e6,
        python_seconds=tuple(stream.seconds for stream in python_runs),
    )


def memory(config: BenchConfig, group: RunningServer) -> MemoryResult:
    """RSS growth per execution with `memory_executions` asleep in a `mock` task at once."""
    (pid,) = group.workers
    run = asyncio.run(
        grpc_load.sleeping_in_flight(
            group.address,
            server_pid=pid,
            body=to_execute_request(sleeping_flow(config.memory_sleep_ms)).SerializeToString(),
            executions=config.memory_executions,
            warmup_body=to_execute_request(sleeping_flow(100)).SerializeToString(),
            warmup_executions=min(200, config.memory_executions),
            settle_timeout=config.memory_sleep_ms / 1000 * 0.8,
        )
    )
    if run.in_flight_at_measurement != run.executions:
        raise RuntimeError(
            f"only {run.in_flight_at_measurement} of {run.executions} executions were "
            "in flight when memory was measured"
        )
    return MemoryResult(
        executions=run.executions,
        in_flight=run.in_flight_at_measurement,
        baseline_rss_bytes=run.baseline_rss_bytes,
        in_flight_rss_bytes=run.in_flight_rss_bytes,
        sleep_ms=config.memory_sleep_ms,
        settle_seconds=run.settle_seconds,
    )


def multicore(
    config: BenchConfig,
    layouts: dict[str, RunningServer],
    bodies: Bodies,
    rest: RunningServer | None = None,
) -> MulticoreResult:
    """Execute(seed) with h2load against each layout, rounds interleaved across layouts.

    With `rest` (the REST peer with its workers), its `POST /flow/execute` of
    the same flow joins every round as the label `REST_WORKERS`, at the same
    calls in flight over HTTP/1.1: one connection per call, as in the transport section.
    """
    in_flight = config.multicore_in_flight
    targets = {
        label: (group, url_of(group, grpc_load.EXECUTE_METHOD), bodies.seed, False)
        for label, group in layouts.items()
    }
    if rest is not None:
        targets[REST_WORKERS] = (rest, url_of(rest, rest_peer.EXECUTE_PATH), bodies.rest, True)

    def measure_one(label: str, requests: int) -> Measured:
        group, url, body, http1 = targets[label]
        return h2load_with_cpu(
            group, url=url, body=body, requests=requests, in_flight=in_flight, http1=http1
        )

    for group, url, body, http1 in targets.values():
        if http1:
            rest_peer.probe(group)
        else:
            probe(url=url, body=body)
    counts = {
        label: sized(config, measure_one(label, config.warmup_requests).run.rps)
        for label in targets
    }
    runs, discarded = alternating_rounds(
        config, list(targets), lambda label: measure_one(label, counts[label])
    )
    cpu_share, cores_used, other, rps, round_rps = {}, {}, {}, {}, {}
    for label, measured in runs.items():
        seconds = sum(m.run.seconds for m in measured)
        per_worker = [sum(cpus) for cpus in zip(*(m.server_cpu for m in measured), strict=True)]
        cpu_share[label] = tuple(cpu / sum(per_worker) for cpu in per_worker)
        cores_used[label] = sum(per_worker) / seconds
        other[label] = sum(m.other_cpu for m in measured) / seconds
        rps[label] = sum(m.run.requests for m in measured) / seconds
        round_rps[label] = tuple(m.run.rps for m in measured)
    return MulticoreResult(
        in_flight=in_flight,
        connections=shape(in_flight)[0],
        round_rps=round_rps,
        rps=rps,
        cpu_share=cpu_share,
        cores_used=cores_used,
        other_cpu_cores=other,
        discarded_rounds=discarded,
    )
