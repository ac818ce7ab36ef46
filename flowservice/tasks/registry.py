"""The registry that maps a task `type` to the implementation that runs it.

Adding a task type is a registration here, never a change to the engine.
Implementations may be async functions, sync functions (the engine runs them
in worker threads so they never block the event loop), or objects/classes
with a `run` method of either kind.

An object may also have `check_params(params) -> Iterable[Violation]`:
validation calls it with each task's literal params (those no input mapping
replaces), so that a bad param fails the request before any task runs.
Each violation's `field` is relative to the params (`target`); validation
prefixes it (`flow.tasks[0].params.target`). And `aclose()`: the server
awaits it on shutdown (`TaskRegistry.aclose`), for tasks that hold
connections.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from flowservice.errors import TaskRegistrationError, Violation
from flowservice.models import Task
from flowservice.tasks.base import Implementation, TaskContext, TaskOutput

_I = TypeVar("_I", bound=Implementation)

__all__ = ["RegisteredTask", "TaskRegistry"]


@dataclass(frozen=True, slots=True)
class RegisteredTask:
    """One task implementation, with how the engine must call it."""

    type_name: str
    """The task type it is registered under."""
    function: Callable[[TaskContext], TaskOutput | Awaitable[TaskOutput]]
    """The callable to run (a bound `run` method for class-based tasks)."""
    is_async: bool
    """True: await it on the event loop. False: run it in a worker thread."""
    warnings: Callable[[Task], list[Violation]] | None = None
    """Its own `Validate` warnings about one task (fields relative to the task,
    `params.queue`), from the implementation's `warnings` method; None: none."""
    check_params: Callable[[Mapping[str, Any]], Iterable[Violation]] | None = None
    """Checks literal params at validation; None: the task checks them when it runs."""
    aclose: Callable[[], Awaitable[None]] | None = None
    """Releases what the implementation holds (connections); awaited on shutdown."""


class TaskRegistry:
    """Maps task type names to implementations, adapted to one async shape."""

    def __init__(self, implementations: Mapping[str, Implementation] | None = None) -> None:
        """A registry holding `implementations` by type name (none by default)."""
        self._tasks: dict[str, RegisteredTask] = {}
        for type_name, implementation in (implementations or {}).items():
            self.register(type_name, implementation)

    def register(self, type_name: str, implementation: Implementation) -> None:
        """Registers `implementation` under `type_name`.

        Raises `TaskRegistrationError` for an empty or taken name, or for
        something that cannot run as a task.
        """
        if not type_name or not type_name.strip():
            raise TaskRegistrationError("a task type name must not be empty")
        if type_name in self._tasks:
            raise TaskRegistrationError(f"task type {type_name!r} is already registered")
        self._tasks[type_name] = _adapt(type_name, implementation)

    def task(self, type_name: str) -> Callable[[_I], _I]:
        """Decorator form of `register`."""

        def decorate(implementation: _I) -> _I:
            self.register(type_name, implementation)
            return implementation

        return decorate

    def get(self, type_name: str) -> RegisteredTask | None:
        """The implementation registered under `type_name`, or None."""
        return self._tasks.get(type_name)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        """Awaits every implementation's `aclose` (connection pools, channels)."""
        for registered in self._tasks.values():
            if registered.aclose is not None:
                await registered.aclose()


def _adapt(type_name: str, implementation: Implementation) -> RegisteredTask:
    # Checked at run time too: callers without a type checker pass anything.
    target: object = implementation
    if inspect.isclass(target):
        try:
            target = target()
        except TypeError as exc:
            raise TaskRegistrationError(
                f"task class for {type_name!r} must be constructible with no arguments: {exc}"
            ) from exc
    # Optional hooks of a task written as an object, read before `run` replaces it.
    check_params = getattr(target, "check_params", None)
    warnings = getattr(target, "warnings", None)
    aclose = getattr(target, "aclose", None)
    run = getattr(target, "run", None)
    if callable(run):
        target = run
    if not callable(target):
        raise TaskRegistrationError(
            f"task {type_name!r} must be a callable or have a run method, "
            f"got {type(target).__name__}"
        )
    function: Callable[[TaskContext], TaskOutput | Awaitable[TaskOutput]] = target
    return RegisteredTask(
        type_name=type_name,
        function=function,
        is_async=inspect.iscoroutinefunction(function),
        warnings=warnings if callable(warnings) else None,
        check_params=check_params if callable(check_params) else None,
        aclose=aclose if callable(aclose) else None,
    )
