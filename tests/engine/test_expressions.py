"""Expression conditions, chains, input mappings, flow output and what-if stubs (no gRPC)."""

from __future__ import annotations

from typing import Any

import pytest

from flowservice.engine import Engine
from flowservice.engine._validation import validate
from flowservice.events import ConditionEvaluated, Event
from flowservice.expression_bounds import MAX_COPY_WEIGHT
from flowservice.expressions import (
    ITERATION_BUDGET,
    MAX_LIST_ITEMS,
    MAX_RESULT_BYTES,
    CompiledExpression,
    ExpressionError,
    compile_expression,
)
from flowservice.limits import Limits
from flowservice.models import (
    Branch,
    Condition,
    ExecutionStatus,
    Flow,
    Task,
    TaskOutcome,
    TaskStub,
)
from flowservice.tasks import TaskContext, builtin_registry
from flowservice.tasks.builtin import MAX_RECORDS

LIMITS = Limits()


def fetch(rows: int) -> Task:
    return Task("fetch", params={"output": {"rows": rows, "items": list(range(rows))}})


def skip_when_empty(rows: int) -> Flow:
    """The issue's example: if the fetch returned no rows, skip processing."""
    return Flow(
        start_task="fetch",
        tasks=(fetch(rows), Task("process"), Task("report")),
        conditions=(
            Condition(
                "fetch",
                expression="result.output.rows == 0",
                target_task_success="report",
                target_task_failure="process",
                name="empty?",
            ),
        ),
    )


async def run(flow: Flow, **kwargs: Any) -> list[Event]:
    return [event async for event in Engine(builtin_registry()).run(flow, **kwargs)]


def decisions(events: list[Event]) -> list[Any]:
    return [event.decision for event in events if isinstance(event, ConditionEvaluated)]


@pytest.mark.parametrize(
    ("rows", "path"), [(0, ("fetch", "report")), (3, ("fetch", "process", "report"))]
)
async def test_a_condition_branches_on_a_task_output(rows: int, path: tuple[str, ...]) -> None:
    summary = await Engine(builtin_registry()).execute(skip_when_empty(rows))

    assert summary.executed_tasks == path
    assert summary.status is ExecutionStatus.COMPLETED


async def test_the_decision_records_expression_value_and_branch() -> None:
    events = await run(skip_when_empty(3))

    (decision,) = decisions(events)
    assert decision.condition == "empty?"
    assert decision.expression == "result.output.rows == 0"
    assert decision.expected_outcome == ""
    assert decision.value is False
    assert decision.branch is Branch.FAILURE
    assert decision.next_task == "process"
    assert decision.links_tested == 1
    summary = events[-1].summary  # type: ignore[union-attr]
    assert summary.task_results[0].decision == decision


def chain_flow(score: int) -> Flow:
    return Flow(
        start_task="score",
        tasks=(
            Task("score", params={"output": {"score": score}}),
            Task("high"),
            Task("medium"),
            Task("low"),
        ),
        conditions=(
            Condition("score", expression="result.output.score >= 90", target_task_success="high"),
            Condition(
                "score", expression="result.output.score >= 50", target_task_success="medium"
            ),
            Condition(
                "score", outcome="failure", target_task_success="end", target_task_failure="low"
            ),
        ),
        output="tasks.score.output.score",
    )


@pytest.mark.parametrize(
    ("score", "taken", "links", "value"),
    [(95, "high", 1, True), (60, "medium", 2, True), (10, "low", 3, False)],
)
async def test_conditions_on_one_task_form_an_if_else_if_chain(
    score: int, taken: str, links: int, value: bool
) -> None:
    events = await run(chain_flow(score))

    (decision,) = decisions(events)
    assert decision.next_task == taken
    assert decision.links_tested == links
    assert decision.value is value
    summary = events[-1].summary  # type: ignore[union-attr]
    assert summary.executed_tasks[:2] == ("score", taken)


async def test_an_input_mapping_feeds_a_task_from_earlier_outputs() -> None:
    flow = Flow(
        start_task="fetch",
        tasks=(
            Task("fetch", type="fetch_data", params={"count": 2}),
            Task(
                "process",
                type="process_data",
                input_mapping={
                    "records": "tasks.fetch.output.records.filter(r, r.value > 10.0)",
                    "label": "input.region + '-' + string(size(tasks.fetch.output.records))",
                },
            ),
        ),
    )

    summary = await Engine(builtin_registry()).execute(flow, flow_input={"region": "eu"})

    process = summary.task_results[1]
    assert process.inputs == {
        "records": [{"id": 2.0, "value": 20.0}],
        "label": "eu-2",
    }
    assert process.output["count"] == 1.0
    assert process.output["total"] == 40.0


async def test_the_flow_output_defaults_to_the_last_tasks_output() -> None:
    flow = Flow(start_task="a", tasks=(Task("a"), Task("b", params={"output": {"done": True}})))

    summary = await Engine(builtin_registry()).execute(flow)

    assert summary.output == {"done": True}


async def test_a_run_without_input_shows_its_expressions_an_empty_input() -> None:
    flow = Flow(start_task="a", tasks=(Task("a"),), output="{'given': size(input)}")

    summary = await Engine(builtin_registry()).execute(flow)

    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.output == {"given": 0}


async def test_the_flow_output_expression_sees_input_and_tasks() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a", params={"output": {"n": 2}}),),
        output="{'total': tasks.a.output.n * input.factor, 'ok': tasks.a.outcome == 'success'}",
    )

    summary = await Engine(builtin_registry()).execute(flow, flow_input={"factor": 1.5})

    assert summary.output == {"total": 3.0, "ok": True}


@pytest.mark.parametrize(
    ("expression", "position", "reason"),
    [
        ("result.output.rows ==", "line 1, column 22", "Syntax error"),
        ("1 + 'a' == 2", "line 1, column 3", "no matching overload"),
        (
            "reslt.output.rows > 0",
            "line 1, column 13",
            "undeclared reference to 'reslt.output.rows'",
        ),
    ],
)
def test_compile_errors_name_the_field_position_and_reason(
    expression: str, position: str, reason: str
) -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("b")),
        conditions=(
            Condition("a", outcome="success", target_task_success="b"),
            Condition("b", expression=expression),
        ),
    )

    (violation,) = validate(flow, builtin_registry(), LIMITS).violations

    assert violation.field == "flow.conditions[1].expression"
    assert violation.reason == "INVALID_EXPRESSION"
    assert position in violation.description
    assert reason in violation.description


def test_an_expression_that_cannot_be_a_bool_is_refused() -> None:
    flow = Flow(
        start_task="a", tasks=(Task("a"),), conditions=(Condition("a", expression="size('x')"),)
    )

    (violation,) = validate(flow, builtin_registry(), LIMITS).violations

    assert violation.reason == "EXPRESSION_NOT_BOOL"
    assert "INT" in violation.description


def test_every_expression_field_is_compiled_and_reported() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a", input_mapping={"x": "input.("}),),
        output="tasks.",
    )

    fields = [v.field for v in validate(flow, builtin_registry(), LIMITS).violations]

    assert 'flow.tasks[0].input_mapping["x"]' in fields
    assert "flow.output" in fields


def test_an_expression_over_the_length_limit_is_refused_with_the_limit() -> None:
    long = " || ".join(["input.a == 1"] * 100)
    flow = Flow(start_task="a", tasks=(Task("a"),), conditions=(Condition("a", expression=long),))

    (violation,) = validate(flow, builtin_registry(), Limits(max_expression_length=200)).violations

    assert violation.reason == "EXPRESSION_TOO_LONG"
    assert violation.limit == ("max_expression_length", 200)


async def test_a_runtime_evaluation_error_fails_the_flow_with_its_message() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a"), Task("b")),
        conditions=(
            Condition("a", expression="result.output.missing > 1", target_task_success="b"),
        ),
    )

    summary = await Engine(builtin_registry()).execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert summary.executed_tasks == ("a",)
    assert "flow.conditions[0]" in summary.error
    assert "missing" in summary.error


async def test_a_dynamic_value_that_is_not_a_bool_fails_the_flow() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a", params={"output": {"v": "yes"}}),),
        conditions=(Condition("a", expression="result.output.v"),),
    )

    summary = await Engine(builtin_registry()).execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert "not a bool" in summary.error


async def test_evaluation_is_bounded_by_the_iteration_budget() -> None:
    flow = Flow(
        start_task="a",
        tasks=(Task("a", params={"output": {"xs": list(range(200))}}),),
        conditions=(
            Condition(
                "a",
                expression="result.output.xs.all(x, result.output.xs.all(y, double(x) + y >= 0.0))",
            ),
        ),
    )

    summary = await Engine(builtin_registry()).execute(flow)

    assert summary.status is ExecutionStatus.FAILED
    assert f"budget of {ITERATION_BUDGET}" in summary.error


def test_a_constant_expression_is_recognised() -> None:
    compiled = compile_expression("1 < 2")
    assert isinstance(compiled, CompiledExpression)
    assert compiled.constant_value() is True
    variable = compile_expression("input.a < 2")
    assert isinstance(variable, CompiledExpression)
    assert variable.constant_value() is None


@pytest.mark.parametrize(
    ("source", "column"),
    [
        ("size(input.l.map(x, input.s + input.s)) > 0", 29),
        ("input.l.all(x, x + input.offset > 0.0)", 18),
        ("input.l.exists(x, bytes(input.s).size() > 0)", 24),
        ("[input.s].map(a, [a + a]).size() > 0", 21),
        ("input.l.filter(x, x in (input.l + input.l)).size() > 0", 33),
        ("(input.l + input.l).exists(x, x > 0.0)", 10),
    ],
)
def test_copying_inside_a_macro_does_not_compile(source: str, column: int) -> None:
    (problem,) = compile_expression(source)  # type: ignore[misc]
    assert (problem.line, problem.column) == (1, column)


def test_a_concatenation_chain_is_bounded_by_its_weight() -> None:
    longest = 1
    while sum(range(2, longest + 2)) <= MAX_COPY_WEIGHT:
        longest += 1
    within = " + ".join(["input.s"] * longest)
    beyond = " + ".join(["input.s"] * (longest + 1))

    assert isinstance(compile_expression(f"size({within}) > 0"), CompiledExpression)
    assert not isinstance(compile_expression(f"size({beyond}) > 0"), CompiledExpression)


@pytest.mark.parametrize(
    "source",
    [
        "'user-' + input.name + '-' + string(input.id) == 'user-a-1'",
        "input.l.map(x, x * 2.0).size() > 0",
        "input.l.filter(x, x > 1.0).size() > 0",
        "input.l.all(x, double(x) + input.offset > 0.0)",
        "(input.l + input.l).size() > 0",
        "[input.s + input.s, input.s].size() > 0",
    ],
)
def test_ordinary_expressions_that_copy_little_still_compile(source: str) -> None:
    assert isinstance(compile_expression(source), CompiledExpression)


def test_a_value_larger_than_the_result_budget_fails_the_evaluation() -> None:
    compiled = compile_expression("input.l.map(x, input.s)")
    assert isinstance(compiled, CompiledExpression)
    data = {"input": {"l": [1.0] * 5, "s": "s" * (MAX_RESULT_BYTES // 4)}}

    with pytest.raises(ExpressionError, match="max_expression_result_bytes"):
        compiled.evaluate(data)
    assert (
        compiled.evaluate({"input": {**data["input"], "l": [1.0] * 3}}) == [data["input"]["s"]] * 3
    )


def test_map_and_filter_refuse_data_with_longer_lists_than_the_bound() -> None:
    appending = compile_expression("size(input.a.l.filter(x, x > 1.0)) > 0")
    testing = compile_expression("input.a.l.exists(x, x < 0.0)")
    assert isinstance(appending, CompiledExpression)
    assert isinstance(testing, CompiledExpression)
    within = {"input": {"a": {"l": [2.0] * MAX_LIST_ITEMS}, "other": [0.0] * 5000}}
    beyond = {"input": {"a": {"l": [{"deep": [2.0] * (MAX_LIST_ITEMS + 1)}]}}}

    assert appending.evaluate(within) is True  # a long list it does not read is fine
    with pytest.raises(ExpressionError, match="max_expression_list_items"):
        appending.evaluate(beyond)
    assert testing.evaluate({"input": {"a": {"l": [1.0] * 5000}}}) is False  # no appending


async def test_a_filter_reads_the_most_records_fetch_data_makes() -> None:
    flow = Flow(
        start_task="fetch",
        tasks=(
            Task("fetch", type="fetch_data", params={"count": MAX_RECORDS}),
            Task(
                "process",
                type="process_data",
                input_mapping={"records": "tasks.fetch.output.records.filter(r, r.id > 10.0)"},
            ),
        ),
        conditions=(Condition("fetch", outcome="success", target_task_success="process"),),
    )

    summary = await Engine(builtin_registry()).execute(flow)

    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.task_results[-1].output["count"] == MAX_RECORDS - 10


async def test_a_stubbed_task_does_not_run_and_says_so() -> None:
    registry = builtin_registry()
    ran: list[str] = []

    async def charge(ctx: TaskContext) -> dict[str, str]:
        ran.append(ctx.task.name)
        return {"charged": "for real"}

    registry.register("charge", charge)
    flow = Flow(
        start_task="charge",
        tasks=(Task("charge", type="charge"), Task("refund"), Task("ship")),
        conditions=(
            Condition(
                "charge",
                outcome="success",
                target_task_success="ship",
                target_task_failure="refund",
            ),
        ),
    )
    stubs = {"charge": TaskStub(TaskOutcome.FAILURE, {"code": "card_declined"}, "declined")}

    summary = await Engine(registry).execute(flow, stubs=stubs)

    assert ran == []
    assert summary.executed_tasks == ("charge", "refund", "ship")
    charge_result = summary.task_results[0]
    assert charge_result.stubbed is True
    assert charge_result.outcome is TaskOutcome.FAILURE
    assert charge_result.error == "declined"
    assert charge_result.output == {"code": "card_declined"}
    assert not summary.task_results[1].stubbed


def test_stubs_must_name_tasks_and_set_an_outcome() -> None:
    flow = Flow(start_task="a", tasks=(Task("a"),))
    stubs = {"ghost": TaskStub(TaskOutcome.SUCCESS), "a": TaskStub(None)}

    violations = validate(flow, builtin_registry(), LIMITS, stubs).violations

    assert [(v.field, v.reason) for v in violations] == [
        ('stubs["ghost"]', "UNKNOWN_TASK"),
        ('stubs["a"].outcome', "MISSING_OUTCOME"),
    ]
