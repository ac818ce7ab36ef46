"""Resuming executions whose process died: from the history back into the engine.

`Resumer.take_over` claims running executions whose lease has expired
(`ExecutionStore.claim`) and resumes each in a task of its own, detached
from any call, through the same `recorded` path as `StartExecution`: the
stored events become the engine's `Resumption` (the results of the task
runs that finished, parsed back from the `TaskFinished` messages), the
engine goes on from there, and what it yields is recorded after them. The
keeper calls it on a timer; `Resumer.standing_by` calls it for a caller who
repeats a request (same `request_id`) and waits for its execution, so that
the execution is taken over as soon as its owner's lease runs out.

A claimed execution that was asked to be cancelled is recorded cancelled,
not resumed (its last event built from the stored ones: `record_cancelled`);
one whose flow no longer runs here (its task types are gone) is recorded
FAILED with error type `NotResumable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from flowmanager.v1 import flow_service_pb2
from flowservice.api.convert import (
    flow_from_request,
    input_from_request,
    struct_to_json,
    stubs_from_request,
)
from flowservice.api.journal import stored_messages
from flowservice.api.recording import RunningExecutions, record_cancelled, recorded
from flowservice.engine import Engine, Resumption
from flowservice.errors import (
    ExecutionCancelledError,
    FlowServiceError,
    LeaseLostError,
    StoreUnavailableError,
)
from flowservice.events import Event
from flowservice.history import RUNNING, Claim, ExecutionStore, StoredEvent, StoredExecution
from flowservice.models import Branch, Decision, ExecutionStatus, TaskOutcome, TaskResult

__all__ = ["NOT_RESUMABLE", "Resumer", "resumption_from_history", "task_result_from_proto"]

logger = logging.getLogger(__name__)

NOT_RESUMABLE = "NotResumable"
"""The error type of an execution that could not be resumed (its flow no longer runs here)."""
_LONGEST_STANDBY_POLL = 1.0  # seconds between a waiting caller's looks for an abandoned execution

_OUTCOME: Mapping[int, TaskOutcome] = {
    flow_service_pb2.TASK_OUTCOME_SUCCESS: TaskOutcome.SUCCESS,
    flow_service_pb2.TASK_OUTCOME_FAILURE: TaskOutcome.FAILURE,
}
_BRANCH: Mapping[int, Branch] = {
    flow_service_pb2.BRANCH_SUCCESS: Branch.SUCCESS,
    flow_service_pb2.BRANCH_FAILURE: Branch.FAILURE,
}


class Resumer:
    """Takes over abandoned executions and runs them on in this process."""

    def __init__(self, engine: Engine, store: ExecutionStore, running: RunningExecutions):
        self._engine = engine
        self._store = store
        self._running = running

    @property
    def capacity(self) -> int:
        """How many more executions the engine admits now."""
        return self._engine.capacity

    async def take_over(self, limit: int, execution_id: str = "") -> int:
        """Claims up to `limit` abandoned executions (or only `execution_id`) and resumes them.

        Returns how many it claimed. The claim is shielded: once the store
        has given an execution to this process, it is resumed even if the
        caller is cancelled meanwhile.
        """
        claims = await asyncio.shield(self._store.claim(limit, execution_id))
        for claim in claims:
            if not self._running.has(claim.execution.record.execution_id):
                self._running.in_background(self._resumed(claim))
        return len(claims)

    @contextlib.asynccontextmanager
    async def standing_by(self, execution_id: str) -> AsyncIterator[None]:
        """While the block runs, takes the execution over as soon as its owner is gone."""
        watch = asyncio.get_running_loop().create_task(self._stand_by(execution_id))
        try:
            yield
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _stand_by(self, execution_id: str) -> None:
        interval = min(_LONGEST_STANDBY_POLL, self._store.lease_seconds / 3)
        while True:
            if not self._running.has(execution_id):
                try:
                    if await self.take_over(1, execution_id):
                        return
                    stored = await self._store.get(execution_id)
                except StoreUnavailableError:
                    stored = None  # the waiting caller's own reads say so
                if stored is None or stored.status != RUNNING:
                    return
            await asyncio.sleep(interval)

    async def _resumed(self, claim: Claim) -> None:
        """Resumes one claimed execution to its end (or records why it cannot)."""
        stored = claim.execution
        execution_id = stored.record.execution_id
        if claim.cancel_requested:
            await record_cancelled(self._store, execution_id)
            return
        try:
            history = await self._store.events(execution_id)
            run = self._run(stored, history)
        except StoreUnavailableError:
            return  # not resumed: its lease runs out, and it is claimed again
        except FlowServiceError as exc:  # the flow does not run here any more
            await self._give_up(stored, exc)
            return
        logger.info(
            "resuming execution %s after %d stored events",
            execution_id,
            len(history),
            extra={"execution_id": execution_id},
        )
        await _drain(run, execution_id)

    def _run(
        self, stored: StoredExecution, history: Sequence[StoredEvent]
    ) -> AsyncGenerator[tuple[Event, flow_service_pb2.ExecuteStreamResponse | None], None]:
        """The recorded run that continues `stored` after its `history`."""
        record = stored.record
        request = flow_service_pb2.ExecuteRequest.FromString(record.request)
        events = self._engine.run(
            flow_from_request(request),
            flow_input=input_from_request(request),
            stubs=stubs_from_request(request),
            # The deadline of the call that started it, counted from its start as
            # every time limit of a resumed execution is.
            time_allowed=record.time_allowed,
            resume=resumption_from_history(stored, history),
        )
        return recorded(
            events,
            self._store,
            self._running,
            record.request,
            record.request_id,
            resumed=record.execution_id,
            streamed=False,  # nobody listens; its events are written one by one (resumed)
        )

    async def _give_up(self, stored: StoredExecution, exc: Exception) -> None:
        """Records an execution that cannot be resumed as FAILED, saying why."""
        record = stored.record
        logger.error(
            "execution %s cannot be resumed: %s",
            record.execution_id,
            exc,
            extra={"execution_id": record.execution_id},
        )
        summary = flow_service_pb2.ExecuteResponse(
            flow_id=record.flow_id,
            status=flow_service_pb2.EXECUTION_STATUS_FAILED,
            execution_id=record.execution_id,
            error=f"the execution could not be resumed after its server stopped: {exc}",
            error_type=NOT_RESUMABLE,
            start_time=_timestamp(record.started_at),
        )
        with contextlib.suppress(StoreUnavailableError, LeaseLostError):
            await self._store.finish(
                record.execution_id,
                ExecutionStatus.FAILED.value,
                summary.SerializeToString(),
                datetime.now(UTC),
            )


async def _drain(
    run: AsyncGenerator[tuple[Event, flow_service_pb2.ExecuteStreamResponse | None], None],
    execution_id: str,
) -> None:
    """Runs a resumed execution to its end, detached; logs what ends it early."""
    try:
        async with contextlib.aclosing(run):
            async for _ in run:
                pass
    except (ExecutionCancelledError, LeaseLostError):
        pass  # CancelExecution ended it, or another process owns it now
    except FlowServiceError as exc:  # the engine was full, the store failed: its lease runs out
        logger.warning(
            "resuming execution %s stopped: %s",
            execution_id,
            exc,
            extra={"execution_id": execution_id},
        )
    except Exception as exc:
        logger.error(
            "a resumed execution failed to run to its end",
            exc_info=exc,
            extra={"execution_id": execution_id},
        )


def resumption_from_history(stored: StoredExecution, history: Sequence[StoredEvent]) -> Resumption:
    """Where the engine goes on with `stored`: after its stored events `history`.

    A history read back always has the `condition_evaluated` of its last run's
    decision (a stored `task_finished` implies it: `stored_messages`), so the
    resumed engine never emits one of its own.
    """
    messages = stored_messages(stored, history)
    return Resumption(
        execution_id=stored.record.execution_id,
        started_at=stored.record.started_at,
        last_sequence=messages[-1].sequence if messages else 0,  # implied ones count
        results=tuple(
            task_result_from_proto(message.task_finished.result)
            for message in messages
            if message.HasField("task_finished")
        ),
    )


def task_result_from_proto(message: flow_service_pb2.TaskResult) -> TaskResult:
    """The domain result a `TaskResult` message holds (the inverse of `task_result_to_proto`).

    Numbers in its output come back as floats, as a JSON reader would give them.
    """
    decision = None
    if message.HasField("decision"):
        d = message.decision
        decision = Decision(
            d.condition,
            d.condition_index,
            d.source_task,
            d.expected_outcome,
            d.expression,
            _OUTCOME[d.actual_outcome],
            d.value,
            _BRANCH[d.branch],
            d.next_task,
            d.links_tested,
        )
    return TaskResult(
        task=message.task,
        outcome=_OUTCOME[message.outcome],
        step=message.step,
        started_at=message.start_time.ToDatetime(tzinfo=UTC),
        duration=message.duration.ToTimedelta(),
        output=struct_to_json(message.output, "output")[0],
        error=message.error,
        error_type=message.error_type,
        attempts=message.attempts,
        stubbed=message.stubbed,
        inputs=struct_to_json(message.inputs, "inputs")[0],
        decision=decision,
    )


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
