"""Conversions between the history's records and `flowmanager.v1.ExecutionService` messages.

The store keeps the bytes of the messages themselves (requests, events,
summaries), so an `Execution` is mostly parsed back; page tokens are opaque
to callers (AIP-158) and carry the position and the filters they were made for.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2
from flowservice.errors import InvalidPageTokenError
from flowservice.history import RUNNING, ExecutionQuery, StoredExecution
from flowservice.models import ExecutionStatus

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "execution_to_proto",
    "next_page_token",
    "query_from_request",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_STATUS: Mapping[str, flow_service_pb2.ExecutionStatus] = {
    ExecutionStatus.COMPLETED.value: flow_service_pb2.EXECUTION_STATUS_COMPLETED,
    ExecutionStatus.FAILED.value: flow_service_pb2.EXECUTION_STATUS_FAILED,
    ExecutionStatus.CANCELLED.value: flow_service_pb2.EXECUTION_STATUS_CANCELLED,
    ExecutionStatus.TIMED_OUT.value: flow_service_pb2.EXECUTION_STATUS_TIMED_OUT,
}
_STATUS_NAMES = {number: name for name, number in _STATUS.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    """Exact microseconds since the epoch (a float timestamp may be one off)."""
    since = moment - _EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def execution_to_proto(stored: StoredExecution, *, with_request: bool = True) -> pb.Execution:
    """The `Execution` message of `stored`; `with_request` False leaves its request out."""
    record = stored.record
    message = pb.Execution(
        execution_id=record.execution_id,
        flow_id=record.flow_id,
        caller_request_id=record.caller_request_id,
    )
    message.start_time.FromDatetime(record.started_at)
    if stored.status == RUNNING:
        message.state = pb.EXECUTION_STATE_RUNNING
    else:
        message.state = pb.EXECUTION_STATE_FINISHED
        message.status = _STATUS[stored.status]
    if stored.finished_at is not None:
        message.end_time.FromDatetime(stored.finished_at)
    if stored.summary:
        message.result.ParseFromString(stored.summary)
    request = message.request if with_request else flow_service_pb2.ExecuteRequest()
    request.ParseFromString(record.request)
    message.flow_version = request.flow_ref.version  # 0 for a flow sent inline
    return message


def query_from_request(request: pb.ListExecutionsRequest) -> ExecutionQuery:
    """The store query of a `ListExecutions` request; InvalidPageTokenError for a bad token."""
    size = request.page_size if request.page_size > 0 else DEFAULT_PAGE_SIZE
    status = ""
    if request.state == pb.EXECUTION_STATE_RUNNING:
        status = RUNNING
    if request.status:
        status = _STATUS_NAMES.get(request.status, "?")
    query = ExecutionQuery(
        limit=min(size, MAX_PAGE_SIZE),
        flow_id=request.flow_id,
        status=status,
        started_after=_time(request, "start_time_from"),
        started_before=_time(request, "start_time_to"),
    )
    if not request.page_token:
        return query
    started, execution_id = _decode(request.page_token, _filters(request))
    return ExecutionQuery(
        limit=query.limit,
        flow_id=query.flow_id,
        status=query.status,
        started_after=query.started_after,
        started_before=query.started_before,
        after=(started, execution_id),
    )


def next_page_token(request: pb.ListExecutionsRequest, last: StoredExecution) -> str:
    """The token of the page after the one that ends with `last`."""
    position = {
        "t": _micros(last.record.started_at),
        "id": last.record.execution_id,
        "f": _filters(request),
    }
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _decode(token: str, filters: str) -> tuple[datetime, str]:
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
        if position["f"] != filters:
            raise InvalidPageTokenError
        return _EPOCH + timedelta(microseconds=int(position["t"])), str(position["id"])
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error):
        raise InvalidPageTokenError from None


def _filters(request: pb.ListExecutionsRequest) -> str:
    """The filters of `request`, which its page tokens must keep (AIP-158)."""
    copy = pb.ListExecutionsRequest()
    copy.CopyFrom(request)
    copy.ClearField("page_token")
    copy.ClearField("page_size")
    return base64.b64encode(copy.SerializeToString(deterministic=True)).decode()


def _time(request: pb.ListExecutionsRequest, field: str) -> datetime | None:
    if not request.HasField(field):
        return None
    moment: datetime = getattr(request, field).ToDatetime(tzinfo=UTC)
    return moment
