"""A Python worker for `worker` tasks: a handler per queue, served over `WorkerService.Work`.

    async def charge(item: WorkItem) -> dict[str, object]:
        return {"charged": item.params["amount"]}

    worker = Worker("127.0.0.1:50051", {"payments": charge}, credits=4)
    await worker.run()          # until worker.stop(); reconnects on its own

A handler gets a `WorkItem` and returns the task's output (a JSON-like
mapping, or None). It fails the task by raising: `TaskFailure` with its
message, output and error type, any other exception with its class name as
the error type. Async handlers run on the loop and are cancelled when the
server cancels the assignment; sync handlers run in a thread (their result
is dropped after a cancellation). `credits` handlers run at once at most.

When the connection breaks, the worker reconnects with exponential backoff
(with jitter); the server has already failed its assignments with
`WorkerLost`, so their results would be refused. `stop()` is graceful: no
new assignments are started (those that still arrive fail with the
retryable `WorkerStopping`), the running ones finish and are answered, then
the stream is closed. Not to be confused with `flowservice.workers`, which
runs several server processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format

from flowmanager.v1 import worker_service_pb2, worker_service_pb2_grpc
from flowservice.tasks.base import TaskFailure

__all__ = ["Handler", "WorkItem", "Worker"]

logger = logging.getLogger(__name__)

WORKER_STOPPING = "WorkerStopping"
"""The error type of an assignment that reached a worker while it was stopping."""


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One assignment, as a handler sees it (`TaskAssignment` in the proto)."""

    assignment_id: str
    """The id the answer names."""
    queue: str
    """The queue it came from: which handler runs it."""
    execution_id: str
    """The execution the task run belongs to."""
    flow_id: str
    """The `id` of the flow."""
    task_name: str
    """The task's name in the flow."""
    step: int
    """The run's position among the execution's task runs, from 1."""
    attempt: int
    """Which attempt of the run, from 1."""
    params: Mapping[str, Any]
    """The task's params, input mapping applied."""
    input: Mapping[str, Any]
    """The flow's input."""
    results: Mapping[str, Mapping[str, Any]]
    """The output of every task that ran before, by task name."""
    deadline: datetime | None
    """When the attempt must be finished (UTC); None when unbounded."""
    idempotency_key: str
    """The same on every attempt of one task run."""


Handler = Callable[[WorkItem], Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None]
"""Runs one work item: returns the output, or raises to fail."""


class Worker:
    """Serves queues of a Flow Manager with one handler per queue (see the module docstring)."""

    def __init__(
        self,
        target: str,
        handlers: Mapping[str, Handler],
        *,
        credits: int = 1,
        name: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if not handlers or credits < 1:
            raise ValueError("a worker needs at least one handler and one credit")
        self._target = target
        self._handlers = dict(handlers)
        self._credits = credits
        self._name = name
        self._credentials = credentials
        self._metadata = tuple(metadata)
        self._backoff = backoff
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        """Set while the server has this worker registered (after `WorkStarted`)."""

    def stop(self) -> None:
        """Stops gracefully: running handlers finish and are answered, then `run` returns."""
        self._stopping.set()

    async def run(self) -> None:
        """Serves until `stop()`, reconnecting with backoff when the connection breaks.

        Raises `grpc.aio.AioRpcError` for errors a reconnection cannot fix
        (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED).
        """
        delay = self._backoff[0]
        while not self._stopping.is_set():
            try:
                await self._serve_once()
                delay = self._backoff[0]
            except grpc.aio.AioRpcError as error:
                if error.code() in _PERMANENT:
                    raise
                logger.warning("worker stream ended (%s); reconnecting", error.code().name)
            finally:
                self.connected.clear()
            if self._stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff[1])

    async def _serve_once(self) -> None:
        """One stream, from `WorkStart` to its end."""
        outgoing: asyncio.Queue[worker_service_pb2.WorkRequest | None] = asyncio.Queue()
        start = worker_service_pb2.WorkStart(
            queues=list(self._handlers), credits=self._credits, worker_name=self._name
        )
        outgoing.put_nowait(worker_service_pb2.WorkRequest(start=start))
        running: dict[str, asyncio.Task[None]] = {}
        async with self._channel() as channel:
            stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
            call = stub.Work(_drain(outgoing), metadata=self._metadata)
            closer = asyncio.create_task(self._close_when_stopped(outgoing, running))
            try:
                async for response in call:
                    self._receive(response, outgoing, running)
            finally:
                closer.cancel()
                for task in running.values():
                    task.cancel()

    def _channel(self) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(self._target)
        return grpc.aio.secure_channel(self._target, self._credentials)

    async def _close_when_stopped(
        self,
        outgoing: asyncio.Queue[worker_service_pb2.WorkRequest | None],
        running: dict[str, asyncio.Task[None]],
    ) -> None:
        """On `stop()`, waits for the running handlers, then half-closes the stream."""
        await self._stopping.wait()
        while running:
            await asyncio.wait(list(running.values()))
        outgoing.put_nowait(None)

    def _receive(
        self,
        response: worker_service_pb2.WorkResponse,
        outgoing: asyncio.Queue[worker_service_pb2.WorkRequest | None],
        running: dict[str, asyncio.Task[None]],
    ) -> None:
        kind = response.WhichOneof("kind")
        if kind == "started":
            self.connected.set()
            logger.info("worker registered as %s", response.started.worker_id)
        elif kind == "assignment":
            item = _work_item(response.assignment)
            if self._stopping.is_set():
                outgoing.put_nowait(_failure(item.assignment_id, "stopping", WORKER_STOPPING))
                return
            task = asyncio.create_task(self._handle(item, outgoing))
            running[item.assignment_id] = task
            task.add_done_callback(lambda _: running.pop(item.assignment_id, None))
        elif kind == "cancellation":
            cancelled = running.get(response.cancellation.assignment_id)
            if cancelled is not None:
                cancelled.cancel()
        elif kind == "refused":
            refused = response.refused
            logger.warning("result for %s refused: %s", refused.assignment_id, refused.reason)

    async def _handle(
        self, item: WorkItem, outgoing: asyncio.Queue[worker_service_pb2.WorkRequest | None]
    ) -> None:
        """Runs the handler and queues its answer; a cancelled handler sends none."""
        handler = self._handlers[item.queue]
        try:
            if inspect.iscoroutinefunction(handler):
                output = await handler(item)
            else:
                output = await asyncio.to_thread(handler, item)
                if inspect.isawaitable(output):
                    output = await output
        except TaskFailure as failure:
            request = _failure(item.assignment_id, str(failure), failure.error_type)
            _set_struct(request.fail.output, failure.output)
        except Exception as exc:
            logger.warning("handler for %s raised", item.queue, exc_info=True)
            request = _failure(
                item.assignment_id, f"{type(exc).__name__}: {exc}", type(exc).__name__
            )
        else:
            complete = worker_service_pb2.CompleteTaskRequest(assignment_id=item.assignment_id)
            _set_struct(complete.output, output)
            request = worker_service_pb2.WorkRequest(complete=complete)
        outgoing.put_nowait(request)


_PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


async def _drain(
    outgoing: asyncio.Queue[worker_service_pb2.WorkRequest | None],
) -> AsyncIterator[worker_service_pb2.WorkRequest]:
    """The request stream: what is queued, until None half-closes it."""
    while (request := await outgoing.get()) is not None:
        yield request


def _failure(assignment_id: str, error: str, error_type: str) -> worker_service_pb2.WorkRequest:
    fail = worker_service_pb2.FailTaskRequest(
        assignment_id=assignment_id, error=error[:4096], error_type=error_type[:128]
    )
    return worker_service_pb2.WorkRequest(fail=fail)


def _set_struct(struct: Any, data: Mapping[str, Any] | None) -> None:
    if data:
        json_format.ParseDict(dict(data), struct)


def _work_item(message: worker_service_pb2.TaskAssignment) -> WorkItem:
    return WorkItem(
        assignment_id=message.assignment_id,
        queue=message.queue,
        execution_id=message.execution_id,
        flow_id=message.flow_id,
        task_name=message.task_name,
        step=message.step,
        attempt=message.attempt,
        params=json_format.MessageToDict(message.params),
        input=json_format.MessageToDict(message.input),
        results={
            result.task: json_format.MessageToDict(result.output) for result in message.results
        },
        deadline=message.deadline.ToDatetime(tzinfo=UTC) if message.HasField("deadline") else None,
        idempotency_key=message.idempotency_key,
    )
