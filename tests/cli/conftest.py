"""Fixtures for flowctl tests: the real console script, run against a real server process.

The server comes from the end-to-end helpers (`serving`); flowctl runs as a
subprocess with a bounded time, and its environment is cleaned of anything
that would change what it prints or where it connects.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT, RunningServer, serving

FLOWCTL = Path(sys.executable).parent / "flowctl"
FLOWCTL_TIMEOUT = 30.0
"""Seconds one flowctl run may take, end to end."""

Flowctl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One Flow Manager process shared by the module's tests."""
    with serving(tmp_path_factory.mktemp("server") / "server.log") as running:
        yield running


@pytest.fixture
def unreachable_address() -> str:
    """A loopback address where nothing listens: a port just bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def flowctl() -> Flowctl:
    """Runs the installed `flowctl` script: `flowctl(*args, stdin=text, env={...})`."""
    assert FLOWCTL.exists(), f"flowctl not found at {FLOWCTL}: run `make .venv/.installed`"

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        # Wide enough that no table wraps; no colour, no server from the caller's shell.
        variables = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("FLOWCTL_", "FORCE_COLOR", "COLUMNS"))
        }
        variables.update(COLUMNS="200", NO_COLOR="1")
        variables.update(env or {})
        return subprocess.run(
            [str(FLOWCTL), *args],
            cwd=REPO_ROOT,
            env=variables,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=FLOWCTL_TIMEOUT,
            check=False,
        )

    return run
