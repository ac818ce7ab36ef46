"""What the execution history costs: Execute(seed) on SQLite against `--store memory`.

Two servers, alike but for `--store`, take Execute(seed) from h2load in
rounds that alternate between them (`measure.alternating_rounds`), so that
the shared machine's drift hits both alike; the figure is the median of the
rounds' ratios, with every round's ratio beside it. Then StartExecution(seed)
on the SQLite server: its calls per second while the executions it starts
run (and are recorded) in the background, and how long after the last reply
the last of them finished.

Run alone (`python -m bench.history`) it prints the rounds, which is how the
store's write path is tuned.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.config import FULL, SMOKE, BenchConfig
from bench.h2load import probe
from bench.measure import (
    EXECUTE,
    Bodies,
    LoadPoint,
    Measured,
    alternating_rounds,
    h2load_point,
    h2load_with_cpu,
    sized,
    url_of,
)
from bench.workers import RunningServer, serving
from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import execution_service_pb2_grpc

__all__ = ["MEMORY", "SQLITE", "START", "StoreResult", "store_cost"]

MEMORY = "Execute(seed), --store memory"
SQLITE = "Execute(seed), SQLite store"
START = "StartExecution(seed), SQLite store"
_EXECUTE_PATH = "/flowmanager.v1.FlowService/Execute"
_START_PATH = "/flowmanager.v1.ExecutionService/StartExecution"
_DRAIN_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Execute(seed) with each store, alternating rounds; StartExecution with SQLite."""

    in_flight: int
    """Calls in flight."""
    memory: LoadPoint
    """Execute(seed) against the server with `--store memory`."""
    sqlite: LoadPoint
    """Execute(seed) against the server with an SQLite file."""
    start: LoadPoint
    """StartExecution(seed) against the SQLite server."""
    drain_seconds: float
    """From the last StartExecution reply until none of the executions ran any longer."""

    @property
    def round_ratios(self) -> tuple[float, ...]:
        """SQLite ÷ memory calls per second, round by round."""
        return tuple(
            s / m for s, m in zip(self.sqlite.round_rps, self.memory.round_rps, strict=True)
        )

    @property
    def ratio(self) -> float:
        """The median of `round_ratios`."""
        return statistics.median(self.round_ratios)


def store_cost(
    config: BenchConfig, memory: RunningServer, sqlite: RunningServer, bodies: Bodies
) -> StoreResult:
    """Measures both stores at `config.multicore_in_flight` calls in flight."""
    in_flight = config.multicore_in_flight
    servers = {MEMORY: memory, SQLITE: sqlite}
    for server in servers.values():
        probe(url=url_of(server, _EXECUTE_PATH), body=bodies.seed)
    counts = {
        label: sized(config, _warm(server, _EXECUTE_PATH, bodies, in_flight, config).run.rps)
        for label, server in servers.items()
    }
    common = min(counts.values())  # the same calls for both: the ratio compares like with like

    def measure_one(label: str) -> Measured:
        return _load(servers[label], _EXECUTE_PATH, bodies, in_flight, common)

    runs, discarded = alternating_rounds(config, (MEMORY, SQLITE), measure_one)
    start_runs, drain = _starts(config, sqlite, bodies, in_flight)
    return StoreResult(
        in_flight=in_flight,
        memory=h2load_point(MEMORY, in_flight, runs[MEMORY], discarded),
        sqlite=h2load_point(SQLITE, in_flight, runs[SQLITE], discarded),
        start=h2load_point(START, in_flight, start_runs, 0),
        drain_seconds=drain,
    )


def _warm(
    server: RunningServer, path: str, bodies: Bodies, in_flight: int, config: BenchConfig
) -> Measured:
    return _load(server, path, bodies, in_flight, config.warmup_requests)


def _load(
    server: RunningServer, path: str, bodies: Bodies, in_flight: int, requests: int
) -> Measured:
    return h2load_with_cpu(
        server, url=url_of(server, path), body=bodies.seed, requests=requests, in_flight=in_flight
    )


def _starts(
    config: BenchConfig, server: RunningServer, bodies: Bodies, in_flight: int
) -> tuple[list[Measured], float]:
    """StartExecution rounds; after each, the wait until its executions have all finished."""
    requests = sized(config, _warm(server, _START_PATH, bodies, in_flight, config).run.rps)
    asyncio.run(_until_none_runs(server.address))
    runs: list[Measured] = []
    drain = 0.0
    for _ in range(config.rounds):
        runs.append(_load(server, _START_PATH, bodies, in_flight, requests))
        started = time.perf_counter()
        asyncio.run(_until_none_runs(server.address))
        drain = max(drain, time.perf_counter() - started)
    return runs, drain


async def _until_none_runs(address: str) -> None:
    """Returns once the server's history holds no running execution.

    Watches each running one to its end (WatchExecution ends when it does).
    """
    async with grpc.aio.insecure_channel(address) as channel:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
        running = pb.ListExecutionsRequest(page_size=1, state=pb.EXECUTION_STATE_RUNNING)
        async with asyncio.timeout(_DRAIN_TIMEOUT):
            while found := (await stub.ListExecutions(running)).executions:
                watch = pb.WatchExecutionRequest(execution_id=found[0].execution_id)
                async for _ in stub.WatchExecution(watch):
                    pass


def server_pair(
    stack: ExitStack, work: Path, flags: Sequence[str]
) -> tuple[RunningServer, RunningServer]:
    """The `--store memory` server and the SQLite one (its file in `work`), one process each."""
    memory = stack.enter_context(
        serving(work / "store-memory.log", [*flags, "--store", "memory"], graceful_stop=True)
    )
    sqlite = stack.enter_context(
        serving(
            work / "store-sqlite.log",
            [*flags, "--store", str(work / "store-sqlite.db")],
            graceful_stop=True,
        )
    )
    return memory, sqlite


def main(argv: Sequence[str] | None = None) -> int:
    """Measures the store's cost alone and prints every round."""
    from bench.__main__ import server_flags

    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few hundred calls")
    parser.add_argument("--rounds", type=int, help="rounds of each store (default: the profile's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-history"))
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else FULL
    if args.rounds:
        config = dataclasses.replace(config, rounds=args.rounds)
    shutil.rmtree(args.work, ignore_errors=True)  # a fresh history file, as `make bench` has
    args.work.mkdir(parents=True)
    with ExitStack() as stack:
        bodies = Bodies.write(args.work, config.stream_tasks)
        memory, sqlite = server_pair(stack, args.work, server_flags(config))
        result = store_cost(config, memory, sqlite, bodies)
    print(f"{EXECUTE} at {result.in_flight} in flight, calls/s per round:")
    print("  memory:", " ".join(f"{rps:,.0f}" for rps in result.memory.round_rps))
    print("  sqlite:", " ".join(f"{rps:,.0f}" for rps in result.sqlite.round_rps))
    print("  ratio: ", " ".join(f"{ratio:.2f}" for ratio in result.round_ratios))
    print(f"  median ratio {result.ratio:.2f}")
    memory_cpu = result.memory.server_cpu_us_per_call
    sqlite_cpu = result.sqlite.server_cpu_us_per_call
    print(
        f"  server CPU per call: memory {memory_cpu:.0f} µs, sqlite {sqlite_cpu:.0f} µs"
        f" (ratio {memory_cpu / sqlite_cpu:.2f})"
    )
    print(
        f"{START}: {result.start.rps:,.0f} calls/s "
        f"(rounds {' '.join(f'{r:,.0f}' for r in result.start.round_rps)}); "
        f"last execution finished {result.drain_seconds:.2f} s after the last reply"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
