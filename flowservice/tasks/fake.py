"""A task whose behaviour the test passes in, as httpx's `MockTransport` is a transport.

    registry = TaskRegistry({"charge": FakeTask(lambda ctx: {"paid": ctx.params["amount"]})})

The handler receives the `TaskContext` and returns the output (a mapping or
None), or raises (`TaskFailure` for a failure with an error type); it may be
sync or async. The fake runs on the event loop and records every context it
was called with, so a test can assert what the engine passed in.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from flowservice.tasks.base import TaskContext, TaskOutput

__all__ = ["FakeTask"]


class FakeTask:
    """A task implementation that calls `handler`; `calls` holds every context it saw."""

    def __init__(
        self, handler: Callable[[TaskContext], TaskOutput | Awaitable[TaskOutput]] | None = None
    ) -> None:
        self._handler = handler
        self.calls: list[TaskContext] = []
        """The context of every attempt, in order."""

    async def run(self, ctx: TaskContext) -> TaskOutput:
        """Records `ctx` and returns what the handler gives (None without a handler)."""
        self.calls.append(ctx)
        if self._handler is None:
            return None
        returned = self._handler(ctx)
        if inspect.isawaitable(returned):
            return await returned
        return returned
