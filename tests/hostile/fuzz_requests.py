"""Hypothesis strategies for hostile FlowService requests: messages and raw bytes.

Two families, both ending as `FuzzCall`s (a method and the bytes sent):

- `message_calls`: well-formed protobuf messages a hostile or careless caller
  could send: the seed request and `examples/*.json` with random edits, or
  flows built from scratch, carrying random names and types, params with huge
  numbers, NaN and ±Infinity, deep nesting and long strings, random condition
  and CEL text, retry policies, durations out of range, any `max_steps`,
  stubs with unknown enum values, and hostile `input`.
- `raw_calls`: bytes that need not be a message at all: random bytes,
  serializations of the messages above with bytes flipped, cut, inserted or
  repeated, `Struct`s nested deeper than any parser allows (built by hand,
  so the client's own limits cannot get in the way), and fields whose length
  prefix lies.

Everything is bounded so that a request stays far below the server's 4 MiB
request limit; the point is what small requests can do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2
from hypothesis import strategies as st

from flowmanager.v1 import flow_pb2, flow_service_pb2

__all__ = [
    "EXECUTE",
    "EXECUTE_STREAM",
    "MESSAGE_REGRESSIONS",
    "METHODS",
    "RAW_REGRESSIONS",
    "VALIDATE",
    "FuzzCall",
    "message_calls",
    "raw_calls",
    "seed_requests",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED_REQUEST = Path("/work/shared/seed/example-request.json")
"""The seed request of the assignment, when this machine has it (examples/ has a copy)."""

_SERVICE = "/flowmanager.v1.FlowService/"
EXECUTE = _SERVICE + "Execute"
EXECUTE_STREAM = _SERVICE + "ExecuteStream"
VALIDATE = _SERVICE + "Validate"
METHODS = (EXECUTE, EXECUTE_STREAM, VALIDATE)
"""Every FlowService method, by its full path."""

_BUILTIN_TYPES = ("", "mock", "fetch_data", "process_data", "store_data")
_PARAM_NAMES = (
    "count",
    "sleep_ms",
    "fail",
    "fail_attempts",
    "error",
    "error_type",
    "output",
    "records",
    "from",
    "source",
    "destination",
)
# Snippets a caller might write, right or wrong; random text is added to them.
_EXPRESSIONS = (
    "result.outcome == 'success'",
    "result.output.n > 1",
    "input.flag",
    "size(tasks) > 0",
    "result.error.contains('x')",
    "1 / 0 == 1",
    "input.s + input.s",
    "[1, 2, 3].map(x, x * x).size() > 2",
    "[1, 2, 3].all(x, [1, 2, 3].all(y, x * y > 0))",
    "'a'.matches('(a+)+$')",
    "int('9223372036854775807') + 1 > 0",
    "double('nan') == double('nan')",
    "tasks.t0.output.records.filter(r, r.value > 10).size() != 0",
    "{'k': input}",
    "has(",
    ")))",
)
_HUGE_NUMBERS = (
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63,
    1e308,
    -1e308,
    3e6,
    1e9,
    -1,
    0.5,
    5e-324,
)


@dataclass(frozen=True, slots=True)
class FuzzCall:
    """One call to make: a FlowService method and the exact bytes of its request."""

    method: str
    """The method's full path, e.g. `/flowmanager.v1.FlowService/Execute`."""
    body: bytes
    """The serialized request (or bytes that only pretend to be one)."""

    def __repr__(self) -> str:  # Hypothesis prints it for a falsifying example
        return f"FuzzCall({self.method.rsplit('/', 1)[1]}, {len(self.body)} bytes, {self.body!r})"


def seed_requests() -> list[dict[str, Any]]:
    """The seed request and every example request, as the JSON a caller sends."""
    paths = sorted((REPO_ROOT / "examples").glob("*.json"))
    if SEED_REQUEST.exists():
        paths.insert(0, SEED_REQUEST)
    return [json.loads(path.read_text()) for path in paths]


# Text without surrogates (protobuf strings must be valid UTF-8).
_text = st.text(st.characters(codec="utf-8"), max_size=24)
_strings = st.one_of(
    _text,
    st.sampled_from(["", "end", "t0", "t1", " ", "\x00", "é", "\U0001f600", "null"]),
    st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "é", "\x00"]), st.integers(100, 5000)),
)
# NaN and ±Infinity in one number in twenty (see `_values` for why 13): a
# request has dozens of numbers, and each non-finite one alone decides the reply.
_numbers = st.integers(0, 19).flatmap(
    lambda n: (
        st.sampled_from([float("nan"), float("inf"), float("-inf")])
        if n == 13
        else st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(-(2**70), 2**70),
            st.sampled_from(_HUGE_NUMBERS),
        )
    )
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _strings)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_strings, inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _deep_value(draw: st.DrawFn) -> Any:
    """A list or object nested 50 to 150 levels deep (protobuf parsers stop at 100)."""
    value: Any = draw(_scalars)
    for _ in range(draw(st.integers(50, 150))):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


# One value in a hundred nests deep (an edit of the examples also does so):
# often enough to be tried, rarely enough that the parser's depth limit does
# not hide everything else a request carries. The test is `n == 63`, as
# Hypothesis favours 0 and would pick it far more often than one time in 100.
_values = st.integers(0, 99).flatmap(lambda n: _deep_value() if n == 63 else _json_values)


@st.composite
def _params(draw: st.DrawFn) -> dict[str, Any]:
    """Params for any task type: known names with hostile values, plus random keys."""
    names = draw(st.lists(st.sampled_from(_PARAM_NAMES), max_size=4, unique=True))
    params = {name: draw(_values) for name in names}
    params.update(draw(st.dictionaries(_strings, _values, max_size=2)))
    return params


def _set_struct(struct: struct_pb2.Struct, value: dict[str, Any]) -> None:
    struct.Clear()
    struct.update(value)


_durations = st.tuples(
    st.one_of(st.integers(0, 5), st.integers(-(2**63), 2**63 - 1), st.just(315_576_000_001)),
    st.one_of(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1)),
)
_int32 = st.one_of(st.integers(-3, 30), st.integers(-(2**31), 2**31 - 1))


def _fill_task(draw: st.DrawFn, task: flow_pb2.Task, names: list[str]) -> None:
    """Fills a task in place (copying a message nested past 100 levels would fail)."""
    task.name = draw(st.one_of(st.sampled_from(names), _strings))
    task.description = draw(_strings)
    task.type = draw(st.one_of(st.sampled_from(_BUILTIN_TYPES), _strings))
    _set_struct(task.params, draw(_params()))
    if draw(st.booleans()):
        task.timeout.seconds, task.timeout.nanos = draw(_durations)
    if draw(st.booleans()):
        _edit_retry(draw, task.retry)
    for key in draw(st.lists(st.sampled_from(_PARAM_NAMES), max_size=2, unique=True)):
        task.input_mapping[key] = draw(_expressions)


def _edit_retry(draw: st.DrawFn, retry: flow_pb2.RetryPolicy) -> None:
    retry.max_attempts = draw(_int32)
    retry.initial_interval.seconds, retry.initial_interval.nanos = draw(_durations)
    retry.backoff_coefficient = draw(st.floats(allow_nan=True, allow_infinity=True))
    retry.maximum_interval.seconds, retry.maximum_interval.nanos = draw(_durations)
    retry.jitter = draw(st.booleans())
    retry.non_retryable_errors.extend(draw(st.lists(_strings, max_size=3)))


_expressions = st.one_of(
    st.sampled_from(_EXPRESSIONS),
    _text,
    st.builds(lambda a, b: f"({a}) && ({b})", st.sampled_from(_EXPRESSIONS), _text),
    st.builds(lambda n: "(" * n + "1" + ")" * n, st.integers(10, 500)),
)


@st.composite
def _condition(draw: st.DrawFn, names: list[str]) -> flow_pb2.Condition:
    targets = st.one_of(st.sampled_from([*names, "end", ""]), _strings)
    condition = flow_pb2.Condition(
        name=draw(_strings),
        source_task=draw(targets),
        target_task_success=draw(targets),
        target_task_failure=draw(targets),
    )
    if draw(st.booleans()):
        condition.outcome = draw(st.one_of(st.sampled_from(["success", "failure"]), _strings))
    else:
        condition.expression = draw(_expressions)
    return condition


def _fill_flow(draw: st.DrawFn, flow: flow_pb2.Flow) -> None:
    """Builds a flow in place: names mostly consistent, everything else hostile."""
    names = [f"t{i}" for i in range(draw(st.integers(1, 5)))]
    flow.id = draw(_strings)
    flow.name = draw(_strings)
    flow.start_task = draw(st.one_of(st.sampled_from(names), _strings))
    flow.max_steps = draw(_int32)
    flow.output = draw(st.one_of(st.just(""), _expressions))
    for _ in names:
        _fill_task(draw, flow.tasks.add(), names)
    flow.conditions.extend(draw(st.lists(_condition(names), max_size=6)))
    if draw(st.booleans()):
        flow.timeout.seconds, flow.timeout.nanos = draw(_durations)


@st.composite
def _edited_example(draw: st.DrawFn) -> flow_service_pb2.ExecuteRequest:
    """The seed request or an example, with a few hostile edits."""
    body = draw(st.sampled_from(seed_requests()))
    request = json_format.ParseDict(body, flow_service_pb2.ExecuteRequest())
    flow = request.flow
    names = [task.name for task in flow.tasks] or ["t0"]
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(_EDITS))
        edit(draw, request, flow, names)
    return request


def _edit_params(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, _n: list[str]) -> None:
    if flow.tasks:
        task = flow.tasks[draw(st.integers(0, len(flow.tasks) - 1))]
        _set_struct(task.params, draw(_params()))


def _edit_type(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, _n: list[str]) -> None:
    if flow.tasks:
        task = flow.tasks[draw(st.integers(0, len(flow.tasks) - 1))]
        task.type = draw(st.one_of(st.sampled_from(_BUILTIN_TYPES), _strings))


def _edit_retry_of_task(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, _n: list[str]) -> None:
    if flow.tasks:
        _edit_retry(draw, flow.tasks[draw(st.integers(0, len(flow.tasks) - 1))].retry)


def _edit_limits(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, _n: list[str]) -> None:
    flow.max_steps = draw(_int32)
    flow.timeout.seconds, flow.timeout.nanos = draw(_durations)


def _add_condition(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, names: list[str]) -> None:
    flow.conditions.append(draw(_condition(names)))


def _add_task(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, names: list[str]) -> None:
    _fill_task(draw, flow.tasks.add(), names)


def _edit_names(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, _n: list[str]) -> None:
    flow.id, flow.name, flow.start_task = draw(_strings), draw(_strings), draw(_strings)


def _edit_input(draw: st.DrawFn, request: Any, _f: Any, _n: list[str]) -> None:
    _set_struct(request.input, draw(st.dictionaries(_strings, _values, max_size=4)))


def _edit_stubs(draw: st.DrawFn, request: Any, _f: Any, names: list[str]) -> None:
    stub = request.stubs[draw(st.one_of(st.sampled_from(names), _strings))]
    stub.outcome = draw(st.integers(-3, 5))
    stub.error = draw(_strings)
    _set_struct(stub.output, draw(st.dictionaries(_strings, _values, max_size=3)))


def _edit_builtin_params(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, _n: list[str]) -> None:
    """A valid flow but for one built-in task's params: huge counts, sleeps, odd types."""
    if flow.tasks:
        task = flow.tasks[draw(st.integers(0, len(flow.tasks) - 1))]
        task.type = draw(st.sampled_from(_BUILTIN_TYPES[1:]))
        _set_struct(task.params, {draw(st.sampled_from(_PARAM_NAMES)): draw(_scalars)})


def _edit_deep(draw: st.DrawFn, request: Any, _f: Any, _n: list[str]) -> None:
    _set_struct(request.input, {"deep": draw(_deep_value())})


def _edit_output(draw: st.DrawFn, _r: Any, flow: flow_pb2.Flow, _n: list[str]) -> None:
    flow.output = draw(_expressions)


_EDITS = (
    _edit_params,
    _edit_type,
    _edit_retry_of_task,
    _edit_limits,
    _add_condition,
    _add_task,
    _edit_names,
    _edit_input,
    _edit_stubs,
    _edit_output,
    _edit_deep,
    _edit_builtin_params,
    _edit_builtin_params,
)


@st.composite
def _execute_request(draw: st.DrawFn) -> flow_service_pb2.ExecuteRequest:
    if draw(st.booleans()):
        return draw(_edited_example())
    request = flow_service_pb2.ExecuteRequest()
    _fill_flow(draw, request.flow)
    if draw(st.booleans()):
        _edit_input(draw, request, request.flow, [])
    if draw(st.booleans()):
        _edit_stubs(draw, request, request.flow, [task.name for task in request.flow.tasks])
    return request


@st.composite
def message_calls(draw: st.DrawFn) -> FuzzCall:
    """A well-formed request message with hostile content, for a random method.

    The three request types share field numbers (`flow` 1; the two Execute
    ones also `input` 2 and `stubs` 3), so one ExecuteRequest serves all:
    its bytes as they are, or only its flow for Validate. Bytes, not a
    converted copy, because a message nested past 100 levels cannot be
    parsed again, and that is one of the requests worth sending.
    """
    method = draw(st.sampled_from(METHODS))
    request = draw(_execute_request())
    if method == VALIDATE:
        return FuzzCall(method, _length_delimited(1, request.flow.SerializeToString()))
    return FuzzCall(method, request.SerializeToString())


# Raw bytes ------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


_ZERO_VALUE = b"\x11" + bytes(8)
"""A `Value` with `number_value` 0.0, encoded."""


def _nested_lists(value: bytes, depth: int) -> bytes:
    """`value` wrapped in `depth` lists: Value.list_value (6) -> ListValue.values (1) -> ..."""
    for _ in range(depth):
        value = _length_delimited(6, _length_delimited(1, value))
    return value


def _struct_of(value: bytes) -> bytes:
    """A Struct `{"k": value}`, encoded (fields 1: key 1, value 2)."""
    return _length_delimited(1, _length_delimited(1, b"k") + _length_delimited(2, value))


@st.composite
def _deep_struct_bytes(draw: st.DrawFn) -> bytes:
    """An ExecuteRequest whose `input` (or a task's params) nests lists 90-300 deep.

    Written byte by byte, so no client library can refuse to build it.
    """
    value = _nested_lists(_ZERO_VALUE, draw(st.integers(90, 300)))
    struct = _struct_of(value)
    if draw(st.booleans()):
        return _length_delimited(2, struct)  # ExecuteRequest.input
    task = _length_delimited(1, b"t0") + _length_delimited(4, struct)  # Task.params
    flow = _length_delimited(3, b"t0") + _length_delimited(4, task)
    return _length_delimited(1, flow)


@st.composite
def _lying_length(draw: st.DrawFn) -> bytes:
    """A field whose length prefix promises more (or other) bytes than follow."""
    field = draw(st.integers(1, 20))
    wire_type = draw(st.integers(0, 7))
    length = draw(st.one_of(st.integers(0, 64), st.integers(2**20, 2**64 - 1)))
    tail = draw(st.binary(max_size=32))
    return _varint(field << 3 | wire_type) + _varint(length) + tail


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid serialization with a few bytes flipped, cut, inserted or repeated."""
    data = bytearray(draw(message_calls()).body)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data.extend(draw(st.binary(min_size=1, max_size=8)))
            continue
        at = draw(st.integers(0, len(data) - 1))
        match draw(st.sampled_from(["flip", "set", "cut", "insert", "repeat", "truncate"])):
            case "flip":
                data[at] ^= 1 << draw(st.integers(0, 7))
            case "set":
                data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12]))
            case "cut":
                del data[at : at + draw(st.integers(1, 16))]
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            case "repeat":
                data[at:at] = data[at : at + draw(st.integers(1, 64))]
            case "truncate":
                del data[at:]
    return bytes(data)


@st.composite
def raw_calls(draw: st.DrawFn) -> FuzzCall:
    """Bytes that may or may not decode as a request, for a random method."""
    body = draw(
        st.one_of(
            st.binary(max_size=256),
            _mutated(),
            _deep_struct_bytes(),
            _lying_length(),
            st.builds(bytes.__add__, _mutated(), _mutated()),
        )
    )
    return FuzzCall(draw(st.sampled_from(METHODS)), body)


# Regressions -------------------------------------------------------------------
# Requests that once got a bad reply, tried first in every run (as Hypothesis
# `@example`s): issue 9's defects and what this fuzz found besides.


def _one_task_request(**task: Any) -> flow_service_pb2.ExecuteRequest:
    body = {"flow": {"id": "r", "start_task": "a", "tasks": [{"name": "a", **task}]}}
    return json_format.ParseDict(body, flow_service_pb2.ExecuteRequest())


def _with_task_timeout(seconds: int) -> bytes:
    request = _one_task_request()
    request.flow.tasks[0].timeout.seconds = seconds
    return request.SerializeToString()


def _with_nan_param() -> bytes:
    """A ValidateRequest (the flow only) whose task has a NaN param."""
    request = _one_task_request()
    request.flow.tasks[0].params.update({"count": float("nan")})
    return _length_delimited(1, request.flow.SerializeToString())


MESSAGE_REGRESSIONS = (
    # Issue 9 defect 3: NaN in params was INTERNAL ("Fail to serialize NaN").
    FuzzCall(VALIDATE, _with_nan_param()),
    # Found by this fuzz: a Duration past timedelta's range was INTERNAL (OverflowError).
    FuzzCall(EXECUTE, _with_task_timeout(2**63 - 1)),
    # Defect 1: ~100 bytes that made the server allocate until the OOM killer (last:
    # where it still does, it takes seconds under RLIMIT_AS).
    FuzzCall(
        EXECUTE,
        _one_task_request(type="fetch_data", params={"count": 2147483647}).SerializeToString(),
    ),
)
"""Well-formed requests that got a bad reply once."""

RAW_REGRESSIONS = (
    # Defect 2: undecodable bytes were UNKNOWN "Unexpected <class '...DecodeError'>".
    FuzzCall(EXECUTE, b"\xff"),
    FuzzCall(VALIDATE, b"\x00"),
    # Defect 2: a Struct nested 101 levels deep, the same.
    FuzzCall(EXECUTE_STREAM, _length_delimited(2, _struct_of(_nested_lists(_ZERO_VALUE, 101)))),
)
"""Bytes that got a bad reply once."""
