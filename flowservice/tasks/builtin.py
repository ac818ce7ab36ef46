"""The task types every server has: `mock`, and the seed's example pipeline.

`fetch_data`, `process_data` and `store_data` pass deterministic mock data
from one to the next through their outputs, so the seed's example pipeline
shows data moving without touching anything outside the process.

Params come from callers, so every one is checked (kind, range, length,
with the bounds below) before a task does any work; a bad one fails the
task with `error_type` `InvalidParams` and a message that names the param
but never echoes its value. No task handles more than `MAX_RECORDS`
records, so none holds the event loop for long.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from flowservice.expressions import MAX_LIST_ITEMS
from flowservice.tasks.base import TaskContext, TaskFailure, TaskOutput
from flowservice.tasks.registry import TaskRegistry

__all__ = [
    "INVALID_PARAMS",
    "MAX_FAIL_ATTEMPTS",
    "MAX_NAME_LENGTH",
    "MAX_RECORDS",
    "MAX_SLEEP_MS",
    "MAX_TEXT_LENGTH",
    "builtin_registry",
    "fetch_data",
    "mock",
    "process_data",
    "store_data",
]

INVALID_PARAMS = "InvalidParams"
"""The `error_type` of a built-in task given params it cannot use.

Every param is checked before the task does any work. The check is
deterministic, so a retry fails the same way: retrying cannot help, and a
flow that retries these tasks should list it in `retry.non_retryable_errors`."""

MAX_RECORDS = MAX_LIST_ITEMS
"""fetch_data's largest `count`, and the most records process_data and store_data
take: 1,000, as many as an expression using `map` or `filter` may read (so
`tasks.fetch.output.records.filter(...)` works for any count), and far within
the default `max_output_bytes` (31 bytes a record as compact JSON). Checked
before any list is built."""
MAX_SLEEP_MS = 3_600_000
"""mock's largest `sleep_ms` (one hour; an execution's time limit cuts it shorter)."""
MAX_FAIL_ATTEMPTS = 10_000
"""mock's largest `fail_attempts` (above the largest `retry.max_attempts` anyone needs)."""
MAX_TEXT_LENGTH = 1_024
"""Characters in `error`, `source` and `destination`."""
MAX_NAME_LENGTH = 128
"""Characters in `error_type` and `from` (the default `max_name_length`)."""


async def mock(ctx: TaskContext) -> TaskOutput:
    """Behaves as its params say: `sleep_ms` first, then `fail` with `error`, or return `output`.

    `error_type` sets the failure's type (default `TaskFailure`), and
    `fail_attempts` (a number n) fails only the first n attempts of a run, so
    retries can be tried out without writing code.

    With no params it succeeds at once with no output.
    """
    params = ctx.params
    if not params:  # the common case, which has nothing to check (a tenth of the time)
        return None
    sleep_ms = _whole_number(params, "sleep_ms", 0, MAX_SLEEP_MS)
    fail_attempts = _whole_number(params, "fail_attempts", 0, MAX_FAIL_ATTEMPTS)
    fail = params.get("fail", False)
    if not isinstance(fail, bool):
        raise _invalid(f"params.fail must be true or false, got {_kind(fail)}")
    error = _text(params, "error", "", MAX_TEXT_LENGTH)
    error_type = _text(params, "error_type", "", MAX_NAME_LENGTH)
    output = params.get("output", {})
    if not isinstance(output, Mapping):
        raise _invalid(f"params.output must be an object, got {_kind(output)}")
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000)
    if fail or ctx.attempt <= fail_attempts:
        raise TaskFailure(
            error or f"task {ctx.task.name!r} failed (mock)",
            error_type=error_type or "TaskFailure",
        )
    return output


async def fetch_data(ctx: TaskContext) -> TaskOutput:
    """Produces `count` (default 3) deterministic records: ids 1..count, value = id * 10."""
    count = _whole_number(ctx.params, "count", 3, MAX_RECORDS)
    source = _text(ctx.params, "source", "mock://records", MAX_TEXT_LENGTH)
    records = [{"id": i, "value": i * 10} for i in range(1, count + 1)]
    return {"records": records, "source": source}


async def process_data(ctx: TaskContext) -> TaskOutput:
    """Doubles each record's value and totals them; fails when there are no records.

    Reads `params.records` when given (an input mapping can supply them), else
    the records of the task named by `params.from`, or else of the most recent
    earlier task whose output has records.
    """
    records = _input_records(ctx)
    processed = [{**record, "value": _doubled(record.get("value"))} for record in records]
    total = math.fsum(record["value"] for record in processed)
    if not math.isfinite(total):
        raise _invalid("the records' values are too large to total")
    return {"records": processed, "count": len(processed), "total": total}


async def store_data(ctx: TaskContext) -> TaskOutput:
    """Pretends to store the records of an earlier task and reports how many."""
    destination = _text(ctx.params, "destination", "memory://store", MAX_TEXT_LENGTH)
    records = _input_records(ctx)
    return {"stored": len(records), "destination": destination}


def _input_records(ctx: TaskContext) -> list[Mapping[str, Any]]:
    """The records to work on, checked before any is touched (see `process_data`)."""
    records = ctx.params.get("records")
    if records is not None:  # given directly, e.g. by an input mapping
        if not isinstance(records, list):
            raise _invalid(f"params.records must be a list, got {_kind(records)}")
        return _checked_records(records, "params.records")
    source = _text(ctx.params, "from", "", MAX_NAME_LENGTH)
    if "from" in ctx.params:
        result = ctx.results.get(source)
        if result is None:
            raise _invalid(f"params.from names {source!r}, which has not run")
        candidates = [(source, result.output)]
    else:
        candidates = [(name, result.output) for name, result in list(ctx.results.items())[::-1]]
    for name, output in candidates:
        found = output.get("records")
        if isinstance(found, list) and found:
            return _checked_records(found, f"the records of task {name!r}")
    raise TaskFailure(f"task {ctx.task.name!r} found no records to work on")


def _checked_records(records: list[Any], where: str) -> list[Mapping[str, Any]]:
    if len(records) > MAX_RECORDS:
        raise _invalid(f"{where} holds {len(records)} records, above the limit of {MAX_RECORDS}")
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise _invalid(f"{where}[{index}] must be an object, got {_kind(record)}")
    return records


def _whole_number(params: Mapping[str, Any], name: str, default: int, maximum: int) -> int:
    """`params[name]`, a whole number from 0 to `maximum` (JSON numbers arrive as floats)."""
    value = params.get(name, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= maximum
        or value != int(value)
    ):
        raise _invalid(
            f"params.{name} must be a whole number from 0 to {maximum}, got {_shown(value)}"
        )
    return int(value)


def _text(params: Mapping[str, Any], name: str, default: str, max_length: int) -> str:
    """`params[name]`, a string of at most `max_length` characters."""
    value = params.get(name, default)
    if not isinstance(value, str):
        raise _invalid(f"params.{name} must be a string, got {_kind(value)}")
    if len(value) > max_length:
        raise _invalid(
            f"params.{name} is {len(value)} characters long, above the limit of {max_length}"
        )
    return value


def _doubled(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"a record's value must be a number, got {_shown(value)}")
    doubled = value * 2
    if not math.isfinite(doubled):
        raise _invalid(f"a record's value must be a finite number below 1e308, got {value!r}")
    return float(doubled)


def _invalid(message: str) -> TaskFailure:
    return TaskFailure(message, error_type=INVALID_PARAMS)


def _kind(value: Any) -> str:
    """A value's JSON kind, for messages (never the value: it may be huge)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _shown(value: Any) -> str:
    """A number as it was given; anything else by its kind."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return _kind(value)


def builtin_registry() -> TaskRegistry:
    """A new registry holding every built-in task type."""
    registry = TaskRegistry()
    registry.register("mock", mock)
    registry.register("fetch_data", fetch_data)
    registry.register("process_data", process_data)
    registry.register("store_data", store_data)
    return registry
