"""`python -m bench.core.server`: Execute(seed) ÷ Health/Check with the compiled core in a server.

The Flow Manager's own server (`create_server`, `--store memory` unless told, its
interceptors, uvloop, its collector frozen after start-up as `serve` does;
this module with `--serve`) with two bench-only methods added through a
generic handler that takes and returns bytes (no message parsed or built in
Python; a plan's tables are kept by the request's bytes, as the plan cache
keeps plans): `/bench.Core/Execute`, the compiled core, and
`/bench.Core/Minimal`, the minimal Python loop. Every call of every method
goes through the same interceptors, so their calls per second compare with
the same server's `grpc.health.v1.Health/Check` and today's
`/flowmanager.v1.FlowService/Execute` in the same rounds.

h2load drives each at 8 in flight (8 connections) and 64 (16 connections of
4 streams), as `make bench` does; the labels alternate round by round, and
each ratio is the median of its rounds' ratios to the same round's Check.
It prints one JSON object per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2

from bench.core.minimal import execute_minimal, minimal_plan
from bench.core.runner import compiled, core_plan, execute
from bench.flows import REPO_ROOT, grpc_frame, seed_request
from bench.h2load import run_h2load
from flowmanager.v1 import flow_service_pb2
from flowservice.engine._plan import Plan
from flowservice.tasks import builtin_registry

__all__ = ["main"]

_PATHS = {
    "Health/Check": "/grpc.health.v1.Health/Check",
    "today's Execute": "/flowmanager.v1.FlowService/Execute",
    "core Execute": "/bench.Core/Execute",
    "minimal Execute": "/bench.Core/Minimal",
}
_LAYOUTS = {8: (8, 1), 64: (16, 4)}  # in flight: (connections, streams per connection)


def _raw_execute(
    make: Callable[[Plan], Any], run: Callable[[Any], Awaitable[bytes | None]]
) -> Callable[[bytes, Any], Awaitable[bytes]]:
    """A handler of Execute's bytes: the tables `make` builds of the request's plan, kept
    by its bytes (compiled on first sight, as the plan cache does), run by `run`."""
    registry = builtin_registry()
    tables: dict[bytes, Any] = {}

    async def execute(raw: bytes, context: Any) -> bytes:
        found = tables.get(raw)
        if found is None:
            request = flow_service_pb2.ExecuteRequest.FromString(raw)
            found = tables[raw] = make(compiled(request, registry))
        reply = await run(found)
        assert reply is not None
        return reply

    return execute


def _serve(store: str) -> None:
    """The Flow Manager's server plus the bench methods, on a free port (printed first)."""
    import gc

    import grpc
    import uvloop

    from flowservice.server import create_server
    from flowservice.settings import Settings

    raw = grpc.unary_unary_rpc_method_handler
    methods: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Execute": raw(_raw_execute(core_plan, lambda tables: execute(tables, {}))),
        "Minimal": raw(
            _raw_execute(minimal_plan, lambda tables: execute_minimal(tables, {}, True))
        ),
    }

    async def serve() -> None:
        flow_server = create_server(Settings(address="127.0.0.1:0", store=store))
        flow_server.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("bench.Core", methods),)
        )
        await flow_server.start()
        gc.collect()
        gc.freeze()  # as `flowservice.server.serve` does
        print(flow_server.port, flush=True)
        await flow_server.server.wait_for_termination()

    uvloop.run(serve())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bodies(directory: Path) -> dict[str, Path]:
    """Each label's request body: the seed for the Executes, an empty request for Check."""
    execute = grpc_frame(seed_request())
    check = grpc_frame(health_pb2.HealthCheckRequest())
    bodies = {}
    for label in _PATHS:
        bodies[label] = directory / f"{label.replace(' ', '_').replace('/', '_')}.bin"
        bodies[label].write_bytes(check if label == "Health/Check" else execute)
    return bodies


def measure(rounds: int, seconds: float, store: str) -> list[dict[str, Any]]:
    """Each label at each load, `rounds` alternating rounds of about `seconds` each."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.core.server", "--serve", "--store", store],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    )
    figures: list[dict[str, Any]] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
            bodies = _bodies(Path(tmp))
            for in_flight, layout in _LAYOUTS.items():
                load = _Load(port, server.pid, bodies, layout)
                sizes = {label: max(int(load(label, 1000)[0] * seconds), 500) for label in _PATHS}
                runs: dict[str, list[tuple[float, float]]] = {label: [] for label in _PATHS}
                for _ in range(rounds):
                    for label in _PATHS:
                        runs[label].append(load(label, sizes[label]))
                figures.extend(_figures(in_flight, runs))
    finally:
        server.kill()
        server.wait()
    return figures


class _Load:
    """h2load runs against the bench server at one load: (calls/s, server CPU s per call)."""

    def __init__(self, port: int, pid: int, bodies: dict[str, Path], layout: tuple[int, int]):
        self._port, self._pid, self._bodies, self._layout = port, pid, bodies, layout

    def __call__(self, label: str, requests: int) -> tuple[float, float]:
        cpu = _cpu_seconds(self._pid)
        run = run_h2load(
            url=f"http://127.0.0.1:{self._port}{_PATHS[label]}",
            body=self._bodies[label],
            requests=requests,
            connections=self._layout[0],
            streams=self._layout[1],
        )
        return run.rps, (_cpu_seconds(self._pid) - cpu) / requests


def _figures(in_flight: int, runs: dict[str, list[tuple[float, float]]]) -> list[dict[str, Any]]:
    checks = [rps for rps, _ in runs["Health/Check"]]
    return [
        {
            "label": label,
            "in_flight": in_flight,
            "calls_per_s_median": round(statistics.median(rps for rps, _ in found)),
            "server_cpu_us_per_call_median": round(
                statistics.median(cpu for _, cpu in found) * 1e6
            ),
            "ratio_to_check_median": round(
                statistics.median(
                    rps / check for (rps, _), check in zip(found, checks, strict=True)
                ),
                3,
            ),
            "ratios": [
                round(rps / check, 2) for (rps, _), check in zip(found, checks, strict=True)
            ],
        }
        for label, found in runs.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core.server", description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.5, help="about how long each run lasts")
    parser.add_argument(
        "--store", default="memory", help="the server's history: memory, or an SQLite file"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.store)
        return 0
    started = time.time()
    for figure in measure(args.rounds, args.seconds, args.store):
        print(json.dumps(figure))
    print(json.dumps({"seconds": round(time.time() - started), "load_average": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
