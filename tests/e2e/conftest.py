"""Fixtures for end-to-end tests: the real server as a subprocess, the real grpcurl binary.

The server comes from `tests.server_process`, the harness the benchmark uses
too; every wait is bounded, and every server process is killed at teardown
even when a test fails, so nothing here can hang or leak a process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server_process import REPO_ROOT, RunningServer, serving

__all__ = [
    "EXAMPLES",
    "GRPCURL",
    "REPO_ROOT",
    "RunningServer",
    "docs_text",
    "json_messages",
    "serving",
]

EXAMPLES = REPO_ROOT / "examples"
EXAMPLE_PAGES = (
    "README.md",
    "docs/grpcurl.md",
    "docs/data-and-expressions.md",
    "docs/deadlines-and-limits.md",
    "docs/errors.md",
    "docs/operating.md",
    "docs/history.md",
    "docs/calling-services.md",
)
"""The pages whose grpcurl examples the tests run, as a reader would, and check."""
GRPCURL = Path(sys.executable).parent / "grpcurl"

GRPCURL_TIMEOUT = 30.0
"""Seconds one grpcurl run may take, end to end."""


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


def docs_text() -> str:
    """The README and the docs pages of `EXAMPLE_PAGES`, one after another."""
    return "\n\n".join((REPO_ROOT / page).read_text() for page in EXAMPLE_PAGES)
