"""Flow validation: every rule, reported with its field path and reason, all at once."""

from __future__ import annotations

import pytest

from flowservice.engine import Engine
from flowservice.engine._validation import validate
from flowservice.errors import InvalidFlowError, Violation
from flowservice.limits import Limits
from flowservice.models import Condition, Flow, Task
from flowservice.tasks import builtin_registry

TYPES = builtin_registry()
LIMITS = Limits(max_steps_ceiling=100)


def violations(flow: Flow) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in validate(flow, TYPES, LIMITS).violations]


def two_tasks(**changes: object) -> Flow:
    base: dict[str, object] = {"start_task": "a", "tasks": (Task("a"), Task("b"))}
    base.update(changes)
    return Flow(**base)  # type: ignore[arg-type]


def test_a_valid_flow_has_no_violations() -> None:
    flow = two_tasks(conditions=(Condition("a", "success", "b", "end"),), max_steps=100)
    assert violations(flow) == []


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        pytest.param(
            Flow(start_task="a", tasks=()),
            [("flow.tasks", "NO_TASKS"), ("flow.start_task", "UNKNOWN_START_TASK")],
            id="no tasks",
        ),
        pytest.param(
            two_tasks(tasks=(Task("a"), Task(""))),
            [("flow.tasks[1].name", "MISSING_TASK_NAME")],
            id="empty task name",
        ),
        pytest.param(
            two_tasks(tasks=(Task("a"), Task("a"))),
            [("flow.tasks[1].name", "DUPLICATE_TASK_NAME")],
            id="duplicate task name",
        ),
        pytest.param(
            two_tasks(tasks=(Task("a"), Task("end"))),
            [("flow.tasks[1].name", "RESERVED_TASK_NAME")],
            id="task named end",
        ),
        pytest.param(
            two_tasks(tasks=(Task("a", type="teleport"), Task("b"))),
            [("flow.tasks[0].type", "UNKNOWN_TASK_TYPE")],
            id="unknown task type",
        ),
        pytest.param(
            two_tasks(start_task=""),
            [("flow.start_task", "MISSING_START_TASK")],
            id="missing start task",
        ),
        pytest.param(
            two_tasks(start_task="z"),
            [("flow.start_task", "UNKNOWN_START_TASK")],
            id="unknown start task",
        ),
        pytest.param(
            two_tasks(conditions=(Condition("", "success", "b"),)),
            [("flow.conditions[0].source_task", "MISSING_SOURCE_TASK")],
            id="missing source",
        ),
        pytest.param(
            two_tasks(conditions=(Condition("z", "success", "b"),)),
            [("flow.conditions[0].source_task", "UNKNOWN_SOURCE_TASK")],
            id="unknown source",
        ),
        pytest.param(
            two_tasks(conditions=(Condition("a", "success", "z", "y"),)),
            [
                ("flow.conditions[0].target_task_success", "UNKNOWN_TARGET_TASK"),
                ("flow.conditions[0].target_task_failure", "UNKNOWN_TARGET_TASK"),
            ],
            id="unknown targets",
        ),
        pytest.param(
            two_tasks(
                conditions=(Condition("a", "success", "b", "end"), Condition("a", "failure", "b")),
            ),
            [("flow.conditions[0].target_task_failure", "FAILURE_TARGET_NOT_LAST")],
            id="failure target on an early link of a chain",
        ),
        pytest.param(
            two_tasks(conditions=(Condition("a", "success", "b", expression="true"),)),
            [("flow.conditions[0]", "AMBIGUOUS_TEST")],
            id="outcome and expression",
        ),
        pytest.param(
            two_tasks(conditions=(Condition("a", "ok", "b"),)),
            [("flow.conditions[0].outcome", "INVALID_OUTCOME")],
            id="bad outcome",
        ),
        pytest.param(
            two_tasks(conditions=(Condition("a", "", "b"),)),
            [("flow.conditions[0].outcome", "INVALID_OUTCOME")],
            id="empty outcome",
        ),
        pytest.param(
            two_tasks(max_steps=-1),
            [("flow.max_steps", "INVALID_MAX_STEPS")],
            id="negative max_steps",
        ),
        pytest.param(
            two_tasks(max_steps=101),
            [("flow.max_steps", "MAX_STEPS_TOO_LARGE")],
            id="max_steps above ceiling",
        ),
    ],
)
def test_each_rule_names_the_field_and_reason(flow: Flow, expected: list[tuple[str, str]]) -> None:
    assert violations(flow) == expected


def test_every_problem_is_reported_at_once() -> None:
    flow = Flow(
        start_task="nope",
        tasks=(Task("a", type="teleport"), Task("a"), Task("end")),
        conditions=(Condition("ghost", "maybe", "nowhere"),),
    )

    assert violations(flow) == [
        ("flow.tasks[0].type", "UNKNOWN_TASK_TYPE"),
        ("flow.tasks[1].name", "DUPLICATE_TASK_NAME"),
        ("flow.tasks[2].name", "RESERVED_TASK_NAME"),
        ("flow.start_task", "UNKNOWN_START_TASK"),
        ("flow.conditions[0].source_task", "UNKNOWN_SOURCE_TASK"),
        ("flow.conditions[0].outcome", "INVALID_OUTCOME"),
        ("flow.conditions[0].target_task_success", "UNKNOWN_TARGET_TASK"),
    ]


def test_unknown_type_lists_the_registered_types() -> None:
    (violation,) = validate(
        Flow(start_task="a", tasks=(Task("a", type="teleport"),)), TYPES, LIMITS
    ).violations
    assert "fetch_data, mock, process_data, store_data" in violation.description


def test_empty_and_end_targets_are_valid_ways_to_stop() -> None:
    flow = two_tasks(conditions=(Condition("a", "success", "", "end"),))
    assert violations(flow) == []


async def test_the_engine_refuses_an_invalid_flow_before_any_task_runs() -> None:
    registry = builtin_registry()
    ran: list[str] = []

    async def record(ctx: object) -> None:
        ran.append("ran")

    registry.register("record", record)
    flow = Flow(start_task="a", tasks=(Task("a", type="record"), Task("a")))

    with pytest.raises(InvalidFlowError) as raised:
        Engine(registry).run(flow)

    assert raised.value.violations == (
        Violation(
            "flow.tasks[1].name",
            "task name 'a' is already used by flow.tasks[0]",
            "DUPLICATE_TASK_NAME",
        ),
    )
    assert ran == []
