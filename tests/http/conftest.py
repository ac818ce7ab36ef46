"""Fixtures for the HTTP port's tests: a real server with `--http-address`, real curl.

`http_serving` runs `python -m flowservice` (through `tests.server_process`,
the harness of every end-to-end test) with `--http-address 127.0.0.1:0` and
reads the HTTP port from its log; `curl` runs the real curl binary.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server_process import REPO_ROOT, RunningServer, serving

__all__ = ["EXAMPLES", "HttpServer", "curl", "http_serving"]

EXAMPLES = REPO_ROOT / "examples"
CURL_TIMEOUT = 30.0
"""Seconds one curl run may take, end to end."""
_HTTP_LINE = re.compile(r"Connect, gRPC-Web and the web console on (https?)://[^\s:]+:(\d+)")
_LOG_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class HttpServer:
    """A running server with its HTTP port."""

    grpc: RunningServer
    """The server, its gRPC port and its log."""
    http_port: int
    """The 127.0.0.1 port of Connect, gRPC-Web and the console."""
    scheme: str = "http"

    @property
    def url(self) -> str:
        """The base URL of the HTTP port, without a trailing slash."""
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    def rpc(self, method: str) -> str:
        """The URL of `Service/Method` of flowmanager.v1."""
        return f"{self.url}/flowmanager.v1.{method}"


@contextmanager
def http_serving(log_path: Path, flags: Sequence[str] = ()) -> Iterator[HttpServer]:
    """A server with `--http-address 127.0.0.1:0` and `flags`, until the block exits.

    It is stopped with SIGTERM (no drain delay), so that it removes the
    directory of its bridge's Unix socket, which a kill would leave behind.
    """
    flags = ["--http-address", "127.0.0.1:0", "--drain-delay", "0", *flags]
    with serving(log_path, flags, graceful_stop=True) as running:
        deadline = time.monotonic() + _LOG_TIMEOUT
        while (found := _HTTP_LINE.search(running.log())) is None:
            running.check_alive()
            assert time.monotonic() < deadline, "the server never logged its HTTP port"
            time.sleep(0.05)
        yield HttpServer(running, int(found.group(2)), found.group(1))


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """One server with an HTTP port (and memory history), shared by the module's tests."""
    with http_serving(
        tmp_path_factory.mktemp("http") / "server.log", ["--store", "memory"]
    ) as running:
        yield running


def curl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real curl: `curl -sS --max-time 20 *args`, output captured as bytes."""
    binary = shutil.which("curl")
    assert binary, "curl is not on PATH"
    return subprocess.run(
        [binary, "-sS", "--max-time", "20", *args],
        input=stdin,
        capture_output=True,
        timeout=CURL_TIMEOUT,
        check=False,
    )
