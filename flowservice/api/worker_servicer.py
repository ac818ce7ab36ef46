"""The `flowmanager.v1.WorkerService` servicer: thin glue between worker streams and the dispatcher.

`Work` registers the worker from its first message, then runs two things at
once: a reader applying what the worker sends (results, credits) and the
handler's own loop pushing what the dispatcher puts in the session's outbox
(assignments, cancellations, refusals). Whichever way the stream ends (the
worker half-closes, breaks, or sends something invalid), the session is
disconnected, so the assignments it held fail with `WorkerLost`. A bad
result on the stream is refused with a push, not by ending the stream, so
one mistake does not lose the worker's other assignments.

Between replicas (`flowservice.shared_dispatch`), an assignment travels as
the bytes of its `TaskAssignment` (`encode_assignment`), pushed as they are
by the replica whose worker takes it; `CompleteTask` and `FailTask` reach
it wherever it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from flowmanager.v1 import worker_service_pb2, worker_service_pb2_grpc
from flowservice.api.worker_convert import (
    assignment_to_proto,
    cancellation_to_proto,
    credits_from_proto,
    refusal_to_proto,
    result_from_complete,
    result_from_fail,
    start_from_proto,
)
from flowservice.dispatch import (
    Assignment,
    Cancellation,
    Dispatcher,
    Push,
    Refusal,
    SharedTask,
    WorkerSession,
    WorkResult,
)
from flowservice.errors import (
    AssignmentNotFoundError,
    InvalidWorkRequestError,
    Violation,
)

__all__ = ["WorkerServicer", "encode_assignment"]

_Context = grpc.aio.ServicerContext[object, object]
_Requests = AsyncIterator[worker_service_pb2.WorkRequest]


_START_TIMEOUT = 10.0
"""Seconds a new `Work` stream has to send its `start` message."""


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    """Serves `Work`, `CompleteTask` and `FailTask` with one dispatcher."""

    def __init__(self, dispatcher: Dispatcher, max_name_length: int) -> None:
        self._dispatcher = dispatcher
        self._max_name_length = max_name_length

    async def Work(
        self, request_iterator: _Requests, context: _Context
    ) -> AsyncIterator[worker_service_pb2.WorkResponse]:
        """Registers the worker, then pushes its assignments while applying its results."""
        session = await self._connect(request_iterator)
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            started = worker_service_pb2.WorkStarted(worker_id=session.id)
            yield worker_service_pb2.WorkResponse(started=started)
            while (item := await session.next()) is not None:
                yield _push_to_proto(item)
        finally:
            reader.cancel()
            self._dispatcher.disconnect(session)
            # Retrieved here, so that a stream the client cancels never leaves
            # an exception asyncio would log as never retrieved.
            error = reader.exception() if reader.done() and not reader.cancelled() else None
        if error is not None:
            raise error

    async def _connect(self, requests: _Requests) -> WorkerSession:
        # A stream that never says who it is would hold its slot for ever.
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                first = await anext(aiter(requests), None)
        except TimeoutError:
            first = None
        if first is None or first.WhichOneof("kind") != "start":
            problem = Violation("start", "the first message must be start", "START_FIRST")
            raise InvalidWorkRequestError((problem,))
        name, queues, credits = start_from_proto(first.start, self._max_name_length)
        return self._dispatcher.connect(name, queues, credits)

    async def _read(self, requests: _Requests, session: WorkerSession) -> None:
        """Applies the worker's messages until its stream ends; then the session ends."""
        try:
            async for request in requests:
                self._apply(request, session)
        finally:
            self._dispatcher.disconnect(session)

    def _apply(self, request: worker_service_pb2.WorkRequest, session: WorkerSession) -> None:
        kind = request.WhichOneof("kind")
        if kind == "credits":
            self._dispatcher.add_credits(session, credits_from_proto(request.credits))
            return
        if kind not in ("complete", "fail"):
            problem = Violation(str(kind), "expected complete, fail or credits", "UNEXPECTED")
            raise InvalidWorkRequestError((problem,))
        assignment_id = request.complete.assignment_id or request.fail.assignment_id
        try:
            self._resolve(request, f"{kind}.")
        except AssignmentNotFoundError as exc:
            refusal = Refusal(assignment_id, "ASSIGNMENT_NOT_FOUND", str(exc))
            self._dispatcher.refuse(session, refusal)
        except InvalidWorkRequestError as exc:
            self._dispatcher.refuse(session, Refusal(assignment_id, "INVALID_RESULT", str(exc)))

    def _resolve(self, request: worker_service_pb2.WorkRequest, path: str) -> None:
        if request.HasField("complete"):
            assignment_id, result = result_from_complete(request.complete, path)
        else:
            assignment_id, result = self._failure(request.fail, path)
        self._dispatcher.resolve(assignment_id, result)

    def _failure(
        self, request: worker_service_pb2.FailTaskRequest, path: str = ""
    ) -> tuple[str, WorkResult]:
        return result_from_fail(request, self._max_name_length, path)

    async def CompleteTask(
        self, request: worker_service_pb2.CompleteTaskRequest, context: _Context
    ) -> worker_service_pb2.CompleteTaskResponse:
        """Applies a success from any process."""
        await self._dispatcher.resolve_anywhere(*result_from_complete(request))
        return worker_service_pb2.CompleteTaskResponse()

    async def FailTask(
        self, request: worker_service_pb2.FailTaskRequest, context: _Context
    ) -> worker_service_pb2.FailTaskResponse:
        """Applies a failure from any process."""
        await self._dispatcher.resolve_anywhere(*self._failure(request))
        return worker_service_pb2.FailTaskResponse()


def encode_assignment(assignment: Assignment) -> bytes:
    """The `TaskAssignment` a worker of any replica receives, serialized (deadline: wall time)."""
    loop_now = asyncio.get_running_loop().time()
    push = assignment_to_proto(assignment, loop_now, datetime.now(UTC))
    return push.assignment.SerializeToString()


def _push_to_proto(item: Push) -> worker_service_pb2.WorkResponse:
    if isinstance(item, SharedTask):
        assignment = worker_service_pb2.TaskAssignment.FromString(item.payload)
        return worker_service_pb2.WorkResponse(assignment=assignment)
    if isinstance(item, Assignment):
        loop_now = asyncio.get_running_loop().time()
        return assignment_to_proto(item, loop_now, datetime.now(UTC))
    if isinstance(item, Cancellation):
        return cancellation_to_proto(item)
    return refusal_to_proto(item)
