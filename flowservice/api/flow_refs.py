"""Requests that name a flow of the registry (`flow_ref`) instead of carrying it.

`Execute`, `ExecuteStream`, `StartExecution` and `Validate` take exactly one
of `flow` and `flow_ref`. `resolved` turns a request by reference into the
request the engine runs and the history keeps: the registry's body in
`flow`, and in `flow_ref.version` the version it is (a reference to the
latest version is pinned to the one that ran). A request with its flow
inline passes through unchanged.
"""

from __future__ import annotations

from typing import TypeVar

from flowmanager.v1 import execution_service_pb2, flow_service_pb2
from flowservice.errors import InvalidFlowError, Violation
from flowservice.registry import FlowRegistry, find_version

__all__ = ["resolved"]

_Request = TypeVar(
    "_Request",
    flow_service_pb2.ExecuteRequest,
    flow_service_pb2.ExecuteStreamRequest,
    flow_service_pb2.ValidateRequest,
    execution_service_pb2.StartExecutionRequest,
)


async def resolved(request: _Request, registry: FlowRegistry) -> _Request:
    """`request` with the flow its `flow_ref` names (see the module docstring).

    Raises InvalidFlowError when both `flow` and `flow_ref` are set or the
    reference is malformed, FlowNotFoundError when the registry has no such
    flow or version. A request with neither is returned as is: converting it
    reports the missing flow (`MISSING_FLOW`), as it always has.
    """
    if not request.HasField("flow_ref"):
        return request
    if request.HasField("flow"):
        raise InvalidFlowError(
            (Violation("flow_ref", "set either flow or flow_ref, not both", "FLOW_AND_FLOW_REF"),)
        )
    reference = request.flow_ref
    problems = []
    if not reference.flow_id:
        problems.append(Violation("flow_ref.flow_id", "flow_id is required", "MISSING_FLOW_ID"))
    if reference.version < 0:
        problems.append(
            Violation(
                "flow_ref.version", "a version is 1 or more, or 0 for the latest", "INVALID_VERSION"
            )
        )
    if problems:
        raise InvalidFlowError(tuple(problems))
    found = await find_version(registry, reference.flow_id, reference.version)
    copy = type(request)()
    copy.CopyFrom(request)
    copy.flow.ParseFromString(found.body)
    copy.flow_ref.version = found.version
    return copy
