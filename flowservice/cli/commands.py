"""flowctl's commands: `run` and `validate` call the server, `graph` works offline.

Each returns an `ExitCode` or raises `CliError`; none prints a fatal error
itself. Before its first call, a command that needs the server checks its
health with a short deadline and `wait_for_ready=False`, so that a server
that is not there is reported at once, in one line, rather than after the
run's own deadline.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2
from rich.console import Console
from rich.text import Text

from flowmanager.v1 import flow_service_pb2 as pb
from flowservice.cli.errors import CliError, ExitCode
from flowservice.cli.files import (
    STDIN,
    load_execution,
    load_request,
    parse_input,
    parse_reference,
)
from flowservice.cli.graph import ExecutionPath, FlowGraph, render_with_graphviz, to_dot, to_mermaid
from flowservice.cli.render import (
    RunView,
    console,
    print_client_error,
    print_validation,
    status_name,
)
from flowservice.client import FlowClient, FlowClientError, Metadata

__all__ = [
    "GRAPH_FORMATS",
    "Connection",
    "call_server",
    "check_reachable",
    "draw_graph",
    "load_with_input",
    "run_flow",
    "server_error",
    "validate_flow",
]

_T = TypeVar("_T")

FLOW_SERVICE = pb.DESCRIPTOR.services_by_name["FlowService"].full_name
"""The name the server's health service knows the Flow Manager by."""

GRAPH_FORMATS = ("mermaid", "dot", "svg", "png")
"""What `flowctl graph --format` can write; svg and png need Graphviz."""

_SUFFIX_FORMATS = {
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
}


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to call the server."""

    server: str
    """host:port of the Flow Manager."""
    timeout: float | None
    """The deadline of the call, in seconds; None for none."""
    connect_timeout: float
    """How long the health check before the call may take, in seconds."""
    metadata: Metadata = ()
    """Metadata sent with every call."""


async def run_flow(
    path: str,
    *,
    flow_input: str | None,
    connection: Connection,
    as_json: bool,
    flow_ref: str | None = None,
) -> ExitCode:
    """Streams a run of the flow in `path`: live for people, or JSON lines with `as_json`."""
    request = _load_with_input(path, flow_input, flow_ref)
    out = console()
    err = console(stderr=True)
    view = RunView(out)
    finished: pb.ExecuteResponse | None = None
    async with FlowClient(connection.server, metadata=connection.metadata) as client:
        await _check_reachable(client, connection.connect_timeout)
        events = client.stream(request, timeout=connection.timeout)
        try:
            async for event in events:
                if as_json:
                    line = json_format.MessageToJson(
                        event, indent=None, preserving_proto_field_name=True
                    )
                    print(line, flush=True)
                else:
                    view.show(event)
                if event.HasField("execution_finished"):
                    finished = event.execution_finished.result
        except FlowClientError as error:
            return _run_error(err, _label(flow_ref or path), error, finished, connection.timeout)
        finally:
            view.close()
            await events.aclose()  # on Ctrl-C too: cancels the call, so the server stops
    if finished is None:
        raise CliError(
            "the server ended the stream without an execution_finished event", ExitCode.SERVER
        )
    if finished.status == pb.EXECUTION_STATUS_COMPLETED:
        return ExitCode.COMPLETED
    return ExitCode.FLOW_DID_NOT_COMPLETE


async def validate_flow(
    path: str,
    *,
    flow_input: str | None,
    connection: Connection,
    as_json: bool,
    flow_ref: str | None = None,
) -> ExitCode:
    """Prints the errors and warnings the server finds in the request in `path`.

    The whole request is checked: its flow, and its input and stubs as `run`
    would send them.
    """
    request = _load_with_input(path, flow_input, flow_ref)
    async with FlowClient(connection.server, metadata=connection.metadata) as client:
        await _check_reachable(client, connection.connect_timeout)
        try:
            response = await client.validate(request, timeout=connection.timeout)
        except FlowClientError as error:
            raise _server_error(error) from None
    if as_json:
        print(json_format.MessageToJson(response, preserving_proto_field_name=True))
    else:
        print_validation(console(), _label(flow_ref or path), response)
    return ExitCode.COMPLETED if response.valid else ExitCode.USAGE


def draw_graph(
    path: str, *, graph_format: str | None, output: str | None, execution: str | None
) -> ExitCode:
    """Writes the graph of the flow in `path`, highlighting the run in `execution`."""
    flow = load_request(path).flow
    chosen = graph_format or _SUFFIX_FORMATS.get(Path(output or "").suffix.lower(), "mermaid")
    run_path = None
    if execution is not None:
        run = load_execution(execution)
        unknown = sorted(set(run.executed_tasks) - {task.name for task in flow.tasks})
        if unknown:
            console(stderr=True).print(
                Text(
                    f"flowctl: warning: {execution} ran tasks that {_label(path)} does not have: "
                    f"{', '.join(unknown)}; is it a run of another flow?"
                )
            )
        run_path = ExecutionPath.of(flow, run)
    graph = FlowGraph.of(flow)
    if chosen == "mermaid":
        content: str | bytes = to_mermaid(graph, run_path)
    elif chosen == "dot":
        content = to_dot(graph, run_path)
    else:
        if output is None and chosen == "png" and sys.stdout.isatty():
            raise CliError("refusing to write PNG to a terminal: add --output FILE.png")
        content = render_with_graphviz(to_dot(graph, run_path), chosen, output or "stdout")
    _write(content, output)
    return ExitCode.COMPLETED


async def _check_reachable(client: FlowClient, deadline: float) -> None:
    """Raises `CliError` when no Flow Manager answers at the client's address."""
    try:
        response = await client.health(FLOW_SERVICE, timeout=deadline)
    except FlowClientError as error:
        if error.code is grpc.StatusCode.UNIMPLEMENTED:
            return  # a server (or proxy) without health checking: let the call tell
        if error.code is grpc.StatusCode.NOT_FOUND:
            raise CliError(
                f"the server at {client.address} answers, but does not serve {FLOW_SERVICE}",
                ExitCode.SERVER,
            ) from None
        if error.code is grpc.StatusCode.DEADLINE_EXCEEDED:
            # The probe's short deadline passing means nobody answered in time.
            raise CliError(_unreachable(error.address), ExitCode.SERVER) from None
        raise _server_error(error) from None
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        state = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        raise CliError(
            f"the Flow Manager at {client.address} is {state} (shutting down?); try again",
            ExitCode.SERVER,
        )


def _run_error(
    err: Console,
    source: str,
    error: FlowClientError,
    finished: pb.ExecuteResponse | None,
    timeout: float | None,
) -> ExitCode:
    """Reports an RPC error that ended a run, and the exit code it means."""
    match error.code:
        case grpc.StatusCode.INVALID_ARGUMENT:
            print_client_error(err, source, error)
            return ExitCode.USAGE
        case grpc.StatusCode.DEADLINE_EXCEEDED:
            if error.error_info is None and timeout is not None:
                # No details: grpc ended the call here, at our own deadline,
                # usually before the server's finished event could arrive.
                message = (
                    f"the call's deadline (--timeout {timeout:g} s) passed before the "
                    "execution finished; the server stops it"
                )
            else:
                # The server ended it; the view has shown how far the flow got.
                status = status_name(finished.status) if finished else "TIMED_OUT"
                message = f"the execution did not finish ({status}): {error.message}"
            err.print(Text(f"flowctl: {message}"))
            return ExitCode.FLOW_DID_NOT_COMPLETE
        case grpc.StatusCode.CANCELLED if error.error_info is not None and (
            error.error_info.reason == "EXECUTION_CANCELLED"
        ):
            # CancelExecution ended it; the view has shown its end (CANCELLED).
            err.print(Text(f"flowctl: the execution was cancelled: {error.message}"))
            return ExitCode.FLOW_DID_NOT_COMPLETE
    raise _server_error(error)


async def call_server(connection: Connection, call: Callable[[FlowClient], Awaitable[_T]]) -> _T:
    """What `call` returns from a client of the server, once it is known to answer."""
    async with FlowClient(connection.server, metadata=connection.metadata) as client:
        await _check_reachable(client, connection.connect_timeout)
        try:
            return await call(client)
        except FlowClientError as error:
            raise _server_error(error) from None


def server_error(error: FlowClientError) -> CliError:
    """The `CliError` that reports an RPC error of the server (or that it is unreachable)."""
    return _server_error(error)


async def check_reachable(client: FlowClient, deadline: float) -> None:
    """Raises `CliError` when no Flow Manager answers at the client's address."""
    await _check_reachable(client, deadline)


def load_with_input(
    path: str, flow_input: str | None, flow_ref: str | None = None
) -> pb.ExecuteRequest:
    """The request in `path` (or by `flow_ref`), with `flow_input` (JSON or @FILE) as its input."""
    return _load_with_input(path, flow_input, flow_ref)


def _server_error(error: FlowClientError) -> CliError:
    if error.unreachable:
        return CliError(_unreachable(error.address), ExitCode.SERVER)
    lines = [f"the server answered {error.code.name}: {error.message}"]
    if error.error_info is not None:
        info = error.error_info
        details = ", ".join(f"{key}={value}" for key, value in sorted(info.metadata.items()))
        lines.append(f"  reason {info.reason}" + (f" ({details})" if details else ""))
    return CliError("\n".join(lines), ExitCode.SERVER)


def _unreachable(address: str) -> str:
    return f"cannot reach the Flow Manager at {address} (is it running? `make run`)"


def _write(content: str | bytes, output: str | None) -> None:
    if output is None:
        if isinstance(content, bytes):
            sys.stdout.buffer.write(content)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(content)
        return
    try:
        if isinstance(content, bytes):
            Path(output).write_bytes(content)
        else:
            Path(output).write_text(content, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{output}: cannot write: {exc.strerror or exc}") from None
    console(stderr=True).print(Text(f"wrote {output}"))


def _load_with_input(
    path: str, flow_input: str | None, flow_ref: str | None = None
) -> pb.ExecuteRequest:
    """The request in `path`, its input replaced by `flow_input` (`--input`) when given.

    With `flow_ref` (`--flow ID[@VERSION]`), a request for that flow of the
    registry instead of the file's.
    """
    if flow_ref is not None:
        request = pb.ExecuteRequest(flow_ref=parse_reference(flow_ref))
    else:
        request = load_request(path)
    if flow_input is not None:
        request.input.Clear()
        request.input.update(parse_input(flow_input))
    return request


def _label(path: str) -> str:
    return "<stdin>" if path == STDIN else path
