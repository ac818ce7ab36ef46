"""Reading flow files, `--input` values and execution records for flowctl.

A flow file is JSON or YAML and holds either a whole request, the body
grpcurl sends (`{"flow": {...}, "input": {...}, "stubs": {...}}`), or a bare
flow (`{"start_task": ..., "tasks": [...]}`). Every problem becomes a
`CliError` that names the file and says what is wrong and where: the line
and column of a syntax error, the field path of a value the API cannot take.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from flowmanager.v1 import flow_service_pb2
from flowservice.cli.errors import CliError

__all__ = ["load_execution", "load_request", "parse_input", "parse_reference"]

STDIN = "-"
"""The file name that means standard input."""

_REQUEST_KEYS = frozenset({"flow", "input", "stubs"})
_FLOW_KEYS = frozenset({"start_task", "startTask", "tasks"})
_EVENT_KEYS = frozenset(
    name
    for field in flow_service_pb2.ExecuteStreamResponse.DESCRIPTOR.oneofs_by_name["event"].fields
    for name in (field.name, field.json_name)
)
_PARSE_PREFIX = re.compile(r"^Failed to parse (\w+) field: ")
_AT_PATH = re.compile(r"\s+at \"?ExecuteRequest\.?([^\"\s]*?)\"?\.*$")
_UNKNOWN_FIELD = re.compile(r'^Message type "([\w.]+)" has no field named "([^"]+)"')
_REFERENCE = re.compile(r"(?P<id>[^@]+)(?:@(?P<version>latest|[1-9][0-9]{0,8}))?")


def load_request(path: str) -> flow_service_pb2.ExecuteRequest:
    """The request a flow file holds; a bare flow becomes a request without input."""
    data = _load_document(path)
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON/YAML object, found {_kind(data)}")
    if "flow" in data:
        body = data
    elif data.keys() & _FLOW_KEYS:
        body = {"flow": data}
    else:
        found = ", ".join(map(str, data)) or "none"
        raise CliError(
            f'{path}: expected a request {{"flow": {{...}}}} or a flow '
            f'{{"start_task": ..., "tasks": [...]}}; found keys: {found}'
        )
    _check_json_like(path, body, "")
    try:
        return json_format.ParseDict(body, flow_service_pb2.ExecuteRequest())
    except json_format.ParseError as exc:
        raise CliError(f"{path}: {_describe_parse_error(exc)}") from None


def parse_input(value: str) -> dict[str, Any]:
    """The flow input of `--input`: a JSON object, or `@FILE` for a JSON or YAML file."""
    if value.startswith("@"):
        where = value[1:]
        data = _load_document(where)
    else:
        where = "--input"
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CliError(
                f"--input: not valid JSON: {exc.msg} (column {exc.colno}); "
                "pass a JSON object, or @FILE"
            ) from None
    if not isinstance(data, dict):
        raise CliError(f"{where}: the input must be a JSON object, found {_kind(data)}")
    _check_json_like(where, data, "input")
    return data


def parse_reference(text: str) -> flow_service_pb2.FlowReference:
    """The flow of the registry `ID`, `ID@VERSION` or `ID@latest` names (`--flow`)."""
    match = _REFERENCE.fullmatch(text)
    if match is None:
        raise CliError(
            f"{text!r} is not a flow reference: expected ID, ID@VERSION (1, 2, ...) or ID@latest"
        )
    version = match["version"]
    return flow_service_pb2.FlowReference(
        flow_id=match["id"], version=0 if version in (None, "latest") else int(version)
    )


def load_execution(path: str) -> flow_service_pb2.ExecuteResponse:
    """The summary of a run recorded in `path`.

    Takes an `ExecuteResponse` (`Execute`'s output, from grpcurl or
    protobuf JSON), or the events of `ExecuteStream` (`flowctl run --json`,
    or grpcurl's pretty-printed stream): the `execution_finished` event's
    summary, or, when the stream was cut short, one rebuilt from the
    `task_finished` and `condition_evaluated` events.
    """
    text = _read(path)
    results: list[flow_service_pb2.TaskResult] = []
    try:
        for value in _json_values(text):
            if not isinstance(value, dict):
                raise CliError(f"{path}: expected JSON objects, found {_kind(value)}")
            if not value.keys() & _EVENT_KEYS:
                return json_format.ParseDict(
                    value, flow_service_pb2.ExecuteResponse(), ignore_unknown_fields=True
                )
            event = json_format.ParseDict(
                value, flow_service_pb2.ExecuteStreamResponse(), ignore_unknown_fields=True
            )
            match event.WhichOneof("event"):
                case "execution_finished":
                    return event.execution_finished.result
                case "task_finished":
                    results.append(event.task_finished.result)
                case "condition_evaluated" if results:
                    results[-1].decision.CopyFrom(event.condition_evaluated)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{path}: line {exc.lineno}, column {exc.colno}: {exc.msg} (not valid JSON)"
        ) from None
    except json_format.ParseError as exc:
        raise CliError(f"{path}: not an execution record: {_first_line(exc)}") from None
    if not results:
        raise CliError(
            f"{path}: no execution found: expected an ExecuteResponse or the events of "
            "`flowctl run --json`"
        )
    return flow_service_pb2.ExecuteResponse(
        executed_tasks=[result.task for result in results], task_results=results
    )


def _read(path: str) -> str:
    if path == STDIN:
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _load_document(path: str) -> Any:
    """The one JSON or YAML document in `path`; the suffix decides, else the first character."""
    text = _read(path)
    if not text.strip():
        raise CliError(f"{path}: the file is empty")
    suffix = Path(path).suffix.lower()
    as_json = suffix == ".json" or (
        suffix not in (".yaml", ".yml") and text.lstrip().startswith(("{", "["))
    )
    if as_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(
                f"{path}: line {exc.lineno}, column {exc.colno}: {exc.msg} (not valid JSON)"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "malformed"
        raise CliError(f"{path}: {where}{problem} (not valid YAML)") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML: {exc}") from None


def _json_values(text: str) -> Iterator[Any]:
    """Every JSON value in `text`: one document, JSON lines, or concatenated objects."""
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return
        value, position = decoder.raw_decode(text, position)
        yield value


def _check_json_like(source: str, value: Any, path: str) -> None:
    """Rejects what YAML can express but JSON cannot (dates, non-string keys, ...)."""
    match value:
        case dict():
            for key, item in value.items():
                if not isinstance(key, str):
                    hint = (
                        " (YAML reads on/off/yes/no as booleans)" if isinstance(key, bool) else ""
                    )
                    raise CliError(
                        f"{source}: key {key!r} at {path or 'the top level'} is not a string; "
                        f"quote it{hint}"
                    )
                _check_json_like(source, item, f"{path}.{key}" if path else key)
        case list():
            for index, item in enumerate(value):
                _check_json_like(source, item, f"{path}[{index}]")
        case str() | bool() | int() | float() | None:
            return
        case _:
            raise CliError(
                f"{source}: the value at {path} is a {type(value).__name__}, "
                "which JSON cannot hold; quote it to make it a string"
            )


def _describe_parse_error(exc: json_format.ParseError) -> str:
    """json_format's error as `field.path: problem`, without its nested prefixes."""
    message = _first_line(exc)
    fields: list[str] = []
    while match := _PARSE_PREFIX.match(message):
        fields.append(match.group(1))
        message = message[match.end() :]
    path = ".".join(fields)
    if at := _AT_PATH.search(message):
        path = at.group(1)
        message = message[: at.start()]
    message = message.rstrip(".")
    if unknown := _UNKNOWN_FIELD.match(message):
        message = _unknown_field(unknown.group(1), unknown.group(2))
    return f"{path}: {message}" if path else message


def _unknown_field(message_type: str, name: str) -> str:
    """Names the known fields, and the closest one, for a field the API does not have."""
    pool = flow_service_pb2.DESCRIPTOR.pool
    known = [field.name for field in pool.FindMessageTypeByName(message_type).fields]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field {name!r} (known fields: {', '.join(known)}){hint}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _kind(value: Any) -> str:
    match value:
        case list():
            return "a list"
        case str():
            return "a string"
        case None:
            return "nothing"
        case _:
            return f"a {type(value).__name__}"
