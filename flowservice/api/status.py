"""The one place that turns an exception into the gRPC status a client sees.

Domain errors map to their status code with AIP-193 details (`ErrorInfo`,
plus `BadRequest` field violations for an invalid flow). Anything unexpected
becomes INTERNAL with a plain message and an incident id that is also in the
server log; the exception's text never reaches the client.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from flowservice.errors import FlowServiceError, InvalidFlowError

__all__ = ["ERROR_DOMAIN", "status_for"]

ERROR_DOMAIN = "flowmanager"
"""The `ErrorInfo.domain` of every error this service raises."""

logger = logging.getLogger(__name__)


def status_for(exc: Exception) -> grpc.Status:
    """The status to send for `exc`, raised while handling a call."""
    if isinstance(exc, InvalidFlowError):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=violation.field,
                    description=violation.description,
                    reason=violation.reason,
                )
                for violation in exc.violations
            ]
        )
        info = _error_info(
            "INVALID_FLOW",
            violations=str(len(exc.violations)),
            reasons=",".join(sorted({violation.reason for violation in exc.violations})),
        )
        return _status(code_pb2.INVALID_ARGUMENT, str(exc), info, bad_request)
    if isinstance(exc, FlowServiceError):
        logger.error("service error while handling a call", exc_info=exc)
        return _status(code_pb2.INTERNAL, str(exc), _error_info("SERVICE_ERROR"))
    incident = str(uuid.uuid4())
    logger.error("unexpected error while handling a call; incident %s", incident, exc_info=exc)
    return _status(
        code_pb2.INTERNAL,
        f"internal error; the server logged it as incident {incident}",
        _error_info("INTERNAL", incident_id=incident),
    )


def _error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)


def _status(code: int, message: str, *details: Message) -> grpc.Status:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))
