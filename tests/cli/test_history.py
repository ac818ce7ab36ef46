"""`flowctl start/get/list/watch/cancel`: the real console script against a real server process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.cli.conftest import FLOWCTL, FLOWCTL_TIMEOUT, Flowctl
from tests.e2e.conftest import EXAMPLES, REPO_ROOT, RunningServer, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a history file of its own, so that listings hold only this module's."""
    directory = tmp_path_factory.mktemp("server")
    with serving(directory / "server.log", ["--store", str(directory / "h.db")]) as running:
        yield running


def start_seed(flowctl: Flowctl, server: RunningServer) -> str:
    result = flowctl(
        "start", str(EXAMPLES / "seed-flow.json"), "--server", server.address, "--json"
    )
    assert result.returncode == 0, result.stderr
    execution_id: str = json.loads(result.stdout)["execution_id"]
    return execution_id


def test_start_then_watch_shows_the_run_as_run_does(
    flowctl: Flowctl, server: RunningServer
) -> None:
    execution_id = start_seed(flowctl, server)
    result = flowctl("watch", execution_id, "--server", server.address)
    assert result.returncode == 0, result.stderr
    assert "▶ task1 started (mock, step 1)" in result.stdout
    assert "COMPLETED in " in result.stdout

    later = flowctl("watch", execution_id, "--after", "8", "--json", "--server", server.address)
    events = [json.loads(line) for line in later.stdout.splitlines()]
    assert [int(e["sequence"]) for e in events] == list(range(9, 9 + len(events)))
    assert "execution_finished" in events[-1]


def test_get_and_list_show_the_execution(flowctl: Flowctl, server: RunningServer) -> None:
    execution_id = start_seed(flowctl, server)
    watched = flowctl("watch", execution_id, "--json", "--server", server.address)
    assert watched.returncode == 0
    got = flowctl("get", execution_id, "--server", server.address)
    assert got.returncode == 0, got.stderr
    assert f"execution  {execution_id}" in got.stdout
    assert "status     COMPLETED" in got.stdout
    assert "task1 → task2 → task3" in got.stdout

    listed = flowctl(
        "list", "--flow", "flow123", "--page-size", "1", "--json", "--server", server.address
    )
    page = json.loads(listed.stdout)
    assert [e["execution_id"] for e in page["executions"]] == [execution_id]
    assert page["next_page_token"]
    text = flowctl("list", "--status", "completed", "--server", server.address)
    assert execution_id in text.stdout and "COMPLETED" in text.stdout


def test_cancel_of_a_finished_execution_and_get_of_an_unknown_one_fail_with_reasons(
    flowctl: Flowctl, server: RunningServer
) -> None:
    execution_id = start_seed(flowctl, server)
    flowctl("watch", execution_id, "--server", server.address)
    cancelled = flowctl("cancel", execution_id, "--server", server.address)
    assert cancelled.returncode == 3
    assert "FAILED_PRECONDITION" in cancelled.stderr and "EXECUTION_FINISHED" in cancelled.stderr
    unknown = flowctl("get", "no-such-id", "--server", server.address)
    assert unknown.returncode == 3
    assert "EXECUTION_NOT_FOUND" in unknown.stderr


def test_watch_of_a_cancelled_execution_shows_its_end_and_exits_1(
    flowctl: Flowctl, server: RunningServer
) -> None:
    started = flowctl(
        "start", str(EXAMPLES / "slow-flow.json"), "--server", server.address, "--json"
    )
    execution_id = json.loads(started.stdout)["execution_id"]
    cancelled = flowctl("cancel", execution_id, "--server", server.address)
    assert cancelled.returncode == 0, cancelled.stderr

    watched = flowctl("watch", execution_id, "--server", server.address)
    assert watched.returncode == 1, watched.stderr
    assert "CANCELLED in " in watched.stdout
    as_json = flowctl("watch", execution_id, "--json", "--server", server.address)
    assert as_json.returncode == 1
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    end = events[-1]["execution_finished"]["result"]
    assert (end["status"], end["error_type"]) == ("EXECUTION_STATUS_CANCELLED", "Cancelled")

    after_the_end = flowctl(
        "watch", execution_id, "--after", str(len(events)), "--server", server.address
    )
    assert after_the_end.returncode == 1  # no event left to show: its end is read instead
    assert "CANCELLED in " in after_the_end.stdout


def test_run_of_an_execution_cancelled_meanwhile_shows_its_end_and_exits_1(
    flowctl: Flowctl, server: RunningServer
) -> None:
    args = ["run", str(EXAMPLES / "slow-flow.json"), "--json", "--server", server.address]
    run = subprocess.Popen(
        [str(FLOWCTL), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None
        execution_id = json.loads(run.stdout.readline())["execution_id"]
        cancelled = flowctl("cancel", execution_id, "--server", server.address)
        assert cancelled.returncode == 0, cancelled.stderr
        rest, errors = run.communicate(timeout=FLOWCTL_TIMEOUT)
    finally:
        run.kill()
    assert run.returncode == 1, errors
    end = json.loads(rest.splitlines()[-1])["execution_finished"]["result"]
    assert end["status"] == "EXECUTION_STATUS_CANCELLED"
