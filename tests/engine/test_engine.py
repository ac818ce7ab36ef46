"""The engine, driven directly: no gRPC anywhere."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime

import pytest

from flowservice.engine import Engine
from flowservice.events import (
    ConditionEvaluated,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    TaskFinished,
    TaskStarted,
)
from flowservice.limits import Limits
from flowservice.models import (
    Branch,
    Condition,
    ExecutionStatus,
    Flow,
    Task,
    TaskOutcome,
)
from flowservice.tasks import FakeTask, TaskContext, TaskFailure, TaskRegistry, builtin_registry

SEED = Flow(
    id="flow123",
    name="Data processing flow",
    start_task="task1",
    tasks=(
        Task("task1", description="Fetch data"),
        Task("task2", description="Process data"),
        Task("task3", description="Store data"),
    ),
    conditions=(
        Condition("task1", "success", "task2", "end", name="condition_task1"),
        Condition("task2", "success", "task3", "end", name="condition_task2"),
    ),
)


def _fail(ctx: TaskContext) -> None:
    raise TaskFailure(str(ctx.params["error"]))


def failing(name: str, error: str = "boom") -> Task:
    """A task that fails with `error` (a fake: the test says what it does)."""
    return Task(name, type="fails", params={"error": error})


def registry_with(**fakes: FakeTask) -> TaskRegistry:
    """The built-in tasks, a task type `fails`, and the test's own fakes."""
    registry = builtin_registry()
    registry.register("fails", FakeTask(_fail))
    for type_name, fake in fakes.items():
        registry.register(type_name, fake)
    return registry


async def collect(engine: Engine, flow: Flow) -> list[Event]:
    return [event async for event in engine.run(flow)]


@pytest.fixture
def engine() -> Engine:
    return Engine(registry_with())


async def test_seed_flow_completes_with_every_task_in_order(engine: Engine) -> None:
    summary = await engine.execute(SEED)

    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.executed_tasks == ("task1", "task2", "task3")
    assert summary.failed_task == ""
    assert summary.flow_id == "flow123"
    assert [r.step for r in summary.task_results] == [1, 2, 3]
    assert all(r.outcome is TaskOutcome.SUCCESS for r in summary.task_results)


async def test_events_come_in_order_with_consecutive_sequence_numbers(engine: Engine) -> None:
    events = await collect(engine, SEED)

    kinds = [type(event) for event in events]
    assert kinds == [
        ExecutionStarted,
        TaskStarted,
        TaskFinished,
        ConditionEvaluated,
        TaskStarted,
        TaskFinished,
        ConditionEvaluated,
        TaskStarted,
        TaskFinished,
        ExecutionFinished,
    ]
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert len({event.execution_id for event in events}) == 1
    assert all(isinstance(event.time, datetime) and event.time.tzinfo for event in events)
    first_condition = events[3]
    assert isinstance(first_condition, ConditionEvaluated)
    decision = first_condition.decision
    assert decision.condition == "condition_task1"
    assert decision.branch is Branch.SUCCESS
    assert decision.actual_outcome is TaskOutcome.SUCCESS
    assert decision.next_task == "task2"


async def test_seed_failure_case_stops_the_flow_as_failed(engine: Engine) -> None:
    flow = Flow(
        id="flow123",
        start_task="task1",
        tasks=(Task("task1"), failing("task2", "processing broke"), Task("task3")),
        conditions=SEED.conditions,
    )

    summary = await engine.execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert summary.executed_tasks == ("task1", "task2")
    assert summary.failed_task == "task2"
    assert "processing broke" in summary.error
    assert summary.task_results[1].error == "processing broke"


async def test_failure_routed_to_a_recovery_task_is_handled(engine: Engine) -> None:
    flow = Flow(
        start_task="charge",
        tasks=(failing("charge"), Task("refund"), Task("notify")),
        conditions=(Condition("charge", "success", "notify", "refund"),),
    )

    summary = await engine.execute(flow)

    # refund has no condition and succeeds, so the next task in list order runs.
    assert summary.executed_tasks == ("charge", "refund", "notify")
    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.failed_task == ""


async def test_condition_on_failure_outcome_matches_a_failed_task(engine: Engine) -> None:
    flow = Flow(
        start_task="a",
        tasks=(failing("a"), Task("b"), Task("c")),
        conditions=(Condition("a", "failure", "c", "b"),),
    )
    events = await collect(engine, flow)

    decision = next(e for e in events if isinstance(e, ConditionEvaluated)).decision
    assert decision.expected_outcome == "failure"
    assert decision.actual_outcome is TaskOutcome.FAILURE
    assert decision.branch is Branch.SUCCESS
    assert decision.next_task == "c"
    finished = events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.summary.executed_tasks == ("a", "c")
    assert finished.summary.status is ExecutionStatus.COMPLETED


async def test_failure_routed_to_end_is_a_failed_flow(engine: Engine) -> None:
    flow = Flow(
        start_task="a",
        tasks=(failing("a"), Task("b")),
        conditions=(Condition("a", "success", "b", ""),),
    )
    events = await collect(engine, flow)

    decision = next(e for e in events if isinstance(e, ConditionEvaluated)).decision
    assert decision.next_task == "end"
    assert decision.branch is Branch.FAILURE
    summary = await engine.execute(flow)
    assert summary.status is ExecutionStatus.FAILED
    assert summary.failed_task == "a"


async def test_success_routed_to_end_stops_a_completed_flow(engine: Engine) -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("b")),
        conditions=(Condition("a", "success", "end", "b"),),
    )

    summary = await engine.execute(flow)

    assert summary.executed_tasks == ("a",)
    assert summary.status is ExecutionStatus.COMPLETED


async def test_a_plain_list_of_tasks_is_a_pipeline(engine: Engine) -> None:
    flow = Flow(start_task="a", tasks=(Task("a"), Task("b"), Task("c")))

    summary = await engine.execute(flow)

    assert summary.executed_tasks == ("a", "b", "c")
    assert summary.status is ExecutionStatus.COMPLETED


async def test_a_pipeline_stops_at_its_first_failure(engine: Engine) -> None:
    flow = Flow(start_task="a", tasks=(Task("a"), failing("b"), Task("c")))

    summary = await engine.execute(flow)

    assert summary.executed_tasks == ("a", "b")
    assert summary.status is ExecutionStatus.FAILED
    assert summary.failed_task == "b"


async def test_execution_starts_at_start_task_not_the_first_listed(engine: Engine) -> None:
    flow = Flow(start_task="b", tasks=(Task("a"), Task("b"), Task("c")))

    summary = await engine.execute(flow)

    assert summary.executed_tasks == ("b", "c")


async def test_a_loop_is_stopped_by_the_flows_step_limit(engine: Engine) -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("b")),
        conditions=(Condition("a", "success", "b", "end"), Condition("b", "success", "a", "end")),
        max_steps=7,
    )

    summary = await engine.execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert summary.executed_tasks == ("a", "b", "a", "b", "a", "b", "a")
    assert summary.error_type == "StepLimitReached"
    assert summary.failed_task == ""


async def test_the_servers_default_step_limit_applies_when_the_flow_sets_none() -> None:
    engine = Engine(builtin_registry(), limits=Limits(default_max_steps=5))
    flow = Flow(
        start_task="a", tasks=(Task("a"),), conditions=(Condition("a", "success", "a", "end"),)
    )

    summary = await engine.execute(flow)

    assert len(summary.executed_tasks) == 5
    assert summary.status is ExecutionStatus.FAILED


async def test_a_bounded_loop_repeats_tasks_and_lists_every_run() -> None:
    def flaky(ctx: TaskContext) -> dict[str, int]:
        if len(fake.calls) < 3:
            raise TaskFailure(f"attempt {len(fake.calls)} failed")
        return {"attempts": len(fake.calls)}

    fake = FakeTask(flaky)
    registry = registry_with(flaky=fake)
    flow = Flow(
        start_task="try",
        tasks=(Task("try", type="flaky"), Task("done")),
        conditions=(Condition("try", "success", "done", "try"),),
    )

    summary = await Engine(registry).execute(flow)

    assert summary.executed_tasks == ("try", "try", "try", "done")
    assert summary.status is ExecutionStatus.COMPLETED
    assert [r.outcome for r in summary.task_results[:3]] == [
        TaskOutcome.FAILURE,
        TaskOutcome.FAILURE,
        TaskOutcome.SUCCESS,
    ]


async def test_an_exception_inside_a_task_is_that_tasks_failure() -> None:
    def broken(ctx: TaskContext) -> None:
        raise ZeroDivisionError("division by zero")

    registry = registry_with(broken=FakeTask(broken))
    flow = Flow(start_task="a", tasks=(Task("a", type="broken"), Task("b")))

    summary = await Engine(registry).execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert summary.failed_task == "a"
    assert summary.error_type == "ZeroDivisionError"
    assert summary.task_results[0].error_type == "ZeroDivisionError"
    assert summary.task_results[0].error == "ZeroDivisionError: division by zero"


async def test_a_task_output_that_is_not_json_like_fails_the_task() -> None:
    registry = registry_with(bad_output=FakeTask(lambda ctx: {"ids": {1, 2}}))
    flow = Flow(start_task="a", tasks=(Task("a", type="bad_output"),))

    summary = await Engine(registry).execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert summary.task_results[0].error_type == "InvalidOutput"
    assert "output.ids" in summary.task_results[0].error
    assert "set" in summary.task_results[0].error


async def test_a_sync_task_runs_in_a_thread_and_never_blocks_the_loop() -> None:
    registry = builtin_registry()
    released = threading.Event()

    def blocking(ctx: TaskContext) -> dict[str, bool]:
        # Waits for a coroutine on the event loop: if this ran on the loop, it
        # would wait forever instead.
        return {"released": released.wait(timeout=10)}

    registry.register("blocking", blocking)
    flow = Flow(start_task="a", tasks=(Task("a", type="blocking"),))

    async def release_soon() -> None:
        await asyncio.sleep(0.01)
        released.set()

    summary, _ = await asyncio.gather(Engine(registry).execute(flow), release_soon())

    assert summary.task_results[0].output == {"released": True}


async def test_outputs_flow_from_task_to_task_through_the_builtin_pipeline(
    engine: Engine,
) -> None:
    flow = Flow(
        start_task="fetch",
        tasks=(
            Task("fetch", type="fetch_data", params={"count": 2}),
            Task("process", type="process_data"),
            Task("store", type="store_data"),
        ),
    )

    summary = await engine.execute(flow)

    fetch, process, store = (r.output for r in summary.task_results)
    assert fetch["records"] == [{"id": 1, "value": 10}, {"id": 2, "value": 20}]
    assert process["records"] == [{"id": 1, "value": 20}, {"id": 2, "value": 40}]
    assert process["total"] == 60
    assert store["stored"] == 2


async def test_process_data_without_records_fails_with_a_reason(engine: Engine) -> None:
    flow = Flow(start_task="process", tasks=(Task("process", type="process_data"),))

    summary = await engine.execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert "no records" in summary.task_results[0].error


async def test_mock_task_returns_its_output_param(engine: Engine) -> None:
    flow = Flow(start_task="a", tasks=(Task("a", params={"output": {"rows": 3}}),))

    summary = await engine.execute(flow)

    assert summary.task_results[0].output == {"rows": 3}


async def test_mock_task_rejects_a_negative_sleep(engine: Engine) -> None:
    flow = Flow(start_task="a", tasks=(Task("a", params={"sleep_ms": -5}),))

    summary = await engine.execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert "sleep_ms" in summary.task_results[0].error


async def test_tasks_see_the_input_their_params_and_earlier_results() -> None:
    seen: list[tuple[TaskContext, dict[str, object]]] = []

    def spy(ctx: TaskContext) -> None:
        seen.append((ctx, {name: r.output for name, r in ctx.results.items()}))

    registry = registry_with(spy=FakeTask(spy))
    flow = Flow(
        id="f",
        start_task="a",
        tasks=(Task("a", params={"output": {"x": 1}}), Task("b", type="spy", params={"k": "v"})),
    )

    summary = await Engine(registry).execute(flow, flow_input={"region": "eu"})

    ((ctx, outputs),) = seen
    assert outputs == {"a": {"x": 1.0}}  # outputs are JSON: numbers are doubles
    assert ctx.results["a"].outcome is TaskOutcome.SUCCESS
    assert ctx.params == {"k": "v"}
    assert ctx.input == {"region": "eu"}
    assert ctx.step == 2
    assert ctx.execution_id == summary.execution_id
    assert ctx.flow_id == "f"
