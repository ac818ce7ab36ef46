"""The `flowmanager.v1.FlowRegistryService` servicer: flows stored by id, in versions.

`CreateFlow` checks the flow as `Validate` does, with the same engine, and
also that its `id` can name it in the registry; an invalid flow fails with
the same INVALID_ARGUMENT details as `Execute`, and warnings come back in
the response. The registry decides whether the body is new. Errors end the
call in `RpcObserver` through `status_for`, as for the other services.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc

from flowmanager.v1 import flow_registry_service_pb2 as pb
from flowmanager.v1 import flow_registry_service_pb2_grpc
from flowservice.api.convert import flow_from_proto, validation_to_proto
from flowservice.api.registry_convert import (
    flow_body,
    flow_id_problems,
    page_size,
    position,
    token,
    version_to_proto,
)
from flowservice.engine import Engine
from flowservice.errors import InvalidFlowError, InvalidPageTokenError, Violation
from flowservice.limits import Limits
from flowservice.registry import FlowRegistry, find_version

__all__ = ["RegistryServicer"]

_Context = grpc.aio.ServicerContext[Any, Any]


class RegistryServicer(flow_registry_service_pb2_grpc.FlowRegistryServiceServicer):
    """Serves `registry`, validating flows with `engine` within `limits`."""

    def __init__(self, engine: Engine, registry: FlowRegistry, limits: Limits) -> None:
        self._engine = engine
        self._registry = registry
        self._limits = limits

    async def CreateFlow(
        self, request: pb.CreateFlowRequest, context: _Context
    ) -> pb.CreateFlowResponse:
        """Validates the flow and stores it as a new version, unless it is the latest one."""
        if not request.HasField("flow"):
            raise InvalidFlowError((Violation("flow", "flow is required", "MISSING_FLOW"),))
        problems = flow_id_problems(request.flow.id, self._limits)
        try:
            report = self._engine.validate(flow_from_proto(request.flow))
        except InvalidFlowError as unconvertible:
            raise InvalidFlowError(problems + unconvertible.violations) from None
        if problems or report.errors:
            raise InvalidFlowError(problems + report.errors)
        stored, created = await self._registry.create(
            request.flow.id, request.flow.name, flow_body(request.flow), datetime.now(UTC)
        )
        return pb.CreateFlowResponse(
            flow=version_to_proto(stored),
            created=created,
            warnings=validation_to_proto(report).warnings,
        )

    async def GetFlow(self, request: pb.GetFlowRequest, context: _Context) -> pb.GetFlowResponse:
        """The version asked for (0: the latest), with its body; NOT_FOUND if none."""
        found = await find_version(self._registry, request.flow_id, request.version)
        return pb.GetFlowResponse(flow=version_to_proto(found))

    async def ListFlows(
        self, request: pb.ListFlowsRequest, context: _Context
    ) -> pb.ListFlowsResponse:
        """A page of flows, by id: the latest version of each, without bodies."""
        size = page_size(request.page_size, self._limits)
        after = _text(position(request.page_token), "after") if request.page_token else ""
        found = await self._registry.list_flows(size + 1, after)
        response = pb.ListFlowsResponse(flows=[version_to_proto(v) for v in found[:size]])
        if len(found) > size:
            response.next_page_token = token(after=found[size - 1].flow_id)
        return response

    async def ListFlowVersions(
        self, request: pb.ListFlowVersionsRequest, context: _Context
    ) -> pb.ListFlowVersionsResponse:
        """A page of the flow's versions, newest first, without bodies."""
        size = page_size(request.page_size, self._limits)
        before = 0
        if request.page_token:
            before = _number(position(request.page_token, flow_id=request.flow_id), "before")
        found = await self._registry.list_versions(request.flow_id, size + 1, before)
        if not found and not before:
            await find_version(self._registry, request.flow_id)  # FlowNotFoundError
        response = pb.ListFlowVersionsResponse(versions=[version_to_proto(v) for v in found[:size]])
        if len(found) > size:
            response.next_page_token = token(
                flow_id=request.flow_id, before=found[size - 1].version
            )
        return response


def _text(where: dict[str, Any], key: str) -> str:
    """The string at `key` of a page token's position; InvalidPageTokenError if none."""
    value = where.get(key)
    if not isinstance(value, str):
        raise InvalidPageTokenError
    return value


def _number(where: dict[str, Any], key: str) -> int:
    """The positive int at `key` of a page token's position; InvalidPageTokenError if none."""
    value = where.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidPageTokenError
    return value
