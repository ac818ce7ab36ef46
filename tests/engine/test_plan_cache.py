"""The cache of compiled plans: a flow sent again by the same key is not compiled again."""

from __future__ import annotations

import dataclasses

import pytest

from flowservice.engine import Engine
from flowservice.engine._plan import MAX_KEY_BYTES
from flowservice.errors import InvalidFlowError
from flowservice.events import ConditionEvaluated, ExecutionFinished
from flowservice.limits import Limits
from flowservice.models import Condition, Decision, ExecutionStatus, Flow, TaskOutcome, TaskStub
from tests.engine.test_engine import SEED, registry_with


async def finish(engine: Engine, flow: object, key: bytes | None, **options: object) -> list[str]:
    """Runs `flow` (a Flow or a function building one) to its end; the tasks that ran."""
    last = None
    async for event in engine.run(flow, flow_key=key, **options):  # type: ignore[arg-type]
        last = event
    assert isinstance(last, ExecutionFinished)
    assert last.summary.status is ExecutionStatus.COMPLETED
    return list(last.summary.executed_tasks)


async def test_a_flow_sent_again_by_its_key_is_built_only_once() -> None:
    engine = Engine(registry_with())
    built: list[Flow] = []

    def build() -> Flow:
        built.append(SEED)
        return SEED

    for _ in range(3):
        assert await finish(engine, build, b"seed") == ["task1", "task2", "task3"]

    assert len(built) == 1
    assert (engine.plans.hits, engine.plans.misses, len(engine.plans)) == (2, 1, 1)


async def test_a_different_key_is_compiled_on_its_own() -> None:
    engine = Engine(registry_with())
    two_tasks = dataclasses.replace(SEED, tasks=SEED.tasks[:2], conditions=SEED.conditions[:1])

    assert await finish(engine, SEED, b"three") == ["task1", "task2", "task3"]
    assert await finish(engine, two_tasks, b"two") == ["task1", "task2"]
    assert await finish(engine, SEED, b"three") == ["task1", "task2", "task3"]

    assert (engine.plans.hits, engine.plans.misses) == (1, 2)


async def test_runs_with_stubs_are_neither_served_nor_kept() -> None:
    engine = Engine(registry_with())
    stubs = {"task2": TaskStub(outcome=TaskOutcome.SUCCESS)}

    await finish(engine, SEED, b"seed", stubs=stubs)
    await finish(engine, SEED, b"seed", stubs=stubs)

    assert (engine.plans.hits, engine.plans.misses, len(engine.plans)) == (0, 0, 0)


async def test_a_stub_for_an_unknown_task_is_refused_even_when_the_flow_is_cached() -> None:
    engine = Engine(registry_with())
    await finish(engine, SEED, b"seed")

    with pytest.raises(InvalidFlowError) as raised:
        engine.run(SEED, flow_key=b"seed", stubs={"nope": TaskStub(outcome=TaskOutcome.SUCCESS)})

    assert [v.reason for v in raised.value.violations] == ["UNKNOWN_TASK"]


async def test_an_invalid_flow_is_refused_every_time_and_never_kept() -> None:
    engine = Engine(registry_with())
    invalid = dataclasses.replace(SEED, start_task="missing")

    for _ in range(2):
        with pytest.raises(InvalidFlowError) as raised:
            engine.run(invalid, flow_key=b"invalid")
        assert [v.reason for v in raised.value.violations] == ["UNKNOWN_START_TASK"]

    assert len(engine.plans) == 0


async def test_the_least_recently_used_plan_goes_first() -> None:
    engine = Engine(registry_with(), limits=Limits(max_cached_plans=2))
    for key in (b"a", b"b", b"a", b"c"):  # "a" used again, so "b" is the one to go
        await finish(engine, SEED, key)

    hits = engine.plans.hits
    await finish(engine, SEED, b"a")
    await finish(engine, SEED, b"c")
    assert engine.plans.hits == hits + 2
    await finish(engine, SEED, b"b")
    assert engine.plans.hits == hits + 2
    assert len(engine.plans) == 2


async def test_a_key_longer_than_the_bound_is_not_kept() -> None:
    engine = Engine(registry_with())

    await finish(engine, SEED, b"x" * (MAX_KEY_BYTES + 1))

    assert len(engine.plans) == 0


async def test_runs_of_a_cached_plan_share_the_decisions_of_outcome_tests() -> None:
    engine = Engine(registry_with())
    runs = [await _decisions(engine, SEED, b"seed") for _ in range(2)]

    assert runs[0] == runs[1]
    assert all(first is again for first, again in zip(*runs, strict=True))
    assert [decision.next_task for decision in runs[0]] == ["task2", "task3"]


async def test_a_decision_that_tests_an_expression_is_made_by_each_run() -> None:
    engine = Engine(registry_with())
    tested = dataclasses.replace(
        SEED,
        conditions=(
            Condition("task1", target_task_success="task2", expression="input.go"),
            *SEED.conditions[1:],
        ),
    )
    go = await _decisions(engine, tested, b"t", {"go": True})
    stop = await _decisions(engine, tested, b"t", {"go": False})

    assert [decision.next_task for decision in go] == ["task2", "task3"]
    assert [decision.next_task for decision in stop] == ["end"]


async def _decisions(
    engine: Engine, flow: Flow, key: bytes, flow_input: dict[str, object] | None = None
) -> list[Decision]:
    """The decisions of a run of `flow` kept by `key`, in order."""
    return [
        event.decision
        async for event in engine.run(flow, flow_key=key, flow_input=flow_input)
        if isinstance(event, ConditionEvaluated)
    ]
