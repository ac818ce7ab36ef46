"""Resuming an interrupted execution in the one engine loop: no gRPC, no store.

An execution is cut off (its iterator closed, as when its process dies)
after some events; a second engine resumes it from the results of the
task runs that finished, as the API layer does from the history.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from flowservice.engine import Engine, Resumption
from flowservice.events import (
    ConditionEvaluated,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    TaskFinished,
    TaskStarted,
)
from flowservice.models import Condition, ExecutionStatus, Flow, Task
from flowservice.tasks import FakeTask, TaskContext, TaskRegistry

# a -> b, then a condition on b's output: "big" goes to c, otherwise to d.
FLOW = Flow(
    id="f",
    name="resumable",
    start_task="a",
    tasks=(
        Task("a", type="count"),
        Task("b", type="count", input_mapping={"seen": "tasks.a.output.n"}),
        Task("c", type="count"),
        Task("d", type="count"),
    ),
    conditions=(
        Condition("a", "success", "b", "end"),
        Condition(
            "b",
            target_task_success="c",
            target_task_failure="d",
            expression="result.output.n > 1.0",
            name="big_enough",
        ),
        Condition("c", "success", "end", "end"),
    ),
    output="tasks.b.output",
)


def counting() -> tuple[TaskRegistry, list[TaskContext]]:
    """A registry whose `count` task returns how many runs it has seen; and those runs."""
    runs: list[TaskContext] = []

    def count(ctx: TaskContext) -> dict[str, float]:
        runs.append(ctx)
        return {"n": float(len(runs))}

    return TaskRegistry({"count": FakeTask(count)}), runs


async def cut_after(engine: Engine, flow: Flow, count: int) -> list[Event]:
    """The first `count` events of a run, which then ends as if its process died."""
    events: list[Event] = []
    run = engine.run(flow)
    async with contextlib.aclosing(run):
        async for event in run:
            events.append(event)
            if len(events) == count:
                break
    return events


def resumption(events: Sequence[Event]) -> Resumption:
    """What the API layer builds from the stored events."""
    started = events[0]
    assert isinstance(started, ExecutionStarted)
    return Resumption(
        execution_id=started.execution_id,
        started_at=started.time,
        last_sequence=events[-1].sequence,
        results=tuple(e.result for e in events if isinstance(e, TaskFinished)),
    )


async def resumed(flow: Flow, events: Sequence[Event]) -> tuple[list[Event], list[TaskContext]]:
    registry, runs = counting()
    engine = Engine(registry)
    return [e async for e in engine.run(flow, resume=resumption(events))], runs


async def test_finished_tasks_are_not_run_again_and_routing_continues() -> None:
    registry, first_runs = counting()
    # started; a started, finished, its condition; b started, finished, its condition: cut.
    before = await cut_after(Engine(registry), FLOW, 7)
    assert isinstance(before[-1], ConditionEvaluated)
    after, runs = await resumed(FLOW, before)

    assert [ctx.task.name for ctx in first_runs] == ["a", "b"]
    assert [ctx.task.name for ctx in runs] == ["c"]  # b's output n=2 > 1: on to c
    assert [e.sequence for e in after] == list(range(8, 8 + len(after)))
    assert not any(isinstance(e, ExecutionStarted) for e in after)
    finished = after[-1]
    assert isinstance(finished, ExecutionFinished)
    summary = finished.summary
    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.executed_tasks == ("a", "b", "c")
    assert summary.execution_id == before[0].execution_id
    assert summary.output == {"n": 2.0}  # b's output, from the history
    assert summary.started_at == before[0].time


async def test_the_interrupted_task_runs_again_with_the_same_idempotency_key() -> None:
    registry, first_runs = counting()
    before = await cut_after(Engine(registry), FLOW, 5)  # b started, not finished
    assert isinstance(before[-1], TaskStarted) and before[-1].task == "b"
    after, runs = await resumed(FLOW, before)

    assert [ctx.task.name for ctx in runs] == ["b", "d"]  # this b's n is 1: to d
    rerun = runs[0]
    assert (rerun.step, rerun.execution_id) == (2, before[0].execution_id)
    assert rerun.idempotency_key == f"{before[0].execution_id}/b/2"
    assert rerun.params == {"seen": 1.0}  # its input mapping read a's stored output
    assert [ctx.task.name for ctx in first_runs] == ["a"]
    started = [e for e in after if isinstance(e, TaskStarted)]
    assert [(e.task, e.step, e.sequence) for e in started] == [("b", 2, 6), ("d", 3, 9)]
    finished = after[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.summary.executed_tasks == ("a", "b", "d")


async def test_an_execution_cut_before_its_first_task_starts_from_the_start() -> None:
    registry, _ = counting()
    before = await cut_after(Engine(registry), FLOW, 1)
    after, runs = await resumed(FLOW, before)
    assert [ctx.task.name for ctx in runs] == ["a", "b", "c"]
    assert after[0].sequence == 2


async def test_an_execution_whose_last_task_ended_it_ends_without_running_anything() -> None:
    flow = Flow(id="f", name="", start_task="a", tasks=(Task("a", type="count"),))
    registry, _ = counting()
    before = await cut_after(Engine(registry), flow, 3)  # a finished; its end never recorded
    after, runs = await resumed(flow, before)
    assert runs == []
    assert len(after) == 1 and isinstance(after[0], ExecutionFinished)
    assert after[0].summary.status is ExecutionStatus.COMPLETED
    assert after[0].sequence == 4


async def test_the_time_limit_counts_from_the_first_start() -> None:
    flow = Flow(
        id="f",
        name="",
        start_task="a",
        tasks=(Task("a", type="count"),),
        timeout=timedelta(seconds=5),
    )
    registry, runs = counting()
    before = await cut_after(Engine(registry), flow, 1)
    long_ago = replace(resumption(before), started_at=before[0].time - timedelta(seconds=6))
    after = [e async for e in Engine(registry).run(flow, resume=long_ago)]
    finished = after[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.summary.status is ExecutionStatus.TIMED_OUT
    assert runs == []
