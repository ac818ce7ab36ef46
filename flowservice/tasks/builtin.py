"""The task types every server has: `mock`, and the seed's example pipeline.

`fetch_data`, `process_data` and `store_data` pass deterministic mock data
from one to the next through their outputs, so the seed's example pipeline
shows data moving without touching anything outside the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from flowservice.tasks.base import TaskContext, TaskFailure, TaskOutput
from flowservice.tasks.registry import TaskRegistry

__all__ = ["builtin_registry", "fetch_data", "mock", "process_data", "store_data"]


async def mock(ctx: TaskContext) -> TaskOutput:
    """Behaves as its params say: `sleep_ms` first, then `fail` with `error`, or return `output`.

    `error_type` sets the failure's type (default `TaskFailure`), and
    `fail_attempts` (a number n) fails only the first n attempts of a run, so
    retries can be tried out without writing code.

    With no params it succeeds at once with no output.
    """
    params = ctx.params
    sleep_ms = params.get("sleep_ms", 0)
    if not _is_count(sleep_ms):
        raise TaskFailure(f"params.sleep_ms must be a non-negative number, got {sleep_ms!r}")
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000)
    fail_attempts = params.get("fail_attempts", 0)
    if not _is_count(fail_attempts):
        raise TaskFailure(
            f"params.fail_attempts must be a non-negative number, got {fail_attempts!r}"
        )
    if params.get("fail", False) is True or ctx.attempt <= fail_attempts:
        raise TaskFailure(
            str(params.get("error") or f"task {ctx.task.name!r} failed (mock)"),
            error_type=str(params.get("error_type") or "TaskFailure"),
        )
    output = params.get("output", {})
    if not isinstance(output, Mapping):
        raise TaskFailure(f"params.output must be an object, got {type(output).__name__}")
    return output


async def fetch_data(ctx: TaskContext) -> TaskOutput:
    """Produces `count` (default 3) deterministic records: ids 1..count, value = id * 10."""
    count = ctx.params.get("count", 3)
    if not _is_count(count):
        raise TaskFailure(f"params.count must be a non-negative number, got {count!r}")
    records = [{"id": i, "value": i * 10} for i in range(1, int(count) + 1)]
    return {"records": records, "source": str(ctx.params.get("source", "mock://records"))}


async def process_data(ctx: TaskContext) -> TaskOutput:
    """Doubles each record's value and totals them; fails when there are no records.

    Reads `params.records` when given (an input mapping can supply them), else
    the records of the task named by `params.from`, or else of the most recent
    earlier task whose output has records.
    """
    records = _input_records(ctx)
    processed = [{**record, "value": _number(record.get("value")) * 2} for record in records]
    return {
        "records": processed,
        "count": len(processed),
        "total": sum(record["value"] for record in processed),
    }


async def store_data(ctx: TaskContext) -> TaskOutput:
    """Pretends to store the records of an earlier task and reports how many."""
    records = _input_records(ctx)
    return {
        "stored": len(records),
        "destination": str(ctx.params.get("destination", "memory://store")),
    }


def _input_records(ctx: TaskContext) -> list[Mapping[str, Any]]:
    records = ctx.params.get("records")
    if isinstance(records, list):  # given directly, e.g. by an input mapping
        return [record for record in records if isinstance(record, Mapping)]
    source = ctx.params.get("from")
    if source is not None:
        result = ctx.results.get(str(source))
        if result is None:
            raise TaskFailure(f"params.from names {source!r}, which has not run")
        candidates = [result.output]
    else:
        candidates = [result.output for result in list(ctx.results.values())[::-1]]
    for output in candidates:
        records = output.get("records")
        if isinstance(records, list) and records:
            return [record for record in records if isinstance(record, Mapping)]
    raise TaskFailure(f"task {ctx.task.name!r} found no records to work on")


def _is_count(value: Any) -> bool:
    """Whether `value` is a non-negative number (JSON numbers arrive as floats)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskFailure(f"record value must be a number, got {value!r}")
    return value


def builtin_registry() -> TaskRegistry:
    """A new registry holding every built-in task type."""
    registry = TaskRegistry()
    registry.register("mock", mock)
    registry.register("fetch_data", fetch_data)
    registry.register("process_data", process_data)
    registry.register("store_data", store_data)
    return registry
