"""The task registry: every kind of implementation, and bad registrations."""

from __future__ import annotations

import pytest

from flowservice.engine import Engine
from flowservice.errors import TaskRegistrationError
from flowservice.models import ExecutionStatus, Flow, Task
from flowservice.tasks import TaskContext, TaskRegistry, builtin_registry


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
