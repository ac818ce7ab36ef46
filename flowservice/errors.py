"""Every error the domain raises, in one place.

Hierarchy::

    FlowServiceError              base of every error raised on purpose
    ├── InvalidFlowError          the flow definition breaks one or more rules;
    │                             carries every `Violation` found
    │                             (INVALID_ARGUMENT with BadRequest details)
    ├── TooManyExecutionsError    the server runs as many executions as it
    │                             may; the call is shed (RESOURCE_EXHAUSTED)
    ├── TaskRegistrationError     a task implementation cannot be registered
    │                             (raised at start-up, never during a call)
    ├── AuthenticationError       the caller sent no usable credentials
    │                             (UNAUTHENTICATED; `reason` says why)
    ├── PermissionDeniedError     the caller is known but may not call the
    │                             RPC (PERMISSION_DENIED)
    ├── SecurityConfigError       a TLS, token or policy file cannot be used
    │                             (raised at start-up, never during a call)
    ├── MalformedRequestError     the request bytes are not the message the
    │                             method takes (INVALID_ARGUMENT)
    ├── TooManyCallsError         the server handles as many calls as it may;
    │                             the call is shed (RESOURCE_EXHAUSTED)
    ├── ServerShuttingDownError   the server is draining and ends a call that
    │                             would otherwise never end (UNAVAILABLE)
    ├── AssignmentNotFoundError   a worker's result names an assignment that
    │                             is unknown or already finished (NOT_FOUND)
    ├── TooManyWorkersError       the server has as many workers connected as
    │                             it may (RESOURCE_EXHAUSTED)
    ├── StoreUnavailableError     the execution history cannot be opened or
    │                             written (UNAVAILABLE)
    ├── ExecutionNotFoundError    the history has no execution by that id
    │                             (NOT_FOUND)
    ├── ExecutionFinishedError    the execution has finished: it cannot be
    │                             cancelled (FAILED_PRECONDITION)
    ├── ExecutionCancelledError   CancelExecution ended the execution this
    │                             call ran (CANCELLED)
    ├── LeaseLostError            this process no longer owns the execution
    │                             it ran: another took it over (UNAVAILABLE)
    ├── RequestIdReusedError      a request id names an execution started by
    │                             a request with other fields (ALREADY_EXISTS)
    ├── InvalidPageTokenError     a page token this server did not issue, or
    │                             for other filters (INVALID_ARGUMENT)
    └── InvalidWorkRequestError   a worker's request breaks the protocol;
                                  carries every `Violation` (INVALID_ARGUMENT)

A task that fails is not an error of this hierarchy: it is an outcome,
recorded in its `TaskResult`; nor is an execution that fails or runs out of
time: its `ExecutionSummary` says so (`status`, `error`, `error_type`).
Tasks may raise `flowservice.tasks.TaskFailure` to fail with a message and
an output.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AssignmentNotFoundError",
    "AuthenticationError",
    "ExecutionCancelledError",
    "ExecutionFinishedError",
    "ExecutionNotFoundError",
    "FlowServiceError",
    "InvalidFlowError",
    "InvalidPageTokenError",
    "InvalidWorkRequestError",
    "LeaseLostError",
    "MalformedRequestError",
    "PermissionDeniedError",
    "RequestIdReusedError",
    "SecurityConfigError",
    "ServerShuttingDownError",
    "StoreUnavailableError",
    "TaskRegistrationError",
    "TooManyCallsError",
    "TooManyExecutionsError",
    "TooManyWorkersError",
    "Violation",
]


@dataclass(frozen=True, slots=True)
class Violation:
    """One problem with one field of a request."""

    field: str
    """The path of the field, as in the request: `flow.conditions[1].outcome`."""
    description: str
    """What is wrong, for people."""
    reason: str
    """What is wrong, for programs: an UPPER_SNAKE_CASE code such as `UNKNOWN_TASK`."""
    limit: tuple[str, int] | None = None
    """The limit that was exceeded and its value, when a limit was (see `Limits`)."""


class FlowServiceError(Exception):
    """Base class of every error the domain raises on purpose."""


class InvalidFlowError(FlowServiceError):
    """The flow definition is invalid; `violations` lists every problem found."""

    def __init__(self, violations: tuple[Violation, ...]) -> None:
        self.violations = violations
        count = len(violations)
        first = f"{violations[0].field}: {violations[0].description}" if violations else ""
        if count > 1:
            # The count comes first: after a long description it would read as part of it.
            super().__init__(f"invalid flow, {count} problems (all in the details); first {first}")
        else:
            super().__init__(f"invalid flow: {first}")


class TooManyExecutionsError(FlowServiceError):
    """The server already runs `limit` executions; new ones are refused until some end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the server is running its limit of {limit} concurrent executions "
            "(max_concurrent_executions); retry later"
        )


class TaskRegistrationError(FlowServiceError):
    """A task implementation could not be registered."""


class AuthenticationError(FlowServiceError):
    """The call carries no credentials the server accepts.

    `reason` is the ErrorInfo reason: `UNAUTHENTICATED` (none sent),
    `INVALID_TOKEN`, `TOKEN_EXPIRED` or `TOKEN_NOT_YET_VALID`. The message
    is written here, never taken from a library's exception.
    """

    def __init__(self, reason: str, message: str, method: str = "") -> None:
        self.reason = reason
        self.method = method
        super().__init__(message)


class PermissionDeniedError(FlowServiceError):
    """`identity` is authenticated but the policy does not let it call `method`."""

    def __init__(self, identity: str, method: str) -> None:
        self.identity = identity
        self.method = method
        super().__init__(f"{identity} may not call {method}")


class SecurityConfigError(FlowServiceError):
    """A certificate, key, token or policy file cannot be used; the server does not start."""


class MalformedRequestError(FlowServiceError):
    """The request bytes do not parse as the method's request message.

    Raised for bytes that are not protobuf at all and for messages nested
    deeper than protobuf's recursion limit (100), e.g. in a `params` Struct.
    """

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type
        super().__init__(f"the request is not a valid {message_type} message")


class TooManyCallsError(FlowServiceError):
    """The server already handles `limit` calls; new ones are refused until some end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the server is handling its limit of {limit} concurrent calls "
            "(max_concurrent_rpcs); retry later"
        )


class ServerShuttingDownError(FlowServiceError):
    """The server is shutting down; a call that never ends by itself (a health watch) ends."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down; reconnect to another instance")


class StoreUnavailableError(FlowServiceError):
    """The execution history cannot be opened or written; `problem` says why."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"the execution history is unavailable: {problem}")


class ExecutionNotFoundError(FlowServiceError):
    """The history holds no execution `execution_id` (never run, or past the retention)."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        super().__init__(f"no execution {execution_id!r} in the history")


class ExecutionFinishedError(FlowServiceError):
    """Execution `execution_id` has finished, with `status`; it cannot be cancelled."""

    def __init__(self, execution_id: str, status: str) -> None:
        self.execution_id = execution_id
        self.status = status
        super().__init__(f"execution {execution_id!r} has finished ({status})")


class ExecutionCancelledError(FlowServiceError):
    """`CancelExecution` cancelled execution `execution_id`, which this call was running."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        super().__init__(f"execution {execution_id!r} was cancelled by CancelExecution")


class LeaseLostError(FlowServiceError):
    """This process lost execution `execution_id` to another owner; the store refused its write.

    Its lease expired (the process stalled, or the store was out of reach)
    and another process claimed it, and now runs it from its last finished
    task (docs/durability.md). A caller retrying with the same request id
    reaches that run.
    """

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        super().__init__(
            f"execution {execution_id!r} was taken over by another server process; "
            "retry with the same request_id to follow it"
        )


class RequestIdReusedError(FlowServiceError):
    """`request_id` started execution `execution_id` with a request that differs from this one."""

    def __init__(self, request_id: str, execution_id: str) -> None:
        self.request_id = request_id
        self.execution_id = execution_id
        super().__init__(
            f"request_id {request_id!r} started execution {execution_id!r} with another request"
        )


class InvalidPageTokenError(FlowServiceError):
    """A page token that this server did not issue, or issued for other filters."""

    def __init__(self) -> None:
        super().__init__("page_token is not one this server issued for these filters")


class AssignmentNotFoundError(FlowServiceError):
    """No assignment `assignment_id` awaits a result: unknown, answered or cancelled."""

    def __init__(self, assignment_id: str) -> None:
        self.assignment_id = assignment_id
        super().__init__(
            "no assignment with this id awaits a result: it is unknown, already "
            "answered, or was cancelled"
        )


class TooManyWorkersError(FlowServiceError):
    """The server already has `limit` workers connected; new ones are refused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the server has its limit of {limit} workers connected (max_worker_streams)"
        )


class InvalidWorkRequestError(FlowServiceError):
    """A worker's request is invalid; `violations` lists every problem found."""

    def __init__(self, violations: tuple[Violation, ...]) -> None:
        self.violations = violations
        first = violations[0]
        super().__init__(f"invalid request: {first.field}: {first.description}")
