"""Conversions between the flow registry and `flowmanager.v1.FlowRegistryService` messages.

A version's body is the bytes of its `Flow` message, serialized
deterministically (map entries, `Struct` fields among them, sorted by key),
so that the same flow always has the same digest. Page tokens are opaque to
callers (AIP-158): base64 JSON of the position, and for versions the flow
they page through.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from flowmanager.v1 import flow_pb2
from flowmanager.v1 import flow_registry_service_pb2 as pb
from flowservice.errors import InvalidPageTokenError, Violation
from flowservice.limits import Limits
from flowservice.registry import FlowVersion

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "flow_body",
    "flow_id_problems",
    "page_size",
    "position",
    "token",
    "version_to_proto",
]

DEFAULT_PAGE_SIZE = 50
"""The page size of a list request that sets none."""

_FLOW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def flow_body(flow: flow_pb2.Flow) -> bytes:
    """The bytes the registry keeps of `flow`: equal flows give equal bytes."""
    return flow.SerializeToString(deterministic=True)


def flow_id_problems(flow_id: str, limits: Limits) -> tuple[Violation, ...]:
    """What keeps `flow_id` from naming a flow of the registry (`flow.id`); () when fine."""
    if not flow_id:
        return (Violation("flow.id", "a flow needs an id to be stored", "MISSING_FLOW_ID"),)
    limit = limits.max_flow_id_length
    if len(flow_id) > limit:
        description = f"{len(flow_id)} characters, above the limit of {limit} (max_flow_id_length)"
        return (
            Violation(
                "flow.id", description, "FLOW_ID_TOO_LONG", limit=("max_flow_id_length", limit)
            ),
        )
    if not _FLOW_ID.fullmatch(flow_id):
        description = "only letters, digits, '-', '_' and '.', starting with a letter or digit"
        return (Violation("flow.id", description, "INVALID_FLOW_ID"),)
    return ()


def version_to_proto(version: FlowVersion) -> pb.FlowVersion:
    """The `FlowVersion` message of `version`; its `flow` is set when it has a body."""
    message = pb.FlowVersion(
        flow_id=version.flow_id,
        version=version.version,
        digest=version.digest,
        flow_name=version.name,
    )
    message.create_time.FromDatetime(version.created_at)
    if version.body:
        message.flow.ParseFromString(version.body)
    return message


def page_size(requested: int, limits: Limits) -> int:
    """The page size of a list request: its own, the default for 0, at most the limit."""
    size = requested if requested > 0 else DEFAULT_PAGE_SIZE
    return min(size, limits.max_flows_page_size)


def token(**where: Any) -> str:
    """The page token of a position (`position` reads it back)."""
    return base64.urlsafe_b64encode(json.dumps(where, sort_keys=True).encode()).decode()


def position(page_token: str, **expected: Any) -> dict[str, Any]:
    """The position in `page_token`; InvalidPageTokenError unless it has `expected`'s values.

    Callers read the values they need; a token made for other arguments
    (another flow's versions) is refused.
    """
    try:
        where = json.loads(base64.urlsafe_b64decode(page_token.encode()))
        if not isinstance(where, dict) or any(where.get(k) != v for k, v in expected.items()):
            raise InvalidPageTokenError
        return where
    except (ValueError, binascii.Error):
        raise InvalidPageTokenError from None
