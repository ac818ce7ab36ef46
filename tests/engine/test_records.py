"""The records built once per task step (`quick_init`): built quicker, still frozen dataclasses."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime, timedelta

import pytest

from flowservice._quick_init import quick_init, quick_new
from flowservice.events import TaskStarted
from flowservice.models import Task, TaskOutcome, TaskResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def result(**changes: object) -> TaskResult:
    built = TaskResult("t", TaskOutcome.SUCCESS, 1, NOW, timedelta(0))
    return dataclasses.replace(built, **changes)


def test_a_record_is_its_own_class_with_every_field_set() -> None:
    built = TaskResult("t", TaskOutcome.FAILURE, 2, NOW, timedelta(1), error="boom", attempts=3)

    assert type(built) is TaskResult
    assert (built.task, built.outcome, built.step, built.error, built.attempts) == (
        "t",
        TaskOutcome.FAILURE,
        2,
        "boom",
        3,
    )
    assert (built.output, built.error_type, built.stubbed, built.decision) == ({}, "", False, None)


def test_defaults_from_a_factory_are_new_for_each_record() -> None:
    first, second = Task("a"), Task("b")

    assert first.params == {} and first.params is not second.params


@pytest.mark.parametrize("field", ["task", "outcome", "decision"])
def test_a_record_stays_frozen(field: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(result(), field, None)


def test_an_inherited_field_stays_frozen_too() -> None:
    event = TaskStarted("e", 1, NOW, "t", "mock", 1)

    with pytest.raises(dataclasses.FrozenInstanceError):
        event.sequence = 2  # type: ignore[misc]


def test_equality_hash_replace_and_pickling_are_the_dataclass_ones() -> None:
    event = TaskStarted("e", 1, NOW, "t", "mock", 1)
    same = TaskStarted(execution_id="e", sequence=1, time=NOW, task="t", type="mock", step=1)

    assert event == same and hash(event) == hash(same)
    assert dataclasses.replace(event, step=2).step == 2
    assert pickle.loads(pickle.dumps(event)) == event
    assert repr(event).startswith("TaskStarted(execution_id='e'")


def test_a_subclass_is_built_by_the_dataclass_init() -> None:
    class Retried(TaskResult):
        __slots__ = ()

    built = Retried("t", TaskOutcome.SUCCESS, 1, NOW, timedelta(0), attempts=2)

    assert type(built) is Retried and built.attempts == 2 and built.output == {}


def test_quick_new_builds_the_same_record_as_the_class() -> None:
    built = quick_new(TaskResult)("t", TaskOutcome.FAILURE, 2, NOW, timedelta(1), error="boom")

    assert type(built) is TaskResult
    assert built == TaskResult("t", TaskOutcome.FAILURE, 2, NOW, timedelta(1), error="boom")
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.error = ""  # type: ignore[misc]


def test_quick_new_runs_default_factories_for_each_record() -> None:
    first, second = quick_new(Task)("a"), quick_new(Task)("b")

    assert first.params == {} and first.params is not second.params


def test_a_dataclass_it_cannot_build_is_refused_when_defined() -> None:
    with pytest.raises(TypeError):

        @quick_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class Checked:
            value: int

            def __post_init__(self) -> None:
                pass
