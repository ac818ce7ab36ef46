"""What flowctl shows people: a run as it happens, validation issues, RPC errors.

`RunView` prints one line per event (a task started, retried, finished; the
branch a condition took), with the time since the execution started, a
spinner while a task runs on a terminal, and a summary table at the end.
Names and messages from the flow are printed as plain text, never read as
rich markup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.protobuf import duration_pb2, json_format
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from flowmanager.v1 import flow_service_pb2 as pb
from flowservice.client import FieldViolation, FlowClientError

__all__ = [
    "RunView",
    "console",
    "format_duration",
    "print_client_error",
    "print_validation",
    "status_name",
]

_STATUS_STYLE = {
    pb.EXECUTION_STATUS_COMPLETED: "bold green",
    pb.EXECUTION_STATUS_FAILED: "bold red",
    pb.EXECUTION_STATUS_TIMED_OUT: "bold yellow",
    pb.EXECUTION_STATUS_CANCELLED: "bold yellow",
}
_MAX_OUTPUT_CHARS = 300
# Rich lays tables out for 80 columns when it writes to a pipe or a file;
# logs and CI output read better wider.
_PIPE_WIDTH = 160


def console(*, stderr: bool = False) -> Console:
    """A console for flowctl's output: no guessing highlights, lines never broken.

    On a terminal rich uses its width; elsewhere `COLUMNS`, or 160.
    """
    interactive = Console(stderr=stderr).is_terminal
    width = None if interactive or "COLUMNS" in os.environ else _PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def status_name(status: pb.ExecutionStatus) -> str:
    """`COMPLETED` for EXECUTION_STATUS_COMPLETED, and so on."""
    return pb.ExecutionStatus.Name(status).removeprefix("EXECUTION_STATUS_")


def format_duration(duration: duration_pb2.Duration | float) -> str:
    """A duration for people: `0.12 ms`, `340 ms`, `1.25 s`, `2 min 5 s`."""
    seconds = duration if isinstance(duration, float) else duration.ToTimedelta().total_seconds()
    if seconds < 0.001:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f} min {rest:.0f} s"


class RunView:
    """Shows the events of one execution as they arrive, then its summary."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._started_at: datetime | None = None
        self._status: Status | None = None

    def show(self, event: pb.ExecuteStreamResponse) -> None:
        """Prints what `event` says happened."""
        self._stop_spinner()
        elapsed = self._elapsed(event)
        match event.WhichOneof("event"):
            case "execution_started":
                self._started(event)
            case "task_started":
                started = event.task_started
                self._line(
                    elapsed,
                    ("▶ ", "cyan"),
                    (started.task, "bold"),
                    f" started ({started.type}, step {started.step})",
                )
                self._spin(f"{started.task} running…")
            case "task_retrying":
                retrying = event.task_retrying
                self._line(
                    elapsed,
                    ("↻ ", "yellow"),
                    (retrying.task, "bold"),
                    f" attempt {retrying.attempt} failed: {retrying.error}"
                    f" ({retrying.error_type}); retrying in {format_duration(retrying.delay)}",
                )
                self._spin(f"{retrying.task} waiting to retry…")
            case "task_finished":
                self._finished(elapsed, event.task_finished.result)
            case "condition_evaluated":
                self._console.print(
                    Text.assemble(" " * 11, ("↳ ", "dim"), _decision(event.condition_evaluated))
                )
            case "execution_finished":
                self.summary(event.execution_finished.result)

    def close(self) -> None:
        """Stops the spinner, if one is running."""
        self._stop_spinner()

    def summary(self, result: pb.ExecuteResponse) -> None:
        """The table of task runs, the final status, and the error or output."""
        table = Table(title=None, show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in ("step", "task", "outcome", "attempts", "duration", "then"):
            table.add_column(column, justify="right" if column in ("step", "attempts") else "left")
        for position, run in enumerate(result.task_results):
            success = run.outcome == pb.TASK_OUTCOME_SUCCESS
            then = (
                _then(run.decision)
                if run.HasField("decision")
                else Text(_next_task(result, position))
            )
            table.add_row(
                str(run.step),
                Text(run.task + (" (stubbed)" if run.stubbed else "")),
                Text("success", "green") if success else Text("failure", "red"),
                str(run.attempts),
                format_duration(run.duration),
                then,
            )
        self._console.print()
        if result.task_results:
            self._console.print(table)
            self._console.print()
        status = Text(status_name(result.status), _STATUS_STYLE.get(result.status, "bold"))
        line = Text.assemble(
            status,
            f" in {format_duration(result.duration)}",
            f" · {_plural(len(result.task_results), 'task run')}: ",
            " → ".join(result.executed_tasks) or "none",
        )
        self._console.print(line)
        if result.failed_task:
            self._console.print(Text.assemble(("failed task: ", "red"), result.failed_task))
        if result.error:
            self._console.print(Text.assemble(("error: ", "red"), result.error))
        value = json_format.MessageToDict(result.output) if result.HasField("output") else None
        if value not in (None, {}, []):
            output = json.dumps(_whole_numbers(value), separators=(",", ":"))
            if len(output) > _MAX_OUTPUT_CHARS:
                output = output[: _MAX_OUTPUT_CHARS - 1] + "…"
            self._console.print(Text.assemble(("output: ", "dim"), output))

    def _started(self, event: pb.ExecuteStreamResponse) -> None:
        started = event.execution_started
        title = " · ".join(part for part in (started.flow_id, started.flow_name) if part)
        self._console.print(
            Text.assemble(
                ("Flow ", "bold"),
                (title or "(unnamed)", "bold"),
                (f"  execution {event.execution_id}", "dim"),
            )
        )

    def _finished(self, elapsed: str, result: pb.TaskResult) -> None:
        attempts = f" after {result.attempts} attempts" if result.attempts > 1 else ""
        stubbed = " (stubbed)" if result.stubbed else ""
        took = f" in {format_duration(result.duration)}{attempts}{stubbed}"
        if result.outcome == pb.TASK_OUTCOME_SUCCESS:
            self._line(elapsed, ("✔ ", "green"), (result.task, "bold"), " succeeded" + took)
        else:
            self._line(
                elapsed,
                ("✘ ", "red"),
                (result.task, "bold"),
                (" failed", "red"),
                f"{took}: {result.error} ({result.error_type})",
            )

    def _line(self, elapsed: str, *parts: str | tuple[str, str]) -> None:
        self._console.print(Text.assemble((f"{elapsed:>9} ", "dim"), *parts))

    def _elapsed(self, event: pb.ExecuteStreamResponse) -> str:
        time = event.time.ToDatetime()
        if self._started_at is None:
            self._started_at = time
        return f"+{(time - self._started_at).total_seconds():.3f}s"

    def _spin(self, message: str) -> None:
        # Only on a terminal: in a pipe or a file a spinner is noise.
        if self._console.is_terminal:
            self._status = self._console.status(Text(message), spinner="dots")
            self._status.start()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def print_validation(console: Console, source: str, response: pb.ValidateResponse) -> None:
    """Each error and warning, compiler-style (`FILE: error: FIELD: what [REASON]`), a verdict."""
    for kind, issues in (("error", response.errors), ("warning", response.warnings)):
        for issue in issues:
            console.print(_issue(source, kind, issue.field, issue.description, issue.reason))
    errors, warnings = len(response.errors), len(response.warnings)
    counts = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
    if response.valid:
        console.print(Text.assemble(("✔ ", "green"), f"{source}: valid ({counts})"))
    else:
        console.print(Text.assemble(("✘ ", "red"), f"{source}: invalid ({counts})"))


def print_client_error(console: Console, source: str, error: FlowClientError) -> None:
    """An RPC error with its details: field violations, and the ErrorInfo reason and metadata."""
    if error.code.name == "INVALID_ARGUMENT" and error.field_violations:
        print_violations(console, source, error.field_violations)
        info = error.error_info
        total = int(info.metadata.get("violations", "0")) if info else 0
        if total > len(error.field_violations):
            console.print(
                f"… and {total - len(error.field_violations)} more: "
                f"`flowctl validate {source}` lists them all"
            )
        count = _plural(max(total, len(error.field_violations)), "error")
        console.print(
            Text.assemble(("✘ ", "red"), f"{source}: invalid flow ({count}); nothing ran")
        )
        return
    console.print(Text.assemble(("flowctl: ", "red"), f"{error.code.name}: {error.message}"))
    if error.error_info is not None:
        info = error.error_info
        metadata = ", ".join(f"{key}={value}" for key, value in sorted(info.metadata.items()))
        console.print(
            Text(f"  reason {info.reason} ({info.domain})" + (f": {metadata}" if metadata else ""))
        )


def print_violations(console: Console, source: str, violations: Sequence[FieldViolation]) -> None:
    """One compiler-style line per field violation."""
    for violation in violations:
        console.print(
            _issue(source, "error", violation.field, violation.description, violation.reason)
        )


def _issue(source: str, kind: str, field: str, description: str, reason: str) -> Text:
    return Text.assemble(
        f"{source}: ",
        (kind, "red" if kind == "error" else "yellow"),
        ": ",
        (field or "(request)", "bold"),
        f": {description} ",
        (f"[{reason}]", "dim"),
    )


def _decision(decision: pb.ConditionEvaluatedEvent) -> Text:
    name = decision.condition or f"conditions[{decision.condition_index}]"
    test = decision.expression if decision.expression else f"outcome == {decision.expected_outcome}"
    held = decision.branch == pb.BRANCH_SUCCESS
    chain = f" (after {decision.links_tested} links)" if decision.links_tested > 1 else ""
    return Text.assemble(
        (name, "bold"),
        f" [{test}] is ",
        ("true", "green") if held else ("false", "yellow"),
        f"{chain} → ",
        (decision.next_task, "bold"),
    )


def _then(decision: pb.ConditionEvaluatedEvent) -> Text:
    name = decision.condition or f"conditions[{decision.condition_index}]"
    held = "true" if decision.branch == pb.BRANCH_SUCCESS else "false"
    return Text.assemble(f"→ {decision.next_task} ", (f"({name}: {held})", "dim"))


def _next_task(result: pb.ExecuteResponse, position: int) -> str:
    following = position + 1
    if following < len(result.executed_tasks):
        return f"→ {result.executed_tasks[following]}"
    return "→ end" if result.status == pb.EXECUTION_STATUS_COMPLETED else "stopped"


def _whole_numbers(value: Any) -> Any:
    """`value` with 3.0 written 3: protobuf's Struct keeps every number as a double."""
    match value:
        case float() if value.is_integer():
            return int(value)
        case dict():
            return {key: _whole_numbers(item) for key, item in value.items()}
        case list():
            return [_whole_numbers(item) for item in value]
    return value


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
