"""flowctl: run, check and draw Flow Manager flows from a terminal.

`main` parses the command line and dispatches to `commands`; it is the only
place that prints a fatal error and turns it into an exit code (`ExitCode`).
The console script `flowctl` is `sys.exit(main())`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from rich.text import Text

from flowservice.cli import flows, history
from flowservice.cli.commands import GRAPH_FORMATS, Connection, draw_graph, run_flow, validate_flow
from flowservice.cli.errors import CliError, ExitCode
from flowservice.cli.render import console
from flowservice.client import DEFAULT_ADDRESS

__all__ = ["ExitCode", "main"]

SERVER_VARIABLE = "FLOWCTL_SERVER"
"""The environment variable that sets `--server`'s default."""

_EPILOG = f"""\
flow files are JSON or YAML: a request {{"flow": ..., "input": ..., "stubs": ...}}
(the body grpcurl sends) or a bare flow {{"start_task": ..., "tasks": [...]}};
`-` reads standard input. `--flow ID[@VERSION]` instead of a file names a
flow stored on the server (`flowctl flows`).

exit codes:
  {ExitCode.COMPLETED:<3} the flow completed; the flow is valid; the graph was written
  {ExitCode.FLOW_DID_NOT_COMPLETE:<3} the flow ran and ended FAILED, TIMED_OUT or CANCELLED
  {ExitCode.USAGE:<3} bad arguments, an unreadable or malformed file, an invalid flow
  {ExitCode.SERVER:<3} the server cannot be reached, or answered with another RPC error
  {ExitCode.INTERRUPTED:<3} interrupted (Ctrl-C); the server stops the execution

environment:
  {SERVER_VARIABLE}  the default of --server ({DEFAULT_ADDRESS} when unset)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs flowctl with `argv` (the process's arguments when None); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "flow_file", "") is None and getattr(args, "flow", None) is None:
            parser.error(f"{args.command}: give a FLOW_FILE or --flow ID[@VERSION]")
    except SystemExit as exit_:  # --help, or a usage error argparse has printed
        return exit_.code if isinstance(exit_.code, int) else ExitCode.USAGE
    err = console(stderr=True)
    try:
        return int(_dispatch(args))
    except CliError as error:
        err.print(Text.assemble(("flowctl: ", "bold red"), error.message))
        return int(error.exit_code)
    except KeyboardInterrupt:
        err.print(Text("flowctl: interrupted"))
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`flowctl run --json | head -1`): not an error
        # worth a traceback. Point stdout at /dev/null so the interpreter's
        # final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return int(ExitCode.BROKEN_PIPE)


def _dispatch(args: argparse.Namespace) -> ExitCode:
    if args.command == "graph":
        return draw_graph(
            args.flow_file,
            graph_format=args.format,
            output=args.output,
            execution=args.execution,
        )
    connection = _connection(args)
    if args.command == "flows":
        return asyncio.run(_flows_command(args, connection))
    if args.command in _HISTORY_COMMANDS:
        return asyncio.run(_history_command(args, connection))
    path, flow_ref = _flow_source(args)
    if args.command == "run":
        return asyncio.run(
            run_flow(
                path,
                flow_input=args.input,
                connection=connection,
                as_json=args.json,
                flow_ref=flow_ref,
            )
        )
    return asyncio.run(
        validate_flow(
            path, flow_input=args.input, connection=connection, as_json=args.json, flow_ref=flow_ref
        )
    )


def _flow_source(args: argparse.Namespace) -> tuple[str, str | None]:
    """The FLOW_FILE and the `--flow` reference of `run`, `validate` or `start`: one of them
    (`main` has refused neither)."""
    if args.flow_file is not None and args.flow is not None:
        raise CliError("give a FLOW_FILE or --flow ID[@VERSION], not both")
    return args.flow_file or "", args.flow


async def _flows_command(args: argparse.Namespace, connection: Connection) -> ExitCode:
    """Runs one of the FlowRegistryService commands (`flowservice.cli.flows`)."""
    match args.flows_command:
        case "create":
            return await flows.create_flow(args.flow_file, connection=connection, as_json=args.json)
        case "get":
            return await flows.get_flow(args.reference, connection=connection, as_json=args.json)
        case "list":
            return await flows.list_flows(
                page_size=args.page_size,
                page_token=args.page_token,
                connection=connection,
                as_json=args.json,
            )
    return await flows.list_flow_versions(
        args.flow_id,
        page_size=args.page_size,
        page_token=args.page_token,
        connection=connection,
        as_json=args.json,
    )


_HISTORY_COMMANDS = ("start", "get", "list", "watch", "cancel")


async def _history_command(args: argparse.Namespace, connection: Connection) -> ExitCode:
    """Runs one of the ExecutionService commands (`flowservice.cli.history`)."""
    match args.command:
        case "start":
            path, flow_ref = _flow_source(args)
            return await history.start_execution(
                path,
                flow_input=args.input,
                connection=connection,
                as_json=args.json,
                flow_ref=flow_ref,
            )
        case "get":
            return await history.get_execution(
                args.execution_id, connection=connection, as_json=args.json
            )
        case "list":
            return await history.list_executions(
                flow_id=args.flow,
                status=args.status,
                page_size=args.page_size,
                page_token=args.page_token,
                connection=connection,
                as_json=args.json,
            )
        case "watch":
            return await history.watch_execution(
                args.execution_id, after=args.after, connection=connection, as_json=args.json
            )
    return await history.cancel_execution(
        args.execution_id, connection=connection, as_json=args.json
    )


def _flow_request_options() -> argparse.ArgumentParser:
    """The flow file and `--input` that `run`, `validate` and `start` all take."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "flow_file", metavar="FLOW_FILE", nargs="?", help="the flow (JSON or YAML)"
    )
    options.add_argument(
        "--flow",
        metavar="ID[@VERSION]",
        help="a flow of the server's registry instead of FLOW_FILE (default: its latest version)",
    )
    options.add_argument(
        "--input",
        metavar="JSON",
        help="the flow's input, a JSON object (or @FILE); replaces the file's own",
    )
    return options


def _add_history_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    server: argparse.ArgumentParser,
    flow_request: argparse.ArgumentParser,
) -> None:
    """`start`, `get`, `list`, `watch` and `cancel`: executions that outlive the call."""
    start = commands.add_parser(
        "start",
        parents=[server, flow_request],
        help="start a flow detached and print its execution id",
    )
    get = commands.add_parser("get", parents=[server], help="show one execution")
    watch = commands.add_parser(
        "watch", parents=[server], help="show an execution's events live, as run does"
    )
    watch.add_argument(
        "--after", type=int, default=0, metavar="SEQUENCE", help="only events after this one"
    )
    cancel = commands.add_parser("cancel", parents=[server], help="cancel a running execution")
    for command in (get, watch, cancel):
        command.add_argument("execution_id", metavar="EXECUTION_ID")
    listing = commands.add_parser("list", parents=[server], help="list executions, newest first")
    listing.add_argument("--flow", default="", metavar="FLOW_ID", help="only this flow's")
    listing.add_argument(
        "--status", default="", choices=history.STATUS_CHOICES, help="only those with it"
    )
    listing.add_argument("--page-size", type=int, default=20, metavar="N")
    listing.add_argument("--page-token", default="", metavar="TOKEN")
    for command in (start, get, watch, cancel, listing):
        command.add_argument("--json", action="store_true", help="print JSON")


def _add_flows_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    server: argparse.ArgumentParser,
) -> None:
    """`flows create|get|list|versions`: the server's registry of flows."""
    registry = commands.add_parser(
        "flows",
        help="store flows on the server and read them back (the registry)",
        description="Store flows in the server's registry, in immutable versions, and read\n"
        "them back; `run --flow ID[@VERSION]` runs one.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = registry.add_subparsers(dest="flows_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", parents=[server], help="store a flow file as a new version under its id"
    )
    create.add_argument("flow_file", metavar="FLOW_FILE", help="the flow (JSON or YAML)")
    get = actions.add_parser("get", parents=[server], help="show a version (default: the latest)")
    get.add_argument("reference", metavar="ID[@VERSION]")
    listing = actions.add_parser("list", parents=[server], help="list the flows, by id")
    versions = actions.add_parser(
        "versions", parents=[server], help="list a flow's versions, newest first"
    )
    versions.add_argument("flow_id", metavar="ID")
    for command in (listing, versions):
        command.add_argument("--page-size", type=int, default=20, metavar="N")
        command.add_argument("--page-token", default="", metavar="TOKEN")
    for command in (create, get, listing, versions):
        command.add_argument("--json", action="store_true", help="print JSON")


def _connection(args: argparse.Namespace) -> Connection:
    """Where and how to call the server, from the options before and after the command."""
    return Connection(
        server=args.server,
        timeout=args.timeout,
        connect_timeout=args.connect_timeout,
        metadata=(*args.header, *getattr(args, _HEADERS_AFTER_COMMAND, ())),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowctl",
        description="Run, check and draw Flow Manager flows.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_server_options(parser, after_command=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server = argparse.ArgumentParser(add_help=False)
    _add_server_options(server, after_command=True)
    flow_request = _flow_request_options()

    run = commands.add_parser(
        "run",
        parents=[server, flow_request],
        help="run a flow and show it live",
        description="Run a flow on the server, showing each task as it starts and finishes,\n"
        "retries, the branch each condition took, and a summary.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--json", action="store_true", help="print the raw events, one JSON object per line"
    )

    validate = commands.add_parser(
        "validate",
        parents=[server, flow_request],
        help="check a flow without running it",
        description="Check a flow on the server without running it: errors and warnings,\n"
        "each with its field path. Exits 2 when the flow has errors.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("--json", action="store_true", help="print the ValidateResponse as JSON")

    _add_history_commands(commands, server, flow_request)
    _add_flows_commands(commands, server)

    graph = commands.add_parser(
        "graph",
        help="draw a flow (Mermaid, DOT, SVG, PNG)",
        description="Draw a flow's tasks and routes as Mermaid or Graphviz DOT text, or as an\n"
        "SVG or PNG image (these need Graphviz's `dot`). No server needed.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    graph.add_argument("flow_file", metavar="FLOW_FILE", help="the flow (JSON or YAML)")
    graph.add_argument(
        "--format",
        choices=GRAPH_FORMATS,
        help="what to write (default: from --output's suffix, else mermaid)",
    )
    graph.add_argument(
        "-o", "--output", metavar="FILE", help="where to write (default: standard output)"
    )
    graph.add_argument(
        "--execution",
        metavar="FILE",
        help="highlight the path of a run: an ExecuteResponse as JSON, "
        "or the output of `flowctl run --json`",
    )
    return parser


# `-H` given after the command: kept apart from those given before it, which
# argparse would otherwise drop (a subcommand's values replace the main one's).
_HEADERS_AFTER_COMMAND = "headers_after_command"


def _add_server_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options of the commands that call the server.

    They go both before the command (`flowctl --server X run f`) and after it
    (`flowctl run f --server X`); given after it, they win. Their defaults are
    set once, on the main parser: a subcommand's own default would overwrite
    a value given before the command.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "--server",
        default=default(os.environ.get(SERVER_VARIABLE) or DEFAULT_ADDRESS),
        metavar="ADDR",
        help=f"host:port of the Flow Manager ({SERVER_VARIABLE}; default "
        f"{os.environ.get(SERVER_VARIABLE) or DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=default(None),
        metavar="SECONDS",
        help="the call's deadline; the server stops the execution when it passes",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=default(5.0),
        metavar="SECONDS",
        help="how long to wait for the server's health check (default 5)",
    )
    parser.add_argument(
        "-H",
        "--header",
        type=_header,
        action="append",
        default=default([]),
        dest=_HEADERS_AFTER_COMMAND if after_command else "header",
        metavar="'KEY: VALUE'",
        help="metadata to send with the call; repeatable",
    )


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {value!r}")
    return seconds


def _header(value: str) -> tuple[str, str]:
    key, separator, text = value.partition(":")
    key = key.strip().lower()
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected 'KEY: VALUE', got {value!r}")
    return key, text.strip()
