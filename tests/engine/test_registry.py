"""The task registry: every kind of implementation, and bad registrations."""

from __future__ import annotations

import pytest

from flowservice.engine import Engine
from flowservice.errors import TaskRegistrationError
from flowservice.models import ExecutionStatus, Flow, Task
from flowservice.tasks import FakeTask, TaskContext, TaskFailure, TaskRegistry, builtin_registry


class SyncClassTask:
    def run(self, ctx: TaskContext) -> dict[str, str]:
        return {"kind": "sync class", "task": ctx.task.name}


class AsyncClassTask:
    async def run(self, ctx: TaskContext) -> dict[str, str]:
        return {"kind": "async class"}


def sync_function(ctx: TaskContext) -> dict[str, str]:
    return {"kind": "sync function"}


async def async_function(ctx: TaskContext) -> dict[str, str]:
    return {"kind": "async function"}


@pytest.mark.parametrize(
    ("implementation", "kind"),
    [
        (SyncClassTask, "sync class"),
        (SyncClassTask(), "sync class"),
        (AsyncClassTask, "async class"),
        (sync_function, "sync function"),
        (async_function, "async function"),
    ],
)
async def test_every_kind_of_implementation_runs(implementation: object, kind: str) -> None:
    registry = builtin_registry()
    registry.register("custom", implementation)
    flow = Flow(start_task="t", tasks=(Task("t", type="custom"),))

    summary = await Engine(registry).execute(flow)

    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.task_results[0].output["kind"] == kind


def test_the_decorator_registers_a_task() -> None:
    registry = TaskRegistry()

    @registry.task("greet")
    async def greet(ctx: TaskContext) -> None:
        return None

    assert "greet" in registry
    assert list(registry) == ["greet"]


@pytest.mark.parametrize(
    ("name", "implementation", "message"),
    [
        ("", async_function, "must not be empty"),
        ("mock", async_function, "already registered"),
        ("thing", 42, "must be a callable"),
        ("needs_args", type("NeedsArgs", (), {"__init__": lambda self, x: None}), "no arguments"),
    ],
)
def test_bad_registrations_are_refused_at_start_up(
    name: str, implementation: object, message: str
) -> None:
    with pytest.raises(TaskRegistrationError, match=message):
        builtin_registry().register(name, implementation)


async def test_a_fake_task_runs_the_behaviour_the_test_passes_in_and_records_its_calls() -> None:
    fake = FakeTask(lambda ctx: {"doubled": ctx.params["n"] * 2})
    engine = Engine(TaskRegistry({"double": fake}))

    summary = await engine.execute(
        Flow(start_task="a", tasks=(Task("a", type="double", params={"n": 21}),))
    )

    assert summary.status is ExecutionStatus.COMPLETED
    assert summary.task_results[0].output == {"doubled": 42}
    assert [ctx.task.name for ctx in fake.calls] == ["a"]


async def test_a_fake_task_may_be_async_and_fail() -> None:
    async def refuse(ctx: TaskContext) -> None:
        raise TaskFailure("card declined", error_type="CardDeclined")

    engine = Engine(TaskRegistry({"charge": FakeTask(refuse)}))

    summary = await engine.execute(Flow(start_task="a", tasks=(Task("a", type="charge"),)))

    assert summary.status is ExecutionStatus.FAILED
    assert summary.error_type == "CardDeclined"
    assert summary.task_results[0].error_type == "CardDeclined"
