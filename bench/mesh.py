"""`python -m bench.mesh`: what a `grpc` task costs over calling the service directly.

Two servers on one machine: a target Flow Manager, and a caller allowed to
call it. The same load (`--requests` calls, `--in-flight` at once) goes
once straight to the target's `Validate`, once to the caller's `Execute`
with a flow of one `grpc` task that calls that `Validate`. The figure is
the ratio of the throughputs (the issue's goal: at least 0.7). Each server
is one process; on a 2-core machine the two servers and the client share
the cores, so the ratio is a floor. The same flow with a `mock` task in
place of the `grpc` one tells the cost of `Execute` itself from that of
the call.

The worker round trip: a real worker process (examples/worker.py, a
`flowservice.Worker`) serves a queue of the caller, and `--round-trips`
Executes of a flow with one `worker` task run one after the other. The
figure is the p50/p99 of that task's `duration` in the reply: from the
attempt's start (the assignment is queued and pushed on the worker's
stream at once) to the worker's result received and applied. Also given:
the p50 of the whole Execute call with the `worker` task minus that with a
`mock` task, the same measured from the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.protobuf import json_format

from bench.flows import REPO_ROOT
from bench.grpc_load import EXECUTE_METHOD, unary_load
from bench.workers import serving
from flowmanager.v1 import flow_service_pb2

VALIDATE_METHOD = "/flowmanager.v1.FlowService/Validate"
WORKER_QUEUE = "bench"
INNER = {"flow": {"id": "inner", "name": "inner", "start_task": "a", "tasks": [{"name": "a"}]}}


def _outer(target: str) -> bytes:
    return _execute(
        {
            "type": "grpc",
            "params": {
                "target": target,
                "method": "flowmanager.v1.FlowService/Validate",
                "request": INNER,
            },
        }
    )


def _execute(task: dict[str, object]) -> bytes:
    """An ExecuteRequest for a flow of one task named `call`."""
    body = {
        "flow": {
            "id": "outer",
            "name": "outer",
            "start_task": "call",
            "tasks": [{"name": "call", **task}],
        }
    }
    return json_format.ParseDict(body, flow_service_pb2.ExecuteRequest()).SerializeToString()


def _check_valid(reply: bytes) -> None:
    assert flow_service_pb2.ValidateResponse.FromString(reply).valid


def _check_completed(reply: bytes) -> None:
    response = flow_service_pb2.ExecuteResponse.FromString(reply)
    assert response.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED, response


async def measure(requests: int, in_flight: int, work: Path) -> dict[str, float]:
    """Throughputs (calls/s) direct and through a flow, and their ratio."""
    validate = json_format.ParseDict(INNER, flow_service_pb2.ValidateRequest())
    with serving(work / "target.log") as target:
        flags = ["--allow-target", target.address, "--max-concurrent-executions", "5000"]
        with serving(work / "caller.log", flags) as caller:
            options = {"in_flight": in_flight, "requests": requests}
            await unary_load(  # warm both up: channels, reflection
                caller.address,
                EXECUTE_METHOD,
                _outer(target.address),
                in_flight=4,
                requests=50,
                check_reply=_check_completed,
            )
            direct = await unary_load(
                target.address,
                VALIDATE_METHOD,
                validate.SerializeToString(),
                check_reply=_check_valid,
                **options,
            )
            through = await unary_load(
                caller.address,
                EXECUTE_METHOD,
                _outer(target.address),
                check_reply=_check_completed,
                **options,
            )
            mock = await unary_load(
                caller.address,
                EXECUTE_METHOD,
                _execute({"type": "mock"}),
                check_reply=_check_completed,
                **options,
            )
    direct_rate = direct.requests / direct.seconds
    flow_rate = through.requests / through.seconds
    return {
        "direct_calls_per_second": round(direct_rate, 1),
        "grpc_task_flows_per_second": round(flow_rate, 1),
        "ratio": round(flow_rate / direct_rate, 3),
        # The same flow with a `mock` task instead: what Execute costs without the call.
        "mock_task_flows_per_second": round(mock.requests / mock.seconds, 1),
    }


@contextmanager
def _worker_process(address: str, log: Path) -> Iterator[None]:
    """examples/worker.py serving WORKER_QUEUE of `address`, until the block ends."""
    command = [sys.executable, str(REPO_ROOT / "examples" / "worker.py"), address]
    with (
        log.open("w") as errors,
        subprocess.Popen(
            [*command, "--queue", WORKER_QUEUE], stdout=subprocess.PIPE, stderr=errors, text=True
        ) as process,
    ):
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != f"serving {WORKER_QUEUE}":
                raise RuntimeError(f"the worker did not start; see {log}")
            yield
        finally:
            process.terminate()
            process.wait(timeout=10)


async def _sequential(address: str, body: bytes, count: int) -> tuple[list[float], list[float]]:
    """`count` Executes one after the other: each call's and its task's duration (µs)."""
    calls: list[float] = []
    tasks: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        execute: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            EXECUTE_METHOD
        )
        for _ in range(count):
            started = time.perf_counter()
            reply: bytes = await execute(body, timeout=10)
            calls.append((time.perf_counter() - started) * 1e6)
            response = flow_service_pb2.ExecuteResponse.FromString(reply)
            _check_completed(reply)
            tasks.append(response.task_results[0].duration.ToNanoseconds() / 1e3)
    return calls, tasks


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def worker_round_trip(count: int, work: Path) -> dict[str, float]:
    """The worker task's duration (p50/p99, µs), and the call's cost over a `mock` task."""
    worker_flow = _execute({"type": "worker", "params": {"queue": WORKER_QUEUE}})
    with (
        serving(work / "workers-server.log") as server,
        _worker_process(server.address, work / "worker.log"),
    ):
        await _sequential(server.address, worker_flow, 50)  # warm up
        calls, tasks = await _sequential(server.address, worker_flow, count)
        mock_calls, _ = await _sequential(server.address, _execute({"type": "mock"}), count)
    return {
        "worker_round_trip_p50_us": round(_percentile(tasks, 0.5), 1),
        "worker_round_trip_p99_us": round(_percentile(tasks, 0.99), 1),
        "worker_call_p50_us": round(statistics.median(calls), 1),
        "mock_call_p50_us": round(statistics.median(mock_calls), 1),
        "worker_call_minus_mock_p50_us": round(
            statistics.median(calls) - statistics.median(mock_calls), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mesh", description=__doc__)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--round-trips", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as work:
        figures = asyncio.run(measure(args.requests, args.in_flight, Path(work)))
        figures |= asyncio.run(worker_round_trip(args.round_trips, Path(work)))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
