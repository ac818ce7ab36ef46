"""flowctl's history commands: `start`, `get`, `list`, `watch`, `cancel` (ExecutionService).

Each prints for people by default and the messages as JSON with `--json`
(one object; `watch --json` one event a line, as `run --json`). `watch`
shows the same live view as `run`. Errors go through `commands`'s mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.text import Text

from flowmanager.v1 import execution_service_pb2 as history_pb
from flowmanager.v1 import flow_service_pb2 as pb
from flowservice.cli.commands import (
    Connection,
    call_server,
    check_reachable,
    load_with_input,
    server_error,
)
from flowservice.cli.errors import ExitCode
from flowservice.cli.render import RunView, console, status_name
from flowservice.client import FlowClient, FlowClientError

__all__ = [
    "STATUS_CHOICES",
    "cancel_execution",
    "get_execution",
    "list_executions",
    "start_execution",
    "watch_execution",
]

_STATUSES = {
    "completed": pb.EXECUTION_STATUS_COMPLETED,
    "failed": pb.EXECUTION_STATUS_FAILED,
    "cancelled": pb.EXECUTION_STATUS_CANCELLED,
    "timed_out": pb.EXECUTION_STATUS_TIMED_OUT,
}
STATUS_CHOICES = ("running", *_STATUSES)
"""What `flowctl list --status` takes."""


async def start_execution(
    path: str,
    *,
    flow_input: str | None,
    connection: Connection,
    as_json: bool,
    flow_ref: str | None = None,
) -> ExitCode:
    """Starts the flow in `path` (or `flow_ref`'s) detached and prints its execution id."""
    request = load_with_input(path, flow_input, flow_ref)
    execution = await call_server(
        connection, lambda c: c.start_execution(request, timeout=connection.timeout)
    )
    _print(execution, as_json, f"started {execution.execution_id}")
    return ExitCode.COMPLETED


async def get_execution(execution_id: str, *, connection: Connection, as_json: bool) -> ExitCode:
    """Prints one execution."""
    execution = await call_server(
        connection, lambda c: c.get_execution(execution_id, timeout=connection.timeout)
    )
    _print(execution, as_json, "\n".join(_describe(execution)))
    return ExitCode.COMPLETED


async def list_executions(
    *,
    flow_id: str,
    status: str,
    page_size: int,
    page_token: str,
    connection: Connection,
    as_json: bool,
) -> ExitCode:
    """Prints a page of executions, newest first, and how to get the next."""
    request = history_pb.ListExecutionsRequest(
        flow_id=flow_id, page_size=page_size, page_token=page_token
    )
    if status == "running":
        request.state = history_pb.EXECUTION_STATE_RUNNING
    elif status:
        request.status = _STATUSES[status]
    response = await call_server(
        connection, lambda c: c.list_executions(request, timeout=connection.timeout)
    )
    lines = [_row(execution) for execution in response.executions]
    if response.next_page_token:
        lines.append(f"next page: --page-token {response.next_page_token}")
    _print(response, as_json, "\n".join(lines) or "no executions")
    return ExitCode.COMPLETED


async def watch_execution(
    execution_id: str, *, after: int, connection: Connection, as_json: bool
) -> ExitCode:
    """Shows the execution's events live, as `run` does; exits as `run` would.

    Its end comes as its last event. When none came (it ended at or before
    `after`, or an older server recorded a cancel without one), the end is
    read with GetExecution: its summary is shown and sets the exit code.
    """
    out = console()
    view = RunView(out)
    finished: pb.ExecuteResponse | None = None
    async with FlowClient(connection.server, metadata=connection.metadata) as client:
        await check_reachable(client, connection.connect_timeout)
        events = client.watch_execution(
            execution_id, after_sequence=after, timeout=connection.timeout
        )
        try:
            async for event in events:
                if as_json:
                    print(_json(event, indent=None), flush=True)
                else:
                    view.show(event)
                if event.HasField("execution_finished"):
                    finished = event.execution_finished.result
            if finished is None:
                finished = await _stored_end(client, execution_id, connection)
                if not as_json:
                    view.summary(finished)
        except FlowClientError as error:
            raise server_error(error) from None
        finally:
            view.close()
            await events.aclose()
    if finished.status == pb.EXECUTION_STATUS_COMPLETED:
        return ExitCode.COMPLETED
    return ExitCode.FLOW_DID_NOT_COMPLETE


async def _stored_end(
    client: FlowClient, execution_id: str, connection: Connection
) -> pb.ExecuteResponse:
    """The summary GetExecution holds for a finished execution (only its status, if none)."""
    execution = await client.get_execution(execution_id, timeout=connection.timeout)
    if execution.HasField("result"):
        return execution.result
    return pb.ExecuteResponse(
        execution_id=execution_id, flow_id=execution.flow_id, status=execution.status
    )


async def cancel_execution(execution_id: str, *, connection: Connection, as_json: bool) -> ExitCode:
    """Cancels a running execution."""
    execution = await call_server(
        connection, lambda c: c.cancel_execution(execution_id, timeout=connection.timeout)
    )
    _print(execution, as_json, f"cancelled {execution.execution_id}")
    return ExitCode.COMPLETED


def _describe(execution: history_pb.Execution) -> Sequence[str]:
    lines = [
        f"execution  {execution.execution_id}",
        f"flow       {execution.flow_id}"
        + (f"@{execution.flow_version}" if execution.flow_version else ""),
        f"status     {_status(execution)}",
        f"started    {execution.start_time.ToJsonString()}",
    ]
    if execution.HasField("end_time"):
        lines.append(f"finished   {execution.end_time.ToJsonString()}")
    if execution.HasField("result"):
        lines.append("tasks      " + " → ".join(execution.result.executed_tasks))
    return lines


def _row(execution: history_pb.Execution) -> str:
    return (
        f"{execution.execution_id}  {execution.flow_id}  {_status(execution)}"
        f"  {execution.start_time.ToJsonString()}"
    )


def _status(execution: history_pb.Execution) -> str:
    if execution.state == history_pb.EXECUTION_STATE_RUNNING:
        return "RUNNING"
    return status_name(execution.status)


def _print(message: Message, as_json: bool, text: str) -> None:
    if as_json:
        print(_json(message, indent=2))
    else:
        console().print(Text(text))


def _json(message: Message, indent: int | None) -> str:
    return json_format.MessageToJson(message, indent=indent, preserving_proto_field_name=True)
