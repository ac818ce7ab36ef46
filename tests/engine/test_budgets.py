"""Bounds on what one execution may cost in total: output bytes, expression time, the loop."""

from __future__ import annotations

import asyncio

from flowservice.engine import Engine
from flowservice.limits import Limits
from flowservice.models import Condition, ExecutionStatus, Flow, Task, TaskOutcome
from flowservice.tasks import FakeTask, TaskContext, TaskRegistry

BIG = {"blob": "x" * 200_000}
"""About 200 KB as compact JSON."""


def self_loop(condition: Condition, max_steps: int, task_type: str = "fake") -> Flow:
    return Flow(
        start_task="a",
        tasks=(Task("a", type=task_type),),
        conditions=(condition,),
        max_steps=max_steps,
    )


async def test_outputs_past_max_results_bytes_fail_the_execution_at_once() -> None:
    registry = TaskRegistry({"fake": FakeTask(lambda ctx: BIG)})
    engine = Engine(registry, limits=Limits(max_results_bytes=1_000_000))

    summary = await engine.execute(self_loop(Condition("a", "success", "a", "end"), 1_000))

    assert summary.status is ExecutionStatus.FAILED
    assert summary.error_type == "ResultsTooLarge"
    assert summary.failed_task == "a"
    # Four outputs of 200 KB fit in 1 MB; the fifth does not and is dropped.
    assert len(summary.executed_tasks) == 5
    last = summary.task_results[-1]
    assert last.outcome is TaskOutcome.FAILURE
    assert last.error_type == "ResultsTooLarge"
    assert last.output == {}
    assert last.decision is None


async def test_the_default_results_limit_stops_a_200_kb_loop_long_before_its_step_limit() -> None:
    registry = TaskRegistry({"fake": FakeTask(lambda ctx: BIG)})

    summary = await Engine(registry).execute(
        self_loop(Condition("a", "success", "a", "end"), 1_000)
    )

    assert summary.error_type == "ResultsTooLarge"
    assert len(summary.executed_tasks) == Limits().max_results_bytes // 200_011 + 1


async def test_expression_time_is_bounded_per_execution_not_only_per_evaluation() -> None:
    registry = TaskRegistry({"fake": FakeTask()})
    engine = Engine(registry, limits=Limits(max_expression_seconds=0.05))
    costly = Condition(
        "a", target_task_success="a", expression="input.l.all(x, input.l.all(y, true))"
    )

    summary = await engine.execute(self_loop(costly, 10_000), flow_input={"l": list(range(99))})

    assert summary.status is ExecutionStatus.FAILED
    assert summary.error_type == "ExpressionBudgetSpent"
    assert 1 <= len(summary.executed_tasks) < 10_000


async def test_a_flow_of_tasks_that_never_suspend_still_lets_the_loop_serve_others() -> None:
    fake = FakeTask()
    engine = Engine(TaskRegistry({"fake": fake}))
    seen: list[int] = []  # how many task runs had happened each time the other coroutine ran

    async def other_caller() -> None:
        while True:
            seen.append(len(fake.calls))
            await asyncio.sleep(0)

    other = asyncio.create_task(other_caller())
    await asyncio.sleep(0)  # it runs once before the execution starts
    try:
        summary = await engine.execute(self_loop(Condition("a", "success", "a", "end"), 10_000))
    finally:
        other.cancel()

    assert summary.error_type == "StepLimitReached"
    assert any(0 < runs < 10_000 for runs in seen)


async def test_a_failed_task_records_the_error_type_of_the_flow() -> None:
    def fails(ctx: TaskContext) -> None:
        raise ValueError("no")

    summary = await Engine(TaskRegistry({"fake": FakeTask(fails)})).execute(
        Flow(start_task="a", tasks=(Task("a", type="fake"),))
    )

    assert summary.error_type == "ValueError"
    assert summary.failed_task == "a"
