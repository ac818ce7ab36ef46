"""The hooks a task type may use: check_params, aclose, TaskFailure(retryable, retry_after)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest

from flowservice.engine import Engine
from flowservice.engine._retry import retry_delay
from flowservice.errors import InvalidFlowError, Violation
from flowservice.models import Flow, RetryPolicy, Task
from flowservice.tasks import TaskContext, TaskFailure, TaskRegistry

RETRY = RetryPolicy(
    max_attempts=4, initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=8)
)


class Checked:
    """A task type whose `size` param must be a small number, and which holds a resource."""

    def __init__(self) -> None:
        self.closed = False
        self.contexts: list[TaskContext] = []

    def check_params(self, params: Mapping[str, Any]) -> Iterator[Violation]:
        if not isinstance(params.get("size", 0), int) or params.get("size", 0) > 10:
            yield Violation("size", "size must be a number up to 10", "SIZE_TOO_LARGE")

    async def run(self, ctx: TaskContext) -> dict[str, Any]:
        self.contexts.append(ctx)
        failure = ctx.params.get("fail")
        if failure == "permanent":
            raise TaskFailure("no", error_type="Permanent", retryable=False)
        if failure == "later":
            raise TaskFailure("busy", error_type="Busy", retry_after=float(ctx.params["after"]))
        return {"size": ctx.params.get("size", 0)}

    async def aclose(self) -> None:
        self.closed = True


def flow(params: dict[str, Any], mapping: dict[str, str] | None = None) -> Flow:
    task = Task("t", "checked", params=params, retry=RETRY, input_mapping=mapping or {})
    return Flow(id="f", name="f", start_task="t", tasks=(task,))


@pytest.fixture
def checked() -> Checked:
    return Checked()


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def engine(checked: Checked, delays: list[float]) -> Engine:
    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    return Engine(TaskRegistry({"checked": checked}), sleep=sleep)


def test_check_params_reports_a_literal_param_with_its_path(engine: Engine) -> None:
    report = engine.validate(flow({"size": 99}))

    assert [(v.field, v.reason) for v in report.errors] == [
        ("flow.tasks[0].params.size", "SIZE_TOO_LARGE")
    ]


async def test_a_param_from_an_input_mapping_is_left_to_run_time(engine: Engine) -> None:
    summary = await engine.execute(flow({"size": 99}, {"size": "3"}))

    assert summary.task_results[0].output == {"size": 3}


async def test_run_refuses_what_validate_reports(engine: Engine) -> None:
    with pytest.raises(InvalidFlowError):
        await engine.execute(flow({"size": 99}))


async def test_a_failure_that_is_not_retryable_is_never_retried(
    engine: Engine, checked: Checked
) -> None:
    summary = await engine.execute(flow({"fail": "permanent"}))

    assert (summary.task_results[0].error_type, summary.task_results[0].attempts) == (
        "Permanent",
        1,
    )


async def test_retry_after_lengthens_the_wait_within_maximum_interval(
    engine: Engine, delays: list[float], checked: Checked
) -> None:
    summary = await engine.execute(flow({"fail": "later", "after": 3}))

    assert summary.task_results[0].attempts == 4
    assert delays == [3.0, 3.0, 4.0]  # backoff 1, 2, 4: at least 3 each time
    keys = {ctx.idempotency_key for ctx in checked.contexts}
    assert keys == {f"{summary.execution_id}/t/1"}
    assert all(ctx.deadline is not None for ctx in checked.contexts)


def test_retry_after_never_exceeds_maximum_interval() -> None:
    delay = retry_delay(RETRY, 1, random.Random(0), retry_after=3600)

    assert delay == timedelta(seconds=8)


async def test_aclose_closes_every_implementation(engine: Engine, checked: Checked) -> None:
    await engine.aclose()

    assert checked.closed
