"""`python -m bench.stream_floor`: what grpc.aio costs per streamed message, with no work at all.

The ExecuteStream figure of `make bench` (events/s on one stream of a
10,000-task flow) has a floor that no engine can go below: grpc.aio's own
work for each message a server-streaming handler yields. This measures it: a
server process (this module with `--serve`, on uvloop, as the Flow Manager
runs) whose `ExecuteStream` yields the same prepared `task_started` message
`--messages` times, streamed by h2load to 127.0.0.1, one stream at a time.
It prints the messages per second and the server's CPU time per message
(all its threads, from `/proc`), as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from bench.flows import REPO_ROOT, grpc_frame
from bench.h2load import run_h2load
from flowmanager.v1 import flow_service_pb2

__all__ = ["main"]

_METHOD = "/flowmanager.v1.FlowService/ExecuteStream"


def _serve(messages: int) -> None:
    """Serves the bare ExecuteStream on a free port, printed first; runs until killed."""
    import grpc
    import uvloop

    message = flow_service_pb2.ExecuteStreamResponse(execution_id="x" * 36, sequence=5)
    message.task_started.task, message.task_started.type = "task1", "mock"

    async def stream(request: bytes, context: Any) -> AsyncIterator[Any]:
        for _ in range(messages):
            yield message

    async def serve() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_stream_rpc_method_handler(
            stream, response_serializer=flow_service_pb2.ExecuteStreamResponse.SerializeToString
        )
        service = grpc.method_handlers_generic_handler(
            "flowmanager.v1.FlowService", {"ExecuteStream": handler}
        )
        server.add_generic_rpc_handlers((service,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    uvloop.run(serve())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(messages: int, streams: int) -> dict[str, float]:
    """Streams `streams` calls of `messages` messages each from a bare server; the figures."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.stream_floor", "--serve", "--messages", str(messages)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="stream-floor-") as tmp:
            body = Path(tmp) / "empty.bin"
            body.write_bytes(grpc_frame(flow_service_pb2.ExecuteStreamRequest()))
            url = f"http://127.0.0.1:{port}{_METHOD}"
            run_h2load(url=url, body=body, requests=1, connections=1, streams=1)  # warm-up
            cpu, started = _cpu_seconds(server.pid), time.perf_counter()
            run_h2load(url=url, body=body, requests=streams, connections=1, streams=1)
            seconds = time.perf_counter() - started
            cpu = _cpu_seconds(server.pid) - cpu
    finally:
        server.kill()
        server.wait()
    total = messages * streams
    return {
        "messages": total,
        "messages_per_s": total / seconds,
        "server_cpu_us_per_message": cpu / total * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_floor", description=__doc__)
    parser.add_argument("--messages", type=int, default=30_000, help="messages per stream")
    parser.add_argument("--streams", type=int, default=5, help="streams, one after the other")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.messages)
        return 0
    print(json.dumps(measure(args.messages, args.streams)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
