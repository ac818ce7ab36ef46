"""flowctl's registry commands: `flows create`, `flows get`, `flows list`, `flows versions`.

`flows get` takes a reference `ID[@VERSION]`, as `run`, `start` and
`validate` do with `--flow` (`files.parse_reference`). Each command prints for people by
default and the response as JSON with `--json`, as the history commands do.
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.text import Text

from flowmanager.v1 import flow_registry_service_pb2 as registry_pb
from flowmanager.v1 import flow_service_pb2 as pb
from flowservice.cli.commands import Connection, call_server, check_reachable, server_error
from flowservice.cli.errors import ExitCode
from flowservice.cli.files import load_request, parse_reference
from flowservice.cli.render import console, print_client_error, print_validation
from flowservice.client import FlowClient, FlowClientError

__all__ = [
    "create_flow",
    "get_flow",
    "list_flow_versions",
    "list_flows",
]


async def create_flow(path: str, *, connection: Connection, as_json: bool) -> ExitCode:
    """Stores the flow in `path` in the registry; prints its version and any warnings."""
    flow = load_request(path).flow
    async with FlowClient(connection.server, metadata=connection.metadata) as client:
        await check_reachable(client, connection.connect_timeout)
        try:
            response = await client.create_flow(flow, timeout=connection.timeout)
        except FlowClientError as error:
            if error.code.name == "INVALID_ARGUMENT":
                print_client_error(console(stderr=True), path, error)
                return ExitCode.USAGE
            raise server_error(error) from None
    if as_json:
        print(_json(response, indent=2))
        return ExitCode.COMPLETED
    out = console()
    if response.warnings:
        print_validation(out, path, pb.ValidateResponse(valid=True, warnings=response.warnings))
    stored = response.flow
    if response.created:
        out.print(Text(f"created {stored.flow_id}@{stored.version}"))
    else:
        out.print(Text(f"unchanged: {stored.flow_id}@{stored.version} holds this flow already"))
    return ExitCode.COMPLETED


async def get_flow(reference: str, *, connection: Connection, as_json: bool) -> ExitCode:
    """Prints a version of a flow (the latest unless the reference names one), as JSON too."""
    wanted = parse_reference(reference)
    found = await call_server(
        connection,
        lambda c: c.get_flow(wanted.flow_id, wanted.version, timeout=connection.timeout),
    )
    if as_json:
        print(_json(found, indent=2))
    else:
        console().print(Text("\n".join([_row(found), _json(found.flow, indent=2)])))
    return ExitCode.COMPLETED


async def list_flows(
    *, page_size: int, page_token: str, connection: Connection, as_json: bool
) -> ExitCode:
    """Prints a page of the registry's flows (the latest version of each), by id."""
    request = registry_pb.ListFlowsRequest(page_size=page_size, page_token=page_token)
    response = await call_server(
        connection, lambda c: c.list_flows(request, timeout=connection.timeout)
    )
    _print_page(response, [_row(v) for v in response.flows], as_json, "no flows")
    return ExitCode.COMPLETED


async def list_flow_versions(
    flow_id: str, *, page_size: int, page_token: str, connection: Connection, as_json: bool
) -> ExitCode:
    """Prints a page of one flow's versions, newest first."""
    request = registry_pb.ListFlowVersionsRequest(
        flow_id=flow_id, page_size=page_size, page_token=page_token
    )
    response = await call_server(
        connection, lambda c: c.list_flow_versions(request, timeout=connection.timeout)
    )
    _print_page(response, [_row(v) for v in response.versions], as_json, "no versions")
    return ExitCode.COMPLETED


def _print_page(
    response: registry_pb.ListFlowsResponse | registry_pb.ListFlowVersionsResponse,
    lines: list[str],
    as_json: bool,
    empty: str,
) -> None:
    if as_json:
        print(_json(response, indent=2))
        return
    if response.next_page_token:
        lines.append(f"next page: --page-token {response.next_page_token}")
    console().print(Text("\n".join(lines) or empty))


def _row(version: registry_pb.FlowVersion) -> str:
    created = version.create_time.ToJsonString()
    return f"{version.flow_id}@{version.version}  {created}  {version.flow_name}".rstrip()


def _json(message: Message, indent: int | None) -> str:
    return json_format.MessageToJson(message, indent=indent, preserving_proto_field_name=True)
