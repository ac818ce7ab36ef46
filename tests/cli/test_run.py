"""`flowctl run`: the real console script streaming runs from a real server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cli.conftest import Flowctl
from tests.e2e.conftest import EXAMPLES, RunningServer, serving

PIPELINE_YAML = """\
# A bare flow in YAML: no "flow" key, no conditions.
id: pipeline
name: Records pipeline
start_task: fetch
tasks:
  - name: fetch
    type: fetch_data
    params: {count: 2}
  - name: process
    type: process_data
  - name: store
    type: store_data
"""


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of `output`, each parsed as one JSON object."""
    return [json.loads(line) for line in output.splitlines()]


def test_run_seed_flow_shows_each_task_and_the_summary(
    flowctl: Flowctl, server: RunningServer
) -> None:
    result = flowctl("run", str(EXAMPLES / "seed-flow.json"), "--server", server.address)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "Flow flow123 · Data processing flow" in out
    for step, task in enumerate(("task1", "task2", "task3"), start=1):
        assert f"▶ {task} started (mock, step {step})" in out
        assert f"✔ {task} succeeded in " in out
    assert "↳ condition_task1 [outcome == success] is true → task2" in out
    assert "↳ condition_task2 [outcome == success] is true → task3" in out
    # The summary: a table row per task run, then the status line.
    assert "→ task2 (condition_task1: true)" in out
    assert "COMPLETED in " in out
    assert "3 task runs: task1 → task2 → task3" in out
    assert (
        out.index("▶ task1") < out.index("▶ task2") < out.index("▶ task3") < out.index("COMPLETED")
    )


def test_run_seed_failure_exits_1_and_names_the_failed_task(
    flowctl: Flowctl, server: RunningServer
) -> None:
    result = flowctl("run", str(EXAMPLES / "seed-failure.json"), "--server", server.address)

    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "✘ task2 failed in " in out
    assert ": processing failed: input is malformed (TaskFailure)" in out
    assert "↳ condition_task2 [outcome == success] is false → end" in out
    assert "▶ task3" not in out
    assert "FAILED in " in out
    assert "failed task: task2" in out
    assert "error: task 'task2' failed: processing failed: input is malformed" in out


def test_run_json_prints_one_event_per_line_with_the_finished_event_last(
    flowctl: Flowctl, server: RunningServer
) -> None:
    result = flowctl("run", str(EXAMPLES / "seed-flow.json"), "--server", server.address, "--json")

    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert [int(event["sequence"]) for event in events] == list(range(1, len(events) + 1))
    assert "execution_started" in events[0]
    assert [event["task_started"]["task"] for event in events if "task_started" in event] == [
        "task1",
        "task2",
        "task3",
    ]
    assert all("execution_finished" not in event for event in events[:-1])
    summary = events[-1]["execution_finished"]["result"]
    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert summary["executed_tasks"] == ["task1", "task2", "task3"]
    assert len({event["execution_id"] for event in events}) == 1


def test_run_json_of_a_failed_flow_exits_1(flowctl: Flowctl, server: RunningServer) -> None:
    result = flowctl(
        "run", str(EXAMPLES / "seed-failure.json"), "--server", server.address, "--json"
    )

    assert result.returncode == 1
    summary = json_lines(result.stdout)[-1]["execution_finished"]["result"]
    assert summary["status"] == "EXECUTION_STATUS_FAILED"
    assert summary["failed_task"] == "task2"


def test_run_shows_each_retry_with_its_error_and_delay(
    flowctl: Flowctl, server: RunningServer
) -> None:
    result = flowctl("run", str(EXAMPLES / "retry-flow.json"), "--server", server.address)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "↻ fetch attempt 1 failed: upstream returned 503 (TaskFailure); retrying in 100 ms" in out
    )
    assert (
        "↻ fetch attempt 2 failed: upstream returned 503 (TaskFailure); retrying in 200 ms" in out
    )
    assert "✔ fetch succeeded in " in out
    assert " after 3 attempts" in out


def test_run_a_bare_yaml_flow(flowctl: Flowctl, server: RunningServer, tmp_path: Path) -> None:
    flow_file = tmp_path / "pipeline.yaml"
    flow_file.write_text(PIPELINE_YAML)

    result = flowctl("run", str(flow_file), "--server", server.address)

    assert result.returncode == 0, result.stderr
    assert "Flow pipeline · Records pipeline" in result.stdout
    assert "3 task runs: fetch → process → store" in result.stdout
    # With no condition, each success goes on to the next task in the list.
    assert "→ process" in result.stdout
    assert '"stored":2' in result.stdout  # the flow's output: store_data's


def test_run_input_reaches_the_flow_and_its_conditions(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    flow_file = tmp_path / "route.json"
    flow_file.write_text(
        json.dumps(
            {
                "start_task": "check",
                "tasks": [{"name": "check"}, {"name": "fast"}, {"name": "slow"}],
                "conditions": [
                    {
                        "name": "is_fast",
                        "source_task": "check",
                        "expression": 'input.mode == "fast"',
                        "target_task_success": "fast",
                        "target_task_failure": "slow",
                    },
                    {"source_task": "fast", "outcome": "success", "target_task_success": "end"},
                ],
            }
        )
    )

    fast = flowctl("run", str(flow_file), "--server", server.address, "--input", '{"mode": "fast"}')
    slow = flowctl("run", str(flow_file), "--server", server.address, "--input", '{"mode": "x"}')

    assert fast.returncode == 0, fast.stderr
    assert '↳ is_fast [input.mode == "fast"] is true → fast' in fast.stdout
    assert slow.returncode == 0, slow.stderr
    assert '↳ is_fast [input.mode == "fast"] is false → slow' in slow.stdout


def test_run_an_invalid_flow_exits_2_with_every_field_path(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    flow_file = tmp_path / "invalid.json"
    flow_file.write_text(
        json.dumps(
            {
                "flow": {
                    "start_task": "fetch",
                    "tasks": [{"name": "fetch", "type": "download"}],
                    "conditions": [
                        {"source_task": "fetch", "outcome": "ok", "target_task_success": "store"}
                    ],
                }
            }
        )
    )

    result = flowctl("run", str(flow_file), "--server", server.address)

    assert result.returncode == 2
    assert result.stdout == ""
    err = result.stderr
    assert f"{flow_file}: error: flow.tasks[0].type: unknown task type 'download'" in err
    assert "[UNKNOWN_TASK_TYPE]" in err
    assert f"{flow_file}: error: flow.conditions[0].outcome: " in err
    assert f"{flow_file}: error: flow.conditions[0].target_task_success: " in err
    assert "invalid flow (3 errors); nothing ran" in err


def test_run_a_flow_that_times_out_exits_1(flowctl: Flowctl, server: RunningServer) -> None:
    result = flowctl("run", str(EXAMPLES / "flow-timeout.json"), "--server", server.address)

    assert result.returncode == 1
    assert "✘ build_report failed in " in result.stdout
    assert "TIMED_OUT in " in result.stdout
    assert "the execution did not finish (TIMED_OUT)" in result.stderr


def test_run_timeout_sets_the_call_deadline(flowctl: Flowctl, server: RunningServer) -> None:
    started = time.monotonic()
    result = flowctl(
        "run", str(EXAMPLES / "slow-flow.json"), "--server", server.address, "--timeout", "0.5"
    )

    assert result.returncode == 1
    assert time.monotonic() - started < 4.5  # the task alone takes 5 s
    assert "▶ build_report started" in result.stdout
    # Which side notices first is a race: this process's deadline (the usual
    # case) or the server's, which uses the same deadline for the execution.
    assert result.stderr in (
        "flowctl: the call's deadline (--timeout 0.5 s) passed before the execution finished; "
        "the server stops it\n",
    ) or result.stderr.startswith("flowctl: the execution did not finish (TIMED_OUT): ")


def test_run_reads_the_server_from_flowctl_server(flowctl: Flowctl, server: RunningServer) -> None:
    result = flowctl(
        "run", str(EXAMPLES / "seed-flow.json"), env={"FLOWCTL_SERVER": server.address}
    )

    assert result.returncode == 0, result.stderr


def test_run_sends_metadata_and_reads_the_flow_from_stdin(
    flowctl: Flowctl, server: RunningServer
) -> None:
    body = (EXAMPLES / "seed-flow.json").read_text()

    result = flowctl("run", "-", "--server", server.address, "-H", "x-request-id: 42", stdin=body)

    assert result.returncode == 0, result.stderr
    assert "COMPLETED" in result.stdout


def test_run_against_an_unreachable_server_exits_3_at_once(
    flowctl: Flowctl, unreachable_address: str
) -> None:
    started = time.monotonic()
    result = flowctl("run", str(EXAMPLES / "seed-flow.json"), "--server", unreachable_address)

    assert result.returncode == 3
    assert time.monotonic() - started < 5
    assert result.stdout == ""
    assert result.stderr == (
        f"flowctl: cannot reach the Flow Manager at {unreachable_address} "
        "(is it running? `make run`)\n"
    )


def test_run_against_a_draining_server_exits_3(flowctl: Flowctl, tmp_path: Path) -> None:
    # A drain longer than any wait here: on a loaded machine flowctl's own start
    # can take seconds, and a server that has finished draining is not draining.
    with serving(tmp_path / "server.log", flags=["--drain-delay", "120"]) as draining:
        draining.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "draining" not in draining.log() and time.monotonic() < deadline:
            time.sleep(0.05)

        result = flowctl("run", str(EXAMPLES / "seed-flow.json"), "--server", draining.address)

    assert result.returncode == 3
    assert result.stderr == (
        f"flowctl: the Flow Manager at {draining.address} is NOT_SERVING (shutting down?); "
        "try again\n"
    )


def test_ctrl_c_stops_the_run_and_cancels_the_execution_on_the_server(
    server: RunningServer,
) -> None:
    # flowctl's own main, with Python's Ctrl-C handler installed even when this
    # test runs where SIGINT is ignored (a background job inherits SIG_IGN).
    script = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from flowservice.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", script, "run", str(EXAMPLES / "slow-flow.json")]
    process = subprocess.Popen(
        [*command, "--server", server.address],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # "Flow flow-slow · ...  execution <id>"
        execution_id = first.rsplit("execution ", 1)[1].strip()
        assert "▶ build_report started" in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130
    assert err == "flowctl: interrupted\n"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cancelled = [
            line
            for line in server.log().splitlines()
            if execution_id in line and "cancelled" in line
        ]
        if cancelled:
            break
        time.sleep(0.05)
    assert cancelled, server.log()
