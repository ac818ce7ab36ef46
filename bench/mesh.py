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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from google.protobuf import json_format

from bench.grpc_load import EXECUTE_METHOD, unary_load
from bench.workers import serving
from flowmanager.v1 import flow_service_pb2

VALIDATE_METHOD = "/flowmanager.v1.FlowService/Validate"
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mesh", description=__doc__)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as work:
        figures = asyncio.run(measure(args.requests, args.in_flight, Path(work)))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
