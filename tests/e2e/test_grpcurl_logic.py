"""End to end: the data, expression, Validate and what-if examples of the README and docs/.

The README's examples, and those of the docs pages in `EXAMPLE_PAGES`, are
read as one text (`docs_text`); "the README" below means all of them.

Each test runs a command line exactly as the README prints it, in bash at the
repository root as a reader would (only the address changes to the test
server's, and grpcurl gets a connect timeout and a `-max-time`), and checks
what the README says it shows. `test_the_readme_shows_each_command` keeps the
two in step, and `readme_output` reads what the README shows below a command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import EXAMPLES, GRPCURL, REPO_ROOT, RunningServer, docs_text

TIMEOUT = 30.0
"""Seconds any one command in these tests may take."""
README_ADDRESS = "127.0.0.1:50051"
"""The address the README's commands use; tests swap in their server's."""

DESCRIBE = "grpcurl -plaintext 127.0.0.1:50051 describe flowmanager.v1.FlowService"
INVALID_REQUEST = (
    """grpcurl -plaintext -d '{"flow": {"start_task": "fetch", "tasks": [{"name": "fetch","""
    """ "type": "download"}], "conditions": [{"source_task": "fetch", "outcome": "ok","""
    """ "target_task_success": "store"}]}}' 127.0.0.1:50051"""
    " flowmanager.v1.FlowService/Execute"
)
BRANCHING = (
    "grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/Execute"
    " < examples/branching-flow.json"
)
BRANCHING_NO_ROWS = (
    """sed 's/"rows": 3/"rows": 0/' examples/branching-flow.json"""
    " | grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/Execute"
)
VALIDATE_WARNINGS = (
    "grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/Validate"
    " < examples/validate-flow.json"
)
VALIDATE_ERRORS = (
    """grpcurl -plaintext -d '{"flow": {"start_task": "fetch", "tasks": [{"name": "fetch","""
    """ "type": "fetch_data"}], "conditions": [{"source_task": "fetch", "expression":"""
    """ "size(reslt.output.records) != 0", "target_task_success": "end"}], "output":"""
    """ "size(tasks.fetch.output.records) + 0.5"}}' 127.0.0.1:50051"""
    " flowmanager.v1.FlowService/Validate"
)
WHAT_IF = (
    "grpcurl -plaintext -d @ 127.0.0.1:50051 flowmanager.v1.FlowService/Execute"
    " < examples/what-if.json"
)
NO_ROWS_STUB = '"stubs": {"fetch": {"outcome": "TASK_OUTCOME_SUCCESS", "output": {"records": []}}}'
"""The stub the README says sends the branching flow down its no-rows branch."""

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""An execution id, as the server makes them."""

EXIT_INVALID_ARGUMENT = 64 + 3
"""grpcurl exits 64 + the gRPC status code on an RPC error."""


def run_in_shell(command: str, server: RunningServer) -> subprocess.CompletedProcess[str]:
    """Runs a README command line in bash at the repository root; the exit code is the test's.

    The line runs as printed but for the address, which becomes `server`'s, and
    each `grpcurl`, which becomes the venv's binary with a connect timeout and a
    `-max-time`. A `flowctl` line runs the venv's flowctl, told the address
    (the README's relies on its default). bash and everything it starts are
    killed if the line outlasts TIMEOUT, so no run can hang or leak a process.
    """
    bounded = f"{shlex.quote(str(GRPCURL))} -connect-timeout 5 -max-time 20 "
    line, count = re.subn(r"(^|\| )grpcurl ", lambda match: match.group(1) + bounded, command)
    flowctl = f"{shlex.quote(str(GRPCURL.with_name('flowctl')))} --server {README_ADDRESS} "
    line, flowctls = re.subn(r"^flowctl ", lambda _: flowctl, line)
    assert count + flowctls == 1, f"expected one grpcurl or flowctl in {command!r}"
    assert README_ADDRESS in line, command
    line = line.replace(README_ADDRESS, server.address)
    process = subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", line],
        cwd=REPO_ROOT,
        # flowctl: wide enough that no table wraps, no colour (as tests/cli runs it)
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, to kill the pipeline as a whole
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(line, process.returncode, stdout, stderr)


def readme_output(command: str) -> str:
    """What the README shows below `command`: the code block right after the command's."""
    readme = docs_text()
    block = f"```sh\n{command}\n```\n\n"
    assert block in readme, f"the README does not show {command!r}"
    shown = re.match(
        r"```(?:json|text)\n(.*?)\n```", readme[readme.index(block) + len(block) :], re.S
    )
    assert shown, f"the README shows no output below {command!r}"
    return shown.group(1)


def readme_examples() -> list[tuple[str, str]]:
    """Every one-line command the README runs against 127.0.0.1:50051, with what it shows.

    Left out: commands whose output depends on timing (`-max-time`, and the
    slow flow, which the README interrupts with Ctrl-C), and commands naming
    an execution id, which exists only once the README has started it
    (test_history_readme.py follows those in order).
    """
    examples = re.findall(
        r"```sh\n((?:grpcurl|sed) [^\n`]*)\n```\n\n```(?:json|text)\n(.*?)\n```",
        docs_text(),
        re.S,
    )
    return [
        (command, shown)
        for command, shown in examples
        if README_ADDRESS in command
        and "-max-time" not in command
        and "slow-flow" not in command
        and not UUID.search(command)
    ]


def example_id(command: str) -> str:
    """A short test id for a README command: what it calls, and with which file."""
    method = re.search(r"(\S+)/(\w+)(?: |$)", command)
    words = shlex.split(command)
    words = [method.group(2) if method else words[words.index(README_ADDRESS) + 1]]
    words += re.findall(r"examples/([\w-]+)\.json", command) or ["inline"]
    return ("sed|" if command.startswith("sed") else "") + "-".join(words)


def _comparable(line: str) -> str:
    """`line` with what changes from run to run (ids, times, durations) blanked out.

    Durations: grpcurl's (`"0.000092s"`) and flowctl's (`+0.001s`, `0.09 ms`).
    """
    line = UUID.sub("<id>", line)
    line = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", line)
    line = re.sub(r"\+\d+\.\d+s\b|\b\d+(\.\d+)? (ms|µs|s)\b", "<duration>", line)
    return re.sub(r'"\d+\.\d+s"', '"<duration>"', line).rstrip()


def response(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON message grpcurl printed, after checking that it exited 0."""
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr}"
    message: dict[str, Any] = json.loads(result.stdout)
    return message


def as_printed(message: dict[str, Any], indent: int) -> str:
    """`message` as grpcurl prints a (non-Struct) message nested `indent` spaces deep."""
    return json.dumps(message, indent=2).replace("\n", "\n" + " " * indent)


def example(name: str) -> dict[str, Any]:
    """The request body of `examples/<name>`."""
    request: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return request


def execute_command(request: dict[str, Any]) -> str:
    """A grpcurl command line, written as the README writes them, that executes `request`."""
    body = shlex.quote(json.dumps(request))
    return f"grpcurl -plaintext -d {body} {README_ADDRESS} flowmanager.v1.FlowService/Execute"


@pytest.mark.parametrize(
    "command",
    [
        DESCRIBE,
        INVALID_REQUEST,
        BRANCHING,
        BRANCHING_NO_ROWS,
        VALIDATE_WARNINGS,
        VALIDATE_ERRORS,
        WHAT_IF,
    ],
)
def test_the_readme_shows_each_command(command: str) -> None:
    assert f"```sh\n{command}\n```" in docs_text()


@pytest.mark.parametrize(
    ("command", "shown"),
    [pytest.param(command, shown, id=example_id(command)) for command, shown in readme_examples()],
)
def test_the_readme_shows_real_output(server: RunningServer, command: str, shown: str) -> None:
    """Every line the README shows below a command, `...` aside, is printed, in that order."""
    result = run_in_shell(command, server)

    assert_prints_what_is_shown(command, shown, result.stdout + result.stderr)


def assert_prints_what_is_shown(command: str, shown: str, output: str) -> None:
    """Every line of `shown`, `...` aside, is in `output`, in that order (`_comparable`)."""
    printed = [_comparable(line) for line in output.splitlines()]
    position = 0
    for line in shown.splitlines():
        if line.strip().startswith("...") or not line.strip():
            continue
        assert _comparable(line) in printed[position:], (
            f"the README shows {line!r}, which {command!r} did not print (in that order):\n"
            + "\n".join(printed)
        )
        position = printed.index(_comparable(line), position) + 1


def test_describe_shows_the_three_rpcs_as_the_readme_does(server: RunningServer) -> None:
    result = run_in_shell(DESCRIBE, server)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == readme_output(DESCRIBE)
    assert "rpc Validate ( .flowmanager.v1.ValidateRequest )" in result.stdout


def test_the_invalid_request_prints_what_the_readme_shows(server: RunningServer) -> None:
    result = run_in_shell(INVALID_REQUEST, server)

    assert result.returncode == EXIT_INVALID_ARGUMENT, result.stderr
    assert result.stdout == ""
    # Every part of this error is deterministic: the README shows it whole.
    assert result.stderr.strip() == readme_output(INVALID_REQUEST)
    [message] = re.findall(r"^\s*Message: (.*)$", result.stderr, re.MULTILINE)
    assert message == (
        "invalid flow, 3 problems (all in the details); first flow.tasks[0].type: unknown task"
        " type 'download'; registered types: fetch_data, grpc, http, mock, process_data,"
        " store_data, worker"
    )


def test_the_branching_flow_processes_the_rows_it_fetched(server: RunningServer) -> None:
    shown = readme_output(BRANCHING)

    summary = response(run_in_shell(BRANCHING, server))

    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert summary["executed_tasks"] == ["fetch", "process", "store"]
    fetch, process, store = summary["task_results"]
    assert fetch["inputs"] == {"count": 3}  # input.rows, through the input mapping
    assert len(fetch["output"]["records"]) == 3
    assert fetch["decision"] == {
        "condition": "has_rows",
        "source_task": "fetch",
        "actual_outcome": "TASK_OUTCOME_SUCCESS",
        "branch": "BRANCH_SUCCESS",
        "next_task": "process",
        "expression": "size(result.output.records) != 0",
        "value": True,
        "condition_index": 1,
        "links_tested": 2,
    }
    assert f'"decision": {as_printed(fetch["decision"], 6)}' in shown
    # Only the records whose value is at least input.min_value (20) reach process.
    assert process["inputs"] == {"records": [{"id": 2, "value": 20}, {"id": 3, "value": 30}]}
    assert process["output"]["total"] == 100
    assert store["output"]["stored"] == 2
    assert summary["output"] == {"fetched": 3, "total": 100}
    for line in ['"fetched": 3,', '"total": 100', '"count": 3', '"id": 2,', '"id": 3,']:
        assert line in shown
    assert '"fetched": 3, "total": 100' in docs_text()


def test_the_branching_flow_without_rows_stops_after_fetch(server: RunningServer) -> None:
    shown = readme_output(BRANCHING_NO_ROWS)

    summary = response(run_in_shell(BRANCHING_NO_ROWS, server))

    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert summary["executed_tasks"] == ["fetch"]
    [fetch] = summary["task_results"]
    assert fetch["inputs"] == {"count": 0}
    decision = fetch["decision"]
    assert "value" not in decision  # false: grpcurl leaves it out
    assert (decision["condition"], decision["branch"], decision["next_task"]) == (
        "has_rows",
        "BRANCH_FAILURE",
        "end",
    )
    assert f'"decision": {as_printed(decision, 6)}' in shown
    assert summary["output"] == {"fetched": 0, "total": 0}
    assert '"fetched": 0,' in shown
    assert '"total": 0' in shown


def test_a_stub_sends_the_branching_flow_down_its_no_rows_branch(server: RunningServer) -> None:
    assert NO_ROWS_STUB in docs_text()
    request = {**example("branching-flow.json"), **json.loads("{" + NO_ROWS_STUB + "}")}

    summary = response(run_in_shell(execute_command(request), server))

    assert summary["executed_tasks"] == ["fetch"]
    [fetch] = summary["task_results"]
    assert fetch["stubbed"] is True
    assert fetch["decision"]["next_task"] == "end"
    assert summary["output"] == {"fetched": 0, "total": 0}


def test_validate_reports_the_warnings_the_readme_shows(server: RunningServer) -> None:
    result = run_in_shell(VALIDATE_WARNINGS, server)

    found = response(result)  # problems are data: grpcurl exits 0
    assert found == json.loads(readme_output(VALIDATE_WARNINGS))
    assert found["valid"] is True
    assert "errors" not in found
    assert [(w["field"], w["reason"]) for w in found["warnings"]] == [
        ("flow.tasks[0]", "LOOP_WITHOUT_EXIT"),
        ("flow.tasks[1]", "LOOP_WITHOUT_EXIT"),
        ("flow.tasks[2]", "UNREACHABLE_TASK"),
        ("flow.conditions[2]", "CONDITION_NEVER_APPLIES"),
    ]


def test_validate_reports_the_errors_the_readme_shows(server: RunningServer) -> None:
    result = run_in_shell(VALIDATE_ERRORS, server)

    found = response(result)  # problems are data: grpcurl exits 0
    assert found == json.loads(readme_output(VALIDATE_ERRORS))
    assert "valid" not in found  # false: grpcurl leaves it out
    assert "warnings" not in found  # looked for only in a flow without errors
    assert [(e["field"], e["reason"]) for e in found["errors"]] == [
        ("flow.conditions[0].expression", "INVALID_EXPRESSION"),
        ("flow.output", "INVALID_EXPRESSION"),
    ]
    assert found["errors"][0]["description"].startswith("invalid expression: line 1, column ")


def test_the_what_if_example_is_the_seed_with_a_stub_for_task2() -> None:
    what_if = example("what-if.json")

    stubs = what_if.pop("stubs")

    assert what_if == example("seed-flow.json")
    assert stubs == {
        "task2": {"outcome": "TASK_OUTCOME_FAILURE", "error": "what if processing fails?"}
    }


def test_the_what_if_run_fails_at_the_stubbed_task2(server: RunningServer) -> None:
    shown = readme_output(WHAT_IF)

    summary = response(run_in_shell(WHAT_IF, server))

    assert summary["status"] == "EXECUTION_STATUS_FAILED"
    assert summary["failed_task"] == "task2"
    assert summary["executed_tasks"] == ["task1", "task2"]
    task1, task2 = summary["task_results"]
    assert "stubbed" not in task1  # it ran: false is left out
    assert task2["stubbed"] is True
    assert task2["outcome"] == "TASK_OUTCOME_FAILURE"
    assert task2["error_type"] == "StubbedFailure"
    assert task2["error"] == "what if processing fails?"
    assert task2["decision"]["next_task"] == "end"
    assert summary["error"] == "task 'task2' failed: what if processing fails?"
    for line in [
        '"status": "EXECUTION_STATUS_FAILED",',
        '"failed_task": "task2",',
        '"error": "what if processing fails?",',
        '"error_type": "StubbedFailure",',
        '"stubbed": true,',
        '"next_task": "end",',
        '"error": "task \'task2\' failed: what if processing fails?",',
    ]:
        assert line in shown


@pytest.mark.parametrize(
    ("mapping", "error"),
    [
        ("tasks.count.output.rows", 'Key not found in map : "rows"'),
        ("tasks.count.output.n + 1", "No matching overloads found : _+_(double, int64)"),
        (
            "[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b,"
            " [0,1,2,3,4,5,6,7,8,9].all(c, [0,1,2,3,4,5,6,7,8,9].all(d, true))))",
            "evaluation exceeded CEL's budget of 10000 comprehension iterations"
            " (max_expression_iterations)",
        ),
    ],
)
def test_an_expression_that_fails_at_run_time_fails_the_flow_as_the_readme_says(
    server: RunningServer, mapping: str, error: str
) -> None:
    readme = " ".join(docs_text().split())  # its lines may wrap anywhere
    assert error in readme
    request = {
        "flow": {
            "start_task": "count",
            "tasks": [
                {"name": "count", "params": {"output": {"n": 2}}},
                {"name": "use", "input_mapping": {"value": mapping}},
            ],
        }
    }

    summary = response(run_in_shell(execute_command(request), server))

    assert summary["status"] == "EXECUTION_STATUS_FAILED"
    assert summary["executed_tasks"] == ["count"]  # `use` never started
    assert "failed_task" not in summary
    assert summary["error"] == (
        f"input_mapping 'value' of task 'use' could not be evaluated: {error}"
    )


def test_int_and_double_mix_after_a_conversion(server: RunningServer) -> None:
    readme = docs_text()
    assert "`int(result.output.rows) + 1`" in readme
    assert "`result.output.rows + 1.0`" in readme
    request = {
        "flow": {
            "start_task": "count",
            "tasks": [
                {"name": "count", "params": {"output": {"rows": 2}}},
                {
                    "name": "use",
                    "input_mapping": {
                        "next": "int(result.output.rows) + 1",
                        "later": "result.output.rows + 1.0",
                    },
                },
            ],
        }
    }

    summary = response(run_in_shell(execute_command(request), server))

    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert summary["task_results"][1]["inputs"] == {"next": 3, "later": 3}


def test_a_sum_inside_map_runs_once_its_operands_are_numbers(server: RunningServer) -> None:
    refused = "input.prices.map(p, p + input.shipping)"
    fixed = "double(p) + input.shipping"
    readme = docs_text()
    assert refused in readme
    assert f"With `{fixed}` the flow is valid, and its output is\n`[15, 25]`" in readme
    request = {
        "flow": {
            "start_task": "quote",
            "tasks": [{"name": "quote"}],
            "output": refused.replace("p + input.shipping", fixed),
        },
        "input": {"prices": [10, 20], "shipping": 5},
    }

    summary = response(run_in_shell(execute_command(request), server))

    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert summary["output"] == [15, 25]
