"""The `worker` task type: a run handed to a worker process through a queue.

`{"type": "worker", "params": {"queue": "payments", ...}}`: each attempt
becomes an assignment on the queue (see `flowservice.dispatch`), pushed to a
worker that serves it, and the attempt ends with the worker's answer. While
no worker serves the queue the attempt waits, within its timeout and the
execution's deadline; when either passes, or the execution is cancelled,
the worker is told to stop and the assignment is forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

from flowservice.dispatch import Dispatcher
from flowservice.errors import Violation
from flowservice.models import Task
from flowservice.tasks.base import TaskContext, TaskFailure, TaskOutput

__all__ = ["WORKER_TASK_TYPE", "WorkerTask"]

WORKER_TASK_TYPE = "worker"
"""The task type name the server registers `WorkerTask` under."""

# A cancellation this close to the attempt's deadline is that deadline passing.
_DEADLINE_TOLERANCE = 0.05


class WorkerTask:
    """Runs each attempt on a worker serving the task's `params.queue`."""

    def __init__(self, dispatcher: Dispatcher, max_queue_length: int = 128) -> None:
        self._dispatcher = dispatcher
        self._max_queue_length = max_queue_length

    async def run(self, ctx: TaskContext) -> TaskOutput:
        """Submits the attempt and awaits the worker's answer."""
        queue = self._queue(ctx.params.get("queue"))
        assignment = self._dispatcher.submit(ctx, queue)
        try:
            result = await assignment.future
        except asyncio.CancelledError:
            loop_time = asyncio.get_running_loop().time()
            late = ctx.deadline is not None and loop_time >= ctx.deadline - _DEADLINE_TOLERANCE
            self._dispatcher.cancel(assignment, deadline_passed=late)
            raise
        if result.error_type:
            raise TaskFailure(result.error or "the worker failed", result.output, result.error_type)
        return result.output

    def check_params(self, params: Mapping[str, Any]) -> Iterator[Violation]:
        """A literal `queue` that `run` would refuse, reported at validation.

        A queue from an input mapping is not among `params` here; `run`
        checks it. A missing queue cannot be told from a mapped one, so it
        too is left to `run`.
        """
        if "queue" in params:
            violation = self._queue_violation(params["queue"])
            if violation is not None:
                yield violation

    def _queue_violation(self, queue: object) -> Violation | None:
        if not isinstance(queue, str) or not queue.strip():
            return Violation(
                "queue", "a worker task needs params.queue, a non-empty string", "INVALID_QUEUE"
            )
        if len(queue) > self._max_queue_length:
            limit = self._max_queue_length
            return Violation(
                "queue",
                f"{len(queue)} characters, above the limit of {limit} (max_name_length)",
                "NAME_TOO_LONG",
                limit=("max_name_length", limit),
            )
        return None

    def _queue(self, queue: object) -> str:
        violation = self._queue_violation(queue)
        if violation is not None:
            raise TaskFailure(f"params.queue: {violation.description}", error_type="InvalidParams")
        assert isinstance(queue, str)  # the check above refuses anything else
        return queue

    def warnings(self, task: Task) -> list[Violation]:
        """`Validate`'s warning when no worker is connected for the task's queue.

        Fields are relative to the task (`params.queue`).
        """
        queue = task.params.get("queue")
        if not isinstance(queue, str) or self._dispatcher.workers_for(queue):
            return []
        return [
            Violation(
                "params.queue",
                f"no worker is connected for queue {queue!r}: the task waits for one "
                "(within its timeout and the execution's deadline)",
                "NO_WORKER_FOR_QUEUE",
            )
        ]
