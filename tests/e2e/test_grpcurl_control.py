"""End to end: the deadline, cancellation, timeout, retry and limit examples of the docs.

They live in docs/deadlines-and-limits.md, read with the README (`docs_text`).

Each test runs a grpcurl command exactly as the README prints it (only the
address changes to the test server's), and checks what the README says it
shows. `test_the_readme_shows_each_command` keeps the two in step.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    GRPCURL,
    REPO_ROOT,
    RunningServer,
    docs_text,
    json_messages,
    serving,
)

TIMEOUT = 30.0
"""Seconds any one wait in these tests may take."""
README_ADDRESSES = ("127.0.0.1:50051", "127.0.0.1:50052")
"""The addresses the README's commands use; tests swap in their server's."""

RETRY_STREAM = (
    "grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/ExecuteStream"
    " < examples/retry-flow.json"
)
SLOW_WITH_MAX_TIME = (
    "grpcurl -plaintext -max-time 1 -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/Execute"
    " < examples/slow-flow.json"
)
FLOW_TIMEOUT = (
    "grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/Execute"
    " < examples/flow-timeout.json"
)
FLOW_TIMEOUT_STREAM = (
    "grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/ExecuteStream"
    " < examples/flow-timeout.json"
)
SLOW_STREAM = (
    "grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/ExecuteStream"
    " < examples/slow-flow.json"
)
TASK_TIMEOUT = (
    "grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/Execute"
    " < examples/timeout-flow.json"
)
LIMITED_SERVER = "python -m flowservice --address 127.0.0.1:50052 --max-tasks 2"
OVER_THE_LIMIT = (
    "grpcurl -plaintext -d @ 127.0.0.1:50052 flowmanager.v1.FlowService/Execute"
    " < examples/seed-flow.json"
)

# grpcurl exits 64 + the gRPC status code on an RPC error.
EXIT_INVALID_ARGUMENT = 64 + 3
EXIT_DEADLINE_EXCEEDED = 64 + 4


def grpcurl_argv(command: str, address: str) -> tuple[list[str], Path | None]:
    """The argv and stdin file of a README grpcurl command, pointed at `address`.

    Adds a connect timeout and, when the command sets none, a `-max-time`, so
    that no run can hang.
    """
    words = shlex.split(command)
    stdin = None
    if "<" in words:
        at = words.index("<")
        stdin = REPO_ROOT / words[at + 1]
        words = words[:at]
    assert words[0] == "grpcurl", command
    args = [address if word in README_ADDRESSES else word for word in words[1:]]
    bound = [] if "-max-time" in args else ["-max-time", "20"]
    return [str(GRPCURL), "-connect-timeout", "5", *bound, *args], stdin


def run_readme(command: str, server: RunningServer) -> subprocess.CompletedProcess[str]:
    """Runs a README grpcurl command against `server`; the exit code is left to the test."""
    argv, stdin = grpcurl_argv(command, server.address)
    with (stdin or Path(os.devnull)).open("rb") as body:
        return subprocess.run(
            argv, stdin=body, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )


def error_details(stderr: str) -> dict[str, dict[str, Any]]:
    """The status details grpcurl printed, by short type name (`google.rpc.ErrorInfo`)."""
    details = [json.loads(line) for line in re.findall(r"^\s*\d+\)\t(.+)$", stderr, re.MULTILINE)]
    return {detail["@type"].rsplit("/", 1)[-1]: detail for detail in details}


def event_kind(event: dict[str, Any]) -> str:
    """Which event of the `event` oneof a stream message carries."""
    [kind] = set(event) - {"execution_id", "sequence", "time"}
    return kind


def wait_for_log(server: RunningServer, pattern: str) -> re.Match[str]:
    """Waits, at most TIMEOUT seconds, for the server to log a line matching `pattern`."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        match = re.search(pattern, server.log())
        if match:
            return match
        assert time.monotonic() < deadline, f"no log line matches {pattern!r}:\n{server.log()}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "command",
    [
        RETRY_STREAM,
        SLOW_WITH_MAX_TIME,
        FLOW_TIMEOUT,
        FLOW_TIMEOUT_STREAM,
        SLOW_STREAM,
        TASK_TIMEOUT,
        LIMITED_SERVER,
        OVER_THE_LIMIT,
    ],
)
def test_the_readme_shows_each_command(command: str) -> None:
    readme = docs_text()

    assert f"```sh\n{command}\n```" in readme


def test_the_retry_example_retries_twice_and_completes(server: RunningServer) -> None:
    result = run_readme(RETRY_STREAM, server)

    assert result.returncode == 0, result.stderr
    events = json_messages(result.stdout)
    assert [event_kind(event) for event in events] == [
        "execution_started",
        "task_started",
        "task_retrying",
        "task_retrying",
        "task_finished",
        "task_started",
        "task_finished",
        "execution_finished",
    ]
    retries = [event["task_retrying"] for event in events[2:4]]
    assert retries == [
        {
            "task": "fetch",
            "attempt": attempt,
            "error": "upstream returned 503",
            "error_type": "TaskFailure",
            "delay": delay,
        }
        for attempt, delay in [(1, "0.100s"), (2, "0.200s")]
    ]
    fetch = events[4]["task_finished"]["result"]
    assert (fetch["task"], fetch["outcome"], fetch["attempts"]) == (
        "fetch",
        "TASK_OUTCOME_SUCCESS",
        3,
    )
    summary = events[-1]["execution_finished"]["result"]
    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert summary["executed_tasks"] == ["fetch", "store"]


def test_a_max_time_shorter_than_the_slow_flow_is_deadline_exceeded(
    server: RunningServer,
) -> None:
    started = time.monotonic()
    result = run_readme(SLOW_WITH_MAX_TIME, server)
    elapsed = time.monotonic() - started

    assert result.returncode == EXIT_DEADLINE_EXCEEDED, result.stderr
    assert "Code: DeadlineExceeded" in result.stderr
    assert result.stdout == ""
    assert elapsed < 4, "the call waited for the 5 s task instead of its 1 s deadline"
    # The server stopped the execution too: build_report was cancelled, and
    # send_report never ran.
    wait_for_log(server, r"of flow 'flow-slow' timed_out after [01] task runs")


def test_the_flow_timeout_is_deadline_exceeded_with_error_info(server: RunningServer) -> None:
    result = run_readme(FLOW_TIMEOUT, server)

    assert result.returncode == EXIT_DEADLINE_EXCEEDED, result.stderr
    assert result.stdout == ""
    assert "Code: DeadlineExceeded" in result.stderr
    assert "the flow's timeout of 1 s passed" in result.stderr
    info = error_details(result.stderr)["google.rpc.ErrorInfo"]
    assert info["reason"] == "DEADLINE_EXCEEDED"
    assert info["domain"] == "flowmanager"
    metadata = info["metadata"]
    assert (metadata["limit"], metadata["limit_value"]) == ("flow.timeout", "1s")
    assert metadata["executed_tasks"] == "build_report"
    assert re.fullmatch(r"[0-9a-f-]{36}", metadata["execution_id"])


def test_a_timed_out_stream_ends_with_the_finished_event_then_the_error(
    server: RunningServer,
) -> None:
    result = run_readme(FLOW_TIMEOUT_STREAM, server)

    assert result.returncode == EXIT_DEADLINE_EXCEEDED, result.stderr
    events = json_messages(result.stdout)
    assert [event_kind(event) for event in events] == [
        "execution_started",
        "task_started",
        "task_finished",
        "execution_finished",
    ]
    summary = events[-1]["execution_finished"]["result"]
    assert summary["status"] == "EXECUTION_STATUS_TIMED_OUT"
    assert summary["executed_tasks"] == ["build_report"]
    assert summary["task_results"][0]["error_type"] == "DeadlineExceeded"
    info = error_details(result.stderr)["google.rpc.ErrorInfo"]
    assert info["reason"] == "DEADLINE_EXCEEDED"
    assert info["metadata"]["execution_id"] == summary["execution_id"]
    assert info["metadata"]["limit"] == "flow.timeout"


def test_ctrl_c_on_a_stream_cancels_the_execution(server: RunningServer, tmp_path: Path) -> None:
    argv, stdin = grpcurl_argv(SLOW_STREAM, server.address)
    assert stdin is not None
    output = tmp_path / "stream.json"
    with stdin.open("rb") as body, output.open("wb") as out:
        client = subprocess.Popen(
            argv,
            stdin=body,
            stdout=out,
            stderr=subprocess.STDOUT,
            # As in a terminal: SIGINT stops grpcurl even when this test runs
            # in a shell that ignores it (a background job, say).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while '"task_started"' not in output.read_text():
            assert client.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the stream never reported task_started"
            time.sleep(0.02)

        client.send_signal(signal.SIGINT)  # what Ctrl-C sends

        assert client.wait(timeout=TIMEOUT) != 0
    finally:
        if client.poll() is None:
            client.kill()
        client.wait(timeout=TIMEOUT)

    execution_id = json_messages(output.read_text())[0]["execution_id"]
    # Well before build_report's 5 s are up: the server stopped it.
    wait_for_log(server, rf"execution {execution_id} of flow 'flow-slow' cancelled")


def test_the_task_timeout_example_fails_the_attempt_and_falls_back(
    server: RunningServer,
) -> None:
    result = run_readme(TASK_TIMEOUT, server)

    assert result.returncode == 0, result.stderr
    [response] = json_messages(result.stdout)
    assert response["status"] == "EXECUTION_STATUS_COMPLETED"
    assert response["executed_tasks"] == ["call_api", "use_cache"]
    call_api = response["task_results"][0]
    assert call_api["outcome"] == "TASK_OUTCOME_FAILURE"
    assert call_api["error_type"] == "TaskTimeout"
    assert call_api["error"] == "attempt timed out after 0.5 s"
    assert call_api["attempts"] == 1


def limited_server_flags() -> list[str]:
    """The flags of the README's limited server, but its address."""
    words = shlex.split(LIMITED_SERVER)
    assert words[:3] == ["python", "-m", "flowservice"]
    flags = words[3:]
    at = flags.index("--address")
    return flags[:at] + flags[at + 2 :]


@pytest.fixture(scope="module", params=["flag", "variable"])
def limited_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server allowing two tasks per flow, set by the README's flag or by its variable."""
    log_path = tmp_path_factory.mktemp("limited") / "server.log"
    if request.param == "flag":
        settings: dict[str, Any] = {"flags": limited_server_flags()}
    else:
        settings = {"variables": {"FLOWMANAGER_MAX_TASKS": "2"}}
    with serving(log_path, **settings) as running:
        yield running


def test_a_flow_over_a_limit_is_invalid_argument_naming_the_limit(
    limited_server: RunningServer,
) -> None:
    result = run_readme(OVER_THE_LIMIT, limited_server)

    assert result.returncode == EXIT_INVALID_ARGUMENT, result.stderr
    assert "Code: InvalidArgument" in result.stderr
    [message] = re.findall(r"^\s*Message: (.*)$", result.stderr, re.MULTILINE)
    assert message.startswith("invalid flow: ")
    assert message.endswith("3 tasks, above the limit of 2 (max_tasks)")
    details = error_details(result.stderr)
    info = details["google.rpc.ErrorInfo"]
    assert info["reason"] == "INVALID_FLOW"
    assert (info["metadata"]["limit"], info["metadata"]["limit_value"]) == ("max_tasks", "2")
    assert info["metadata"]["reasons"] == "TOO_MANY_TASKS"
    violations = details["google.rpc.BadRequest"]["field_violations"]
    assert [(v["field"], v["reason"]) for v in violations] == [("flow.tasks", "TOO_MANY_TASKS")]


def test_the_limited_server_still_runs_flows_within_the_limit(
    limited_server: RunningServer,
) -> None:
    result = run_readme(TASK_TIMEOUT, limited_server)  # two tasks: at the limit, not over

    assert result.returncode == 0, result.stderr
    [response] = json_messages(result.stdout)
    assert response["status"] == "EXECUTION_STATUS_COMPLETED"
