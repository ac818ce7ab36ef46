"""The hostile tests' server: a real server subprocess whose address space is capped.

A request that makes the server allocate without bound then fails inside the
capped process (a `MemoryError`, or the process dies) instead of exhausting
the machine that runs the tests, so a regression fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.server_process import RunningServer, serving

__all__ = ["ADDRESS_SPACE", "CappedServer", "capped_server", "health_status"]

ADDRESS_SPACE = 1536 * 1024 * 1024
"""The server's address-space cap: an idle server maps about 600 MiB (thread
stacks, the CEL runtime), so each memory bomb here is sized to need more than this."""

CappedServer = RunningServer
"""A capped server process and where it listens."""


@contextmanager
def capped_server(
    log_path: Path, flags: Sequence[str] = (), address_space: int = ADDRESS_SPACE
) -> Iterator[CappedServer]:
    """Runs `python -m flowservice` on 127.0.0.1:0 under `address_space` until the block exits."""
    with serving(log_path, flags, address_space=address_space) as server:
        yield server


def health_status(address: str) -> int:
    """The overall Health/Check status of the server at `address`."""
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return int(response.status)
