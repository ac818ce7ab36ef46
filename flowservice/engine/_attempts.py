"""Running one attempt of one task: its implementation, timeout and output checks.

An attempt ends in one of four ways, all reported as an `Attempt`: success
(with its output normalised to JSON), failure (an exception, `TaskFailure`,
a bad or oversized output), its own timeout (`TaskTimeout`), or the
execution's deadline or a stop (`deadline_error`). Cancellation from outside propagates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flowservice._quick_init import quick_init
from flowservice.engine._deadline import DEADLINE_EXCEEDED, DeadlinePassed, DeadlineTimer
from flowservice.json_values import NotJsonError, to_json
from flowservice.limits import Limits
from flowservice.models import TaskOutcome, TaskStub
from flowservice.tasks import RegisteredTask, TaskContext, TaskFailure

__all__ = ["DEADLINE_EXCEEDED", "TASK_TIMEOUT", "Attempt", "AttemptRunner"]

TASK_TIMEOUT = "TaskTimeout"
"""The error type of an attempt that ran past its task's `timeout`."""

# The name log filters and the README know, from before the engine was a package.
logger = logging.getLogger("flowservice.attempts")


@quick_init
@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt of a task ended."""

    output: Mapping[str, Any] = field(default_factory=dict)
    """The output, normalised to JSON (empty on failure unless the task gave one)."""
    error: str = ""
    """Why it failed; empty on success."""
    error_type: str = ""
    """The kind of failure, matched by `RetryPolicy.non_retryable_errors`."""
    deadline_error: str = ""
    """The execution's error when its deadline passed during the attempt; empty otherwise."""
    size: int = 0
    """Bytes of `output` as compact JSON (0 when empty), measured by the output check."""
    retryable: bool = True
    """False when the task said no retry can help (`TaskFailure(retryable=False)`)."""
    retry_after: float | None = None
    """Seconds the failed service asked to wait before a retry (`TaskFailure.retry_after`)."""


_NO_OUTPUT = Attempt()
"""A success without output, the most common attempt: one object for all (it is frozen)."""


async def _timed(called: Awaitable[object], seconds: float) -> object:
    """`called`'s result, or `TimeoutError` after `seconds`."""
    async with asyncio.timeout(seconds):
        return await called


class AttemptRunner:
    """Runs attempts of tasks: async ones on the loop, sync ones in its own threads."""

    def __init__(self, limits: Limits, task_threads: int) -> None:
        self._limits = limits
        # Sync tasks run here, not in asyncio's small default pool: a task that
        # blocks, or is abandoned at a deadline, must not starve the others.
        self._executor = ThreadPoolExecutor(
            max_workers=task_threads, thread_name_prefix="flow-task"
        )

    def close(self) -> None:
        """Releases the worker threads; sync tasks still running are abandoned."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(
        self,
        registered: RegisteredTask,
        ctx: TaskContext,
        deadline: DeadlineTimer,
    ) -> Attempt:
        """One attempt, bounded by the task's timeout and the execution's `deadline`.

        (The work of each outcome is in methods of its own: this coroutine's
        frame, held while the task runs, stays small.)
        """
        try:
            with deadline.interruptible():
                returned = await self._call(registered, ctx)
            return _NO_OUTPUT if returned is None else self._checked(returned)
        except TaskFailure as failure:
            return self._task_failure(failure)
        except TimeoutError:
            assert ctx.task.timeout is not None
            seconds = ctx.task.timeout.total_seconds()
            return Attempt(error=f"attempt timed out after {seconds:g} s", error_type=TASK_TIMEOUT)
        except DeadlinePassed:
            return self._cut_short(ctx, deadline)
        except Exception as exc:
            return self._raised(ctx, exc)

    def _call(self, registered: RegisteredTask, ctx: TaskContext) -> Awaitable[object]:
        # The task's own awaitable, awaited by `run`: no coroutine of ours in between,
        # but for a task with a timeout, which pays for a timer of its own.
        called: Awaitable[object]
        if registered.is_async:
            called = registered.function(ctx)  # type: ignore[assignment]
        else:
            # A sync task may block; in a worker thread it blocks only itself. At a
            # deadline its result is abandoned.
            loop = asyncio.get_running_loop()
            called = loop.run_in_executor(self._executor, registered.function, ctx)
        timeout = ctx.task.timeout
        if timeout is None:
            return called
        return _timed(called, timeout.total_seconds())

    def _task_failure(self, failure: TaskFailure) -> Attempt:
        """The attempt of a task that raised `TaskFailure`."""
        failed = self._failed(failure.output, str(failure) or "task failed", failure.error_type)
        if failure.retryable and failure.retry_after is None:
            return failed
        return dataclasses.replace(
            failed, retryable=failure.retryable, retry_after=failure.retry_after
        )

    @staticmethod
    def _cut_short(ctx: TaskContext, deadline: DeadlineTimer) -> Attempt:
        """The attempt the execution's deadline (or a cancel) interrupted."""
        # The task's error says it was cancelled; the execution's, why.
        why = deadline.out_of_time(f"while task {ctx.task.name!r} ran")
        return Attempt(
            error=f"cancelled: {why}", error_type=deadline.error_type, deadline_error=why
        )

    @staticmethod
    def _raised(ctx: TaskContext, exc: Exception) -> Attempt:
        """The attempt of a task that raised `exc`: a task's own bug is that task's
        failure, never the server's."""
        logger.warning(
            "task %r raised in execution %s",
            ctx.task.name,
            ctx.execution_id,
            exc_info=exc,
            extra={"execution_id": ctx.execution_id, "task": ctx.task.name},
        )
        return Attempt(error=f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)

    def stubbed(self, stub: TaskStub) -> Attempt:
        """The attempt a what-if stub stands for."""
        if stub.outcome is TaskOutcome.FAILURE:
            return self._failed(stub.output, stub.error or "stubbed failure", "StubbedFailure")
        return self._checked(stub.output)

    def _failed(self, output: Mapping[str, Any], error: str, error_type: str) -> Attempt:
        """A failure, keeping the output it reported when that output passes the checks."""
        checked = self._checked(output)
        if checked.error:  # the output itself is bad: the failure stands, the output goes
            return Attempt(
                error=f"{error} (its output was dropped: {checked.error})", error_type=error_type
            )
        return Attempt(checked.output, error, error_type, size=checked.size)

    def _checked(self, returned: object) -> Attempt:
        if returned is None:
            return _NO_OUTPUT
        if not isinstance(returned, Mapping):
            return Attempt(
                error=f"task returned a {type(returned).__name__}; "
                "it must return an object or None",
                error_type="InvalidOutput",
            )
        if not returned:
            return _NO_OUTPUT
        try:
            output = to_json(returned)
        except NotJsonError as exc:
            return Attempt(error=f"task output is not JSON-like: {exc}", error_type="InvalidOutput")
        if not output:
            return _NO_OUTPUT
        size = len(json.dumps(output, separators=(",", ":")).encode())
        if size > self._limits.max_output_bytes:
            return Attempt(
                error=f"task output is {size} bytes, above the limit of "
                f"{self._limits.max_output_bytes} (max_output_bytes)",
                error_type="OutputTooLarge",
            )
        return Attempt(output, size=size)
