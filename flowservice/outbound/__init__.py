"""Calls from flows to other services: the allow-list, shared headers, the `http` task.

Nothing here imports grpc: the `grpc` task type lives in
`flowservice.api.grpc_task`, beside the rest of the transport.
"""

from flowservice.outbound.headers import outbound_headers
from flowservice.outbound.http_task import HttpTask
from flowservice.outbound.targets import TARGET_NOT_ALLOWED, OutboundPolicy, TargetNotAllowed

__all__ = [
    "TARGET_NOT_ALLOWED",
    "HttpTask",
    "OutboundPolicy",
    "TargetNotAllowed",
    "outbound_headers",
]
