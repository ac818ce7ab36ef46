"""The one place that turns an exception into the gRPC status a client sees.

Domain errors map to their status code with AIP-193 details (`ErrorInfo`,
plus `BadRequest` field violations for an invalid flow, and `RetryInfo` on
the calls the server sheds under load, which a retry may well get through). Anything unexpected
becomes INTERNAL with a plain message and an incident id that is also in the
server log; the exception's text never reaches the client.

| what                          | code               | ErrorInfo reason     |
|-------------------------------|--------------------|----------------------|
| InvalidFlowError              | INVALID_ARGUMENT   | INVALID_FLOW         |
| MalformedRequestError         | INVALID_ARGUMENT   | MALFORMED_REQUEST    |
| TooManyExecutionsError        | RESOURCE_EXHAUSTED | TOO_MANY_EXECUTIONS  |
| TooManyCallsError             | RESOURCE_EXHAUSTED | TOO_MANY_CALLS       |
| a TIMED_OUT execution summary | DEADLINE_EXCEEDED  | DEADLINE_EXCEEDED    |
| AuthenticationError           | UNAUTHENTICATED    | its `reason` (1)     |
| PermissionDeniedError         | PERMISSION_DENIED  | PERMISSION_DENIED    |
| ServerShuttingDownError       | UNAVAILABLE        | SERVER_SHUTTING_DOWN |
| AssignmentNotFoundError       | NOT_FOUND          | ASSIGNMENT_NOT_FOUND |
| TooManyWorkersError           | RESOURCE_EXHAUSTED | TOO_MANY_WORKERS     |
| InvalidWorkRequestError       | INVALID_ARGUMENT   | INVALID_WORK_REQUEST |
| anything else                 | INTERNAL           | INTERNAL             |

TOO_MANY_CALLS and TOO_MANY_EXECUTIONS carry `RetryInfo`: the call was refused
before any work, so a retry after the delay is safe. A timed-out execution is
not an error the domain raises: it is a summary, which `timed_out_status`
turns into the call's status.

(1) UNAUTHENTICATED (no credentials), INVALID_TOKEN, TOKEN_EXPIRED or
TOKEN_NOT_YET_VALID; the auth errors' metadata carry the `method`.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from flowservice.errors import (
    AssignmentNotFoundError,
    AuthenticationError,
    ExecutionCancelledError,
    ExecutionFinishedError,
    ExecutionNotFoundError,
    InvalidFlowError,
    InvalidPageTokenError,
    InvalidWorkRequestError,
    LeaseLostError,
    MalformedRequestError,
    PermissionDeniedError,
    RequestIdReusedError,
    ServerShuttingDownError,
    StoreUnavailableError,
    TooManyCallsError,
    TooManyExecutionsError,
    TooManyWorkersError,
    Violation,
)
from flowservice.models import ExecutionSummary

__all__ = ["ERROR_DOMAIN", "status_for", "timed_out_status"]

ERROR_DOMAIN = "flowmanager"
"""The `ErrorInfo.domain` of every error this service raises."""

# Error details travel in trailing metadata, which clients cap (8 KiB by
# default in grpc); field violations beyond this many bytes are counted, not sent.
_MAX_VIOLATION_BYTES = 4 * 1024

# The RetryInfo delay of a shed call: long enough for some executions to end,
# short against a typical deadline. Clients add their own backoff and jitter.
_SHED_RETRY_DELAY = duration_pb2.Duration(seconds=1)

logger = logging.getLogger(__name__)


def status_for(exc: Exception) -> grpc.Status:
    """The status to send for `exc`, raised while handling a call."""
    match exc:
        case InvalidFlowError():
            return _invalid_flow(exc)
        case NotImplementedError():
            # What grpc's generated and health servicers raise for a method
            # they do not implement (Health/List): not a fault of the server.
            return _status(
                code_pb2.UNIMPLEMENTED, "method not implemented", _error_info("UNIMPLEMENTED")
            )
        case TooManyExecutionsError():
            info = _error_info(
                "TOO_MANY_EXECUTIONS",
                limit="max_concurrent_executions",
                limit_value=str(exc.limit),
            )
            return _status(code_pb2.RESOURCE_EXHAUSTED, str(exc), info, _retry_info())
        case TooManyCallsError():
            info = _error_info(
                "TOO_MANY_CALLS", limit="max_concurrent_rpcs", limit_value=str(exc.limit)
            )
            return _status(code_pb2.RESOURCE_EXHAUSTED, str(exc), info, _retry_info())
        case MalformedRequestError():
            info = _error_info("MALFORMED_REQUEST", message_type=exc.message_type)
            return _status(code_pb2.INVALID_ARGUMENT, str(exc), info)
        case ServerShuttingDownError():
            return _status(code_pb2.UNAVAILABLE, str(exc), _error_info("SERVER_SHUTTING_DOWN"))
        case StoreUnavailableError():
            # The problem (a path, an SQLite error) is the operator's: it is in the log.
            message = "the server cannot record executions now; retry later or elsewhere"
            info = _error_info("STORE_UNAVAILABLE")
            return _status(code_pb2.UNAVAILABLE, message, info, _retry_info())
        case AuthenticationError():
            info = _error_info(exc.reason, method=exc.method)
            return _status(code_pb2.UNAUTHENTICATED, str(exc), info)
        case PermissionDeniedError():
            info = _error_info("PERMISSION_DENIED", method=exc.method, identity=exc.identity)
            return _status(code_pb2.PERMISSION_DENIED, str(exc), info)
    known = _worker_status(exc) or _history_status(exc)
    if known is not None:
        return known
    incident = str(uuid.uuid4())
    logger.error("unexpected error while handling a call; incident %s", incident, exc_info=exc)
    return _status(
        code_pb2.INTERNAL,
        f"internal error; the server logged it as incident {incident}",
        _error_info("INTERNAL", incident_id=incident),
    )


def timed_out_status(summary: ExecutionSummary) -> grpc.Status:
    """DEADLINE_EXCEEDED for an execution that ran out of time, saying which limit and how far."""
    limit = summary.time_limit
    info = _error_info(
        "DEADLINE_EXCEEDED",
        limit=limit.name if limit else "",
        limit_value=f"{limit.seconds:.3g}s" if limit else "",
        execution_id=summary.execution_id,
        executed_tasks=",".join(summary.executed_tasks)[:1024],
    )
    return _status(code_pb2.DEADLINE_EXCEEDED, summary.error or "deadline exceeded", info)


def _worker_status(exc: Exception) -> grpc.Status | None:
    """The status of an error of the WorkerService; None for any other error."""
    match exc:
        case AssignmentNotFoundError():
            info = _error_info("ASSIGNMENT_NOT_FOUND", assignment_id=exc.assignment_id[:128])
            return _status(code_pb2.NOT_FOUND, str(exc), info)
        case TooManyWorkersError():
            info = _error_info(
                "TOO_MANY_WORKERS", limit="max_worker_streams", limit_value=str(exc.limit)
            )
            return _status(code_pb2.RESOURCE_EXHAUSTED, str(exc), info)
        case InvalidWorkRequestError():
            info = _error_info("INVALID_WORK_REQUEST", violations=str(len(exc.violations)))
            return _status(code_pb2.INVALID_ARGUMENT, str(exc), info, _bad_request(exc.violations))
    return None


def _history_status(exc: Exception) -> grpc.Status | None:
    """The status of an error of the ExecutionService; None for any other error."""
    match exc:
        case ExecutionNotFoundError():
            info = _error_info("EXECUTION_NOT_FOUND", execution_id=exc.execution_id[:128])
            return _status(code_pb2.NOT_FOUND, str(exc), info)
        case ExecutionCancelledError():
            info = _error_info("EXECUTION_CANCELLED", execution_id=exc.execution_id)
            return _status(code_pb2.CANCELLED, str(exc), info)
        case ExecutionFinishedError():
            info = _error_info(
                "EXECUTION_FINISHED", execution_id=exc.execution_id, status=exc.status
            )
            return _status(code_pb2.FAILED_PRECONDITION, str(exc), info)
        case RequestIdReusedError():
            info = _error_info(
                "REQUEST_ID_REUSED",
                request_id=exc.request_id[:128],
                execution_id=exc.execution_id,
            )
            return _status(code_pb2.ALREADY_EXISTS, str(exc), info)
        case InvalidPageTokenError():
            violation = Violation("page_token", str(exc), "INVALID_PAGE_TOKEN")
            info = _error_info("INVALID_PAGE_TOKEN")
            return _status(code_pb2.INVALID_ARGUMENT, str(exc), info, _bad_request((violation,)))
        case LeaseLostError():
            # Another process runs it on: a retry with the same request_id follows it there.
            info = _error_info("EXECUTION_TAKEN_OVER", execution_id=exc.execution_id)
            return _status(code_pb2.UNAVAILABLE, str(exc), info, _retry_info())
    return None


def _bad_request(violations: tuple[Violation, ...]) -> error_details_pb2.BadRequest:
    """Field violations, as many as fit in `_MAX_VIOLATION_BYTES`."""
    bad_request = error_details_pb2.BadRequest()
    for violation in violations:
        field_violation = bad_request.field_violations.add(
            field=violation.field, description=violation.description, reason=violation.reason
        )
        if bad_request.ByteSize() > _MAX_VIOLATION_BYTES:
            bad_request.field_violations.remove(field_violation)
            break
    return bad_request


def _invalid_flow(exc: InvalidFlowError) -> grpc.Status:
    bad_request = _bad_request(exc.violations)
    metadata = {
        "violations": str(len(exc.violations)),
        "violations_in_details": str(len(bad_request.field_violations)),
        "reasons": ",".join(sorted({violation.reason for violation in exc.violations})),
    }
    for violation in exc.violations:
        if violation.limit is not None:
            name, value = violation.limit
            # `limit` names the first limit exceeded, as the message does;
            # `limit.<name>` lists every one.
            metadata.setdefault("limit", name)
            metadata.setdefault("limit_value", str(value))
            metadata[f"limit.{name}"] = str(value)
    return _status(
        code_pb2.INVALID_ARGUMENT, str(exc), _error_info("INVALID_FLOW", **metadata), bad_request
    )


def _error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)


def _retry_info() -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(retry_delay=_SHED_RETRY_DELAY)


def _status(code: int, message: str, *details: Message) -> grpc.Status:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))
