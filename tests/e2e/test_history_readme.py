"""End to end: the walk-through of docs/history.md ("Executions that outlive the call"), in order.

Its commands name executions that earlier commands started, by the ids the
README shows. A reader copies the id their own StartExecution printed; so
does this test: each id the README shows below a StartExecution becomes the
id the real one returned, in every later command. Each command then runs
as printed (`run_in_shell`: only the address changes, and grpcurl and
flowctl are the venv's), and every line the README shows below it, `...`
aside, is printed in that order (ids, times and durations blanked out).
The server has a history file of its own, so that the listing holds only
these executions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import RunningServer, serving
from tests.e2e.test_grpcurl_logic import (
    UUID,
    assert_prints_what_is_shown,
    readme_output,
    run_in_shell,
)

ADDRESS = "127.0.0.1:50051"
START_SEED = (
    f"grpcurl -plaintext -d @ {ADDRESS} flowmanager.v1.ExecutionService/StartExecution"
    " < examples/seed-flow.json"
)
START_SLOW = (
    f"grpcurl -plaintext -d @ {ADDRESS} flowmanager.v1.ExecutionService/StartExecution"
    " < examples/slow-flow.json"
)
SEED, SLOW = "<seed>", "<slow>"
"""Where the commands below name the execution that START_SEED or START_SLOW started."""


def _rpc(method: str, body: str) -> str:
    return f"grpcurl -plaintext -d '{body}' {ADDRESS} flowmanager.v1.ExecutionService/{method}"


FAILED_PRECONDITION = 64 + 9
"""grpcurl's exit code for that status: 64 + the gRPC status code."""

FOLLOWED = (
    (START_SEED, 0),
    (_rpc("GetExecution", f'{{"execution_id": "{SEED}"}}'), 0),
    (_rpc("WatchExecution", f'{{"execution_id": "{SEED}", "after_sequence": 8}}'), 0),
    (_rpc("ListExecutions", '{"page_size": 1, "flow_id": "flow123"}'), 0),
    (START_SLOW, 0),
    (_rpc("CancelExecution", f'{{"execution_id": "{SLOW}"}}'), 0),
    ("flowctl list", 0),
    (f"flowctl watch {SEED}", 0),
    # In docs/history.md: the seed has finished.
    (_rpc("CancelExecution", f'{{"execution_id": "{SEED}"}}'), FAILED_PRECONDITION),
)
"""The walk-through's commands, in the order a reader runs them, with their exit codes."""


def readme_ids() -> dict[str, str]:
    """The ids the README shows below START_SEED and START_SLOW."""
    ids = {}
    for name, command in ((SEED, START_SEED), (SLOW, START_SLOW)):
        found = UUID.search(readme_output(command))
        assert found, f"the README shows no execution id below {command!r}"
        ids[name] = found.group()
    return ids


def naming(command: str, ids: dict[str, str]) -> str:
    for name, execution_id in ids.items():
        command = command.replace(name, execution_id)
    return command


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("server")
    with serving(directory / "server.log", ["--store", str(directory / "h.db")]) as running:
        yield running


@pytest.mark.parametrize("command", [command for command, _ in FOLLOWED])
def test_the_readme_shows_each_command_with_its_output(command: str) -> None:
    assert readme_output(naming(command, readme_ids()))


def test_the_walk_through_names_only_the_executions_it_started() -> None:
    shown = {
        found for command, _ in FOLLOWED for found in UUID.findall(naming(command, readme_ids()))
    }
    assert shown == set(readme_ids().values())


def test_following_the_walk_through_prints_what_the_readme_shows(server: RunningServer) -> None:
    shown_ids = readme_ids()
    real_ids: dict[str, str] = {}
    for command, exit_code in FOLLOWED:
        result = run_in_shell(naming(command, real_ids), server)
        assert result.returncode == exit_code, f"{command}: {result.stderr}"
        for name, start in ((SEED, START_SEED), (SLOW, START_SLOW)):
            if command == start:
                real_ids[name] = json.loads(result.stdout)["execution"]["execution_id"]
        shown = readme_output(naming(command, shown_ids))
        assert_prints_what_is_shown(command, shown, result.stdout + result.stderr)
