"""Conversions between messages and domain models, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format

from flowmanager.v1 import flow_service_pb2 as pb
from flowservice.api.convert import (
    _BRANCH,
    _OUTCOME,
    _STATUS,
    event_to_proto,
    flow_from_request,
    input_from_request,
    stubs_from_request,
    summary_to_proto,
)
from flowservice.errors import InvalidFlowError
from flowservice.events import ConditionEvaluated, TaskStarted
from flowservice.models import (
    Branch,
    Condition,
    Decision,
    ExecutionStatus,
    ExecutionSummary,
    Flow,
    Task,
    TaskOutcome,
    TaskResult,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)


def test_a_request_becomes_the_domain_flow_it_describes() -> None:
    request = json_format.ParseDict(
        {
            "flow": {
                "id": "f",
                "name": "n",
                "start_task": "a",
                "max_steps": 9,
                "tasks": [
                    {"name": "a", "description": "first"},
                    {"name": "b", "type": "fetch_data", "params": {"count": 2, "tags": ["x"]}},
                ],
                "conditions": [
                    {
                        "name": "c",
                        "source_task": "a",
                        "outcome": "failure",
                        "target_task_success": "end",
                        "target_task_failure": "b",
                    }
                ],
            }
        },
        pb.ExecuteRequest(),
    )

    assert flow_from_request(request) == Flow(
        id="f",
        name="n",
        start_task="a",
        max_steps=9,
        tasks=(
            Task("a", type="mock", description="first"),
            Task("b", type="fetch_data", params={"count": 2.0, "tags": ["x"]}),
        ),
        conditions=(Condition("a", "failure", "end", "b", name="c"),),
    )


def test_a_request_without_a_flow_is_invalid() -> None:
    with pytest.raises(InvalidFlowError) as raised:
        flow_from_request(pb.ExecuteStreamRequest())
    assert raised.value.violations[0].field == "flow"


def test_a_summary_becomes_the_execute_response() -> None:
    result = TaskResult(
        task="a",
        outcome=TaskOutcome.FAILURE,
        step=1,
        started_at=NOW,
        duration=timedelta(milliseconds=1500),
        output={"partial": [1, "two"]},
        error="bad",
        error_type="CardDeclined",
    )
    summary = ExecutionSummary(
        execution_id="e",
        flow_id="f",
        status=ExecutionStatus.FAILED,
        executed_tasks=("a",),
        task_results=(result,),
        started_at=NOW,
        duration=timedelta(seconds=2),
        failed_task="a",
        error="task 'a' failed: bad",
        error_type="CardDeclined",
    )

    message = summary_to_proto(summary)

    assert json_format.MessageToDict(message, preserving_proto_field_name=True) == {
        "execution_id": "e",
        "flow_id": "f",
        "status": "EXECUTION_STATUS_FAILED",
        "executed_tasks": ["a"],
        "failed_task": "a",
        "error": "task 'a' failed: bad",
        "error_type": "CardDeclined",
        "start_time": "2026-01-02T03:04:05.600Z",
        "duration": "2s",
        "task_results": [
            {
                "task": "a",
                "outcome": "TASK_OUTCOME_FAILURE",
                "step": 1,
                "start_time": "2026-01-02T03:04:05.600Z",
                "duration": "1.500s",
                "output": {"partial": [1.0, "two"]},
                "error": "bad",
                "error_type": "CardDeclined",
                "attempts": 1,
            }
        ],
    }


def test_events_carry_their_header_and_payload() -> None:
    started = event_to_proto(
        TaskStarted(execution_id="e", sequence=4, time=NOW, task="a", type="mock", step=2)
    )
    assert started.execution_id == "e"
    assert started.sequence == 4
    assert started.time.ToDatetime(tzinfo=UTC) == NOW
    assert started.task_started == pb.TaskStartedEvent(task="a", type="mock", step=2)

    decided = event_to_proto(
        ConditionEvaluated(
            execution_id="e",
            sequence=5,
            time=NOW,
            decision=Decision(
                condition="c",
                condition_index=3,
                source_task="a",
                expected_outcome="",
                expression="result.output.rows > 0",
                actual_outcome=TaskOutcome.SUCCESS,
                value=False,
                branch=Branch.FAILURE,
                next_task="end",
                links_tested=2,
            ),
        )
    )
    assert decided.WhichOneof("event") == "condition_evaluated"
    assert decided.condition_evaluated == pb.ConditionEvaluatedEvent(
        condition="c",
        condition_index=3,
        source_task="a",
        expression="result.output.rows > 0",
        actual_outcome=pb.TASK_OUTCOME_SUCCESS,
        value=False,
        branch=pb.BRANCH_FAILURE,
        next_task="end",
        links_tested=2,
    )


@pytest.mark.parametrize(
    ("table", "enum"), [(_STATUS, ExecutionStatus), (_OUTCOME, TaskOutcome), (_BRANCH, Branch)]
)
def test_every_domain_enum_value_has_a_wire_value(table: object, enum: type) -> None:
    assert isinstance(table, dict)
    assert set(table) == set(enum)
    assert 0 not in table.values()  # UNSPECIFIED is never sent


def test_struct_numbers_arrive_as_floats_as_json_format_gives_them() -> None:
    request = json_format.ParseDict(
        {"flow": {"tasks": [{"name": "a", "params": {"n": 2, "l": [1, "x", None, True, {}]}}]}},
        pb.ExecuteRequest(),
    )

    (task,) = flow_from_request(request).tasks

    assert task.params == json_format.MessageToDict(request.flow.tasks[0].params)
    assert task.params == {"n": 2.0, "l": [1.0, "x", None, True, {}]}


def test_non_finite_numbers_are_refused_with_every_field_path() -> None:
    request = pb.ExecuteRequest()
    for index in range(2):
        request.flow.tasks.add(name=f"t{index}").params.update(
            {"x": float("nan"), "deep": {"l": [0, float("-inf")]}, "odd key": float("inf")}
        )
    request.input.update({"a": {"b": float("inf")}})
    request.stubs["t0"].output.update({"y": float("nan")})

    with pytest.raises(InvalidFlowError) as in_flow:
        flow_from_request(request)
    with pytest.raises(InvalidFlowError) as in_input:
        input_from_request(request)
    with pytest.raises(InvalidFlowError) as in_stubs:
        stubs_from_request(request)

    # Struct fields are a map: their order is not the order they were set in.
    assert {v.field for v in in_flow.value.violations} == {
        f"flow.tasks[{i}].{path}"
        for i in range(2)
        for path in ("params.x", "params.deep.l[1]", 'params["odd key"]')
    }
    assert [v.field for v in in_input.value.violations] == ["input.a.b"]
    assert [v.field for v in in_stubs.value.violations] == ['stubs["t0"].output.y']
    violations = in_flow.value.violations + in_input.value.violations + in_stubs.value.violations
    assert {v.reason for v in violations} == {"NON_FINITE_NUMBER"}


def test_durations_outside_the_spec_are_refused_with_their_field_paths() -> None:
    # Binary protobuf carries any int64 seconds; converting 2**63 - 1 of them
    # to a timedelta overflowed and the call failed as INTERNAL.
    request = pb.ExecuteRequest()
    request.flow.timeout.seconds = 2**63 - 1
    task = request.flow.tasks.add(name="t0")
    task.timeout.seconds = 315_576_000_001
    task.retry.initial_interval.seconds = 1
    task.retry.initial_interval.nanos = -1  # signs must agree
    task.retry.maximum_interval.seconds = -(2**62)
    request.flow.tasks.add(name="t1").timeout.seconds = 315_576_000_000  # the largest allowed

    with pytest.raises(InvalidFlowError) as raised:
        flow_from_request(request)

    assert {(v.field, v.reason) for v in raised.value.violations} == {
        ("flow.timeout", "INVALID_DURATION"),
        ("flow.tasks[0].timeout", "INVALID_DURATION"),
        ("flow.tasks[0].retry.initial_interval", "INVALID_DURATION"),
        ("flow.tasks[0].retry.maximum_interval", "INVALID_DURATION"),
    }
