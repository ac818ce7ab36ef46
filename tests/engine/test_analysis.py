"""Validate's warnings: parts of a valid flow that can never run or never end."""

from __future__ import annotations

from flowservice.engine import Engine
from flowservice.models import Condition, Flow, Task
from flowservice.tasks import builtin_registry


def warnings(flow: Flow) -> list[tuple[str, str]]:
    report = Engine(builtin_registry()).validate(flow)
    assert report.errors == ()
    return [(w.field, w.reason) for w in report.warnings]


def test_the_seed_flow_has_no_warnings() -> None:
    flow = Flow(
        start_task="task1",
        tasks=(Task("task1"), Task("task2"), Task("task3")),
        conditions=(
            Condition("task1", "success", "task2", "end"),
            Condition("task2", "success", "task3", "end"),
        ),
    )
    assert warnings(flow) == []


def test_a_task_no_path_reaches_is_reported() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("orphan"), Task("b")),
        conditions=(Condition("a", "success", "b", "end"),),
    )
    assert warnings(flow) == [("flow.tasks[1]", "UNREACHABLE_TASK")]


def test_a_loop_with_no_way_out_is_reported() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("b")),
        conditions=(
            Condition("a", "success", "b", "b"),
            Condition("b", "success", "a", "a"),
        ),
    )
    assert warnings(flow) == [
        ("flow.tasks[0]", "LOOP_WITHOUT_EXIT"),
        ("flow.tasks[1]", "LOOP_WITHOUT_EXIT"),
    ]


def test_a_loop_with_an_exit_is_fine() -> None:
    flow = Flow(
        start_task="poll",
        tasks=(Task("poll"), Task("done")),
        conditions=(
            Condition(
                "poll",
                expression="result.output.ready == true",
                target_task_success="done",
                target_task_failure="poll",
            ),
        ),
    )
    assert warnings(flow) == []


def test_conditions_that_can_never_apply_are_reported() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("unused"), Task("a"), Task("b"), Task("c")),
        conditions=(
            Condition("a", outcome="success", target_task_success="b"),
            Condition("a", outcome="success", target_task_success="c"),  # same test again
            Condition("a", outcome="failure", target_task_success="c"),
            Condition(
                "a", expression="input.x > 1", target_task_success="c"
            ),  # after both outcomes
            Condition("b", expression="1 > 2", target_task_success="c", target_task_failure="end"),
            Condition("unused", outcome="success", target_task_success="a"),
        ),
    )

    assert warnings(flow) == [
        ("flow.tasks[0]", "UNREACHABLE_TASK"),
        ("flow.conditions[1]", "CONDITION_NEVER_APPLIES"),
        ("flow.conditions[3]", "CONDITION_NEVER_APPLIES"),
        ("flow.conditions[4].expression", "CONDITION_NEVER_HOLDS"),
        ("flow.conditions[5]", "CONDITION_NEVER_APPLIES"),
    ]


def test_a_constant_true_link_shadows_the_rest_of_its_chain() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("b")),
        conditions=(
            Condition("a", expression="true", target_task_success="b"),
            Condition("a", expression="input.go", target_task_success="end"),
        ),
    )
    assert warnings(flow) == [("flow.conditions[1]", "CONDITION_NEVER_APPLIES")]


def test_an_invalid_flow_gets_errors_and_no_warnings() -> None:
    report = Engine(builtin_registry()).validate(Flow(start_task="x", tasks=(Task("a"), Task("o"))))
    assert [e.reason for e in report.errors] == ["UNKNOWN_START_TASK"]
    assert report.warnings == ()


def test_a_task_reached_only_through_a_shadowed_condition_is_unreachable() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("hidden"), Task("b")),
        conditions=(
            Condition("a", outcome="success", target_task_success="b"),
            Condition("a", outcome="failure", target_task_success="end"),
            Condition("a", expression="input.x", target_task_success="hidden"),
        ),
    )
    assert warnings(flow) == [
        ("flow.tasks[1]", "UNREACHABLE_TASK"),
        ("flow.conditions[2]", "CONDITION_NEVER_APPLIES"),
    ]


def test_an_exit_that_never_holds_is_no_way_out_of_a_loop() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("b")),
        conditions=(
            Condition("a", expression="false", target_task_success="end"),
            Condition("a", expression="true", target_task_success="b"),
            Condition("b", outcome="success", target_task_success="a", target_task_failure="a"),
        ),
    )
    assert warnings(flow) == [
        ("flow.tasks[0]", "LOOP_WITHOUT_EXIT"),
        ("flow.tasks[1]", "LOOP_WITHOUT_EXIT"),
        ("flow.conditions[0].expression", "CONDITION_NEVER_HOLDS"),
    ]
