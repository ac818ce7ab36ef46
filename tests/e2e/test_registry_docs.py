"""docs/registry.md stays true: every command it shows runs, in the page's order, against a
fresh server process, and prints what the page shows below it.

grpcurl and flowctl run in bash at the repository root, as a reader would run
them, with the address swapped for the test server's. The page's commands
build on each other (a flow is created, then listed, then run), so they run
in order in one test, on a server with a store of its own.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import GRPCURL, REPO_ROOT, RunningServer, serving

PAGE = REPO_ROOT / "docs" / "registry.md"
ADDRESS = "127.0.0.1:50051"
FLOWCTL = Path(sys.executable).parent / "flowctl"
TIMEOUT = 30.0
"""Seconds one command may take."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with serving(tmp_path / "server.log", ["--store", str(tmp_path / "flows.db")]) as running:
        yield running


def page_commands() -> list[tuple[str, str]]:
    """Every (command, shown output) pair of the page, in its order."""
    return re.findall(
        r"```sh\n([^\n`]*)\n```\n\n```(?:json|text)\n(.*?)\n```", PAGE.read_text(), re.S
    )


def comparable(line: str) -> str:
    """`line` with what changes from run to run (ids, times, durations) blanked out."""
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", line)
    line = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", line)
    line = re.sub(r"\d+(\.\d+)? ?(ms|µs|s)\b", "<duration>", line)
    return line.rstrip()


def run(command: str, server: RunningServer) -> subprocess.CompletedProcess[str]:
    """The command line in bash at the repository root, against `server`."""
    words = shlex.split(command)
    assert words[0] in ("grpcurl", "flowctl"), command
    if words[0] == "grpcurl":
        assert ADDRESS in command, command
        line = f"{shlex.quote(str(GRPCURL))} -connect-timeout 5 -max-time 20 {command[8:]}"
    else:
        line = f"{shlex.quote(str(FLOWCTL))} {command[8:]}"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("FLOWCTL_")
    }
    environment.update(FLOWCTL_SERVER=server.address, NO_COLOR="1", COLUMNS="200")
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", line.replace(ADDRESS, server.address)],
        cwd=REPO_ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_the_page_shows_commands_of_every_rpc_and_flowctl() -> None:
    text = "\n".join(command for command, _ in page_commands())
    for method in (
        "FlowRegistryService/CreateFlow",
        "FlowRegistryService/ListFlows",
        "FlowRegistryService/ListFlowVersions",
        "FlowService/Execute",
        "ExecutionService/ListExecutions",
    ):
        assert re.search(rf"\.{method}(\s|$)", text, re.M), method
    assert "flowctl flows create" in text and "flowctl run --flow" in text


def test_every_command_prints_what_the_page_shows(server: RunningServer) -> None:
    for command, shown in page_commands():
        result = run(command, server)
        failed = shown.startswith("ERROR:")
        assert (result.returncode != 0) == failed, (
            f"{command}: exit {result.returncode}\n{result.stderr}"
        )
        printed = [comparable(line) for line in (result.stdout + result.stderr).splitlines()]
        position = 0
        for line in shown.splitlines():
            if line.strip() == "..." or not line.strip():
                continue
            expected = comparable(line)
            assert expected in printed[position:], (
                f"the page shows {line!r}, which {command!r} did not print (in that order):\n"
                + "\n".join(printed)
            )
            position = printed.index(expected, position) + 1
