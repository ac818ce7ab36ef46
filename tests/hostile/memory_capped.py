"""A real server subprocess whose address space is capped with `RLIMIT_AS`.

A request that makes the server allocate without bound then fails inside the
capped process (a `MemoryError`, or the process dies) instead of exhausting
the machine that runs the tests, so a regression fails the test.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["ADDRESS_SPACE", "CappedServer", "capped_server", "health_status"]

REPO_ROOT = Path(__file__).resolve().parents[2]
ADDRESS_SPACE = 1536 * 1024 * 1024
"""The server's address-space cap: an idle server maps about 600 MiB (thread
stacks, the CEL runtime), so each memory bomb here is sized to need more than this."""
STARTUP_TIMEOUT = 15.0
_LISTENING = re.compile(r"Flow Manager listening on 127\.0\.0\.1:(\d+)")


class CappedServer:
    """A capped server process and where it listens."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.address = f"127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        """Everything the server has logged so far."""
        return self.log_path.read_text(errors="replace")


def _cap_address_space() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@contextmanager
def capped_server(log_path: Path, flags: Sequence[str] = ()) -> Iterator[CappedServer]:
    """Runs `python -m flowservice` on 127.0.0.1:0 under `ADDRESS_SPACE` until the block exits."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWMANAGER_")}
    env["MALLOC_ARENA_MAX"] = "2"  # glibc reserves 64 MiB of address space per thread arena
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowservice", "--address", "127.0.0.1:0", *flags],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_cap_address_space,
        )
    try:
        yield CappedServer(process, _wait_for_port(process, log_path), log_path)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=15)


def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"the capped server did not start:\n{log_path.read_text()}")


def health_status(address: str) -> int:
    """The overall Health/Check status of the server at `address`."""
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return int(response.status)
