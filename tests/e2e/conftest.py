"""Fixtures for end-to-end tests: the real server as a subprocess, the real grpcurl binary.

Every wait is bounded, and every server process is killed at teardown even
when a test fails, so nothing here can hang or leak a process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
GRPCURL = Path(sys.executable).parent / "grpcurl"

STARTUP_TIMEOUT = 15.0
"""Seconds the server gets to log the address it is listening on."""
EXIT_TIMEOUT = 15.0
"""Seconds a server gets to exit after SIGTERM (its grace period is 10 s)."""
GRPCURL_TIMEOUT = 30.0
"""Seconds one grpcurl run may take, end to end."""

_LISTENING = re.compile(r"Flow Manager listening on 127\.0\.0\.1:(\d+)")


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A server subprocess and where it listens."""

    process: subprocess.Popen[bytes]
    """The `python -m flowservice` process."""
    port: int
    """The port it bound (it was asked for port 0)."""
    log_path: Path
    """The file its stderr (the log) goes to."""

    @property
    def address(self) -> str:
        """host:port for grpcurl."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the server has logged so far."""
        return self.log_path.read_text(errors="replace")


@contextmanager
def serving(
    log_path: Path, flags: Sequence[str] = (), variables: Mapping[str, str] | None = None
) -> Iterator[RunningServer]:
    """Runs `python -m flowservice --address 127.0.0.1:0 [flags]` until the block exits.

    `variables` (FLOWMANAGER_* settings, say) are added to its environment.
    The log goes to a file rather than a pipe, so a chatty server can never
    block on a full pipe and the test can read it at any time.
    """
    # FLOWMANAGER_* variables from the caller's shell (a log level, say) must
    # not change what the test sees.
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWMANAGER_")}
    env.update(variables or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowservice", "--address", "127.0.0.1:0", *flags],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port = _wait_for_port(process, log_path)
        yield RunningServer(process=process, port=port, log_path=log_path)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=EXIT_TIMEOUT)


def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            pytest.fail(
                f"server exited with {process.returncode} before listening:\n"
                f"{log_path.read_text(errors='replace')}"
            )
        time.sleep(0.05)
    pytest.fail(
        f"server did not log its address within {STARTUP_TIMEOUT} s:\n"
        f"{log_path.read_text(errors='replace')}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server shared by the module's tests."""
    with serving(tmp_path_factory.mktemp("server") / "server.log") as running:
        yield running


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A server for one test alone, such as one that shuts it down."""
    with serving(tmp_path / "server.log") as running:
        yield running


@pytest.fixture(scope="session")
def grpcurl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the real grpcurl over plaintext: `grpcurl(*flags_address_and_method, stdin=path)`.

    Output is captured as text; the exit code is left for the test to check.
    """
    assert GRPCURL.exists(), f"grpcurl not found at {GRPCURL}: run `make .venv/.installed`"

    def run(*args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(GRPCURL), "-plaintext", "-connect-timeout", "5", "-max-time", "20", *args]
        if stdin is None:
            return subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=GRPCURL_TIMEOUT,
                check=False,
            )
        with stdin.open("rb") as body:
            return subprocess.run(
                command,
                stdin=body,
                capture_output=True,
                text=True,
                timeout=GRPCURL_TIMEOUT,
                check=False,
            )

    return run


def json_messages(output: str) -> list[dict[str, Any]]:
    """The JSON messages grpcurl printed, one after another (a stream prints several)."""
    decoder = json.JSONDecoder()
    messages = []
    position = 0
    output = output.strip()
    while position < len(output):
        message, position = decoder.raw_decode(output, position)
        messages.append(message)
        while position < len(output) and output[position].isspace():
            position += 1
    return messages
