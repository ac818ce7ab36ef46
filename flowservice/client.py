"""A small typed async client for the Flow Manager, over the generated stubs.

`FlowClient` wraps one `grpc.aio` channel: `execute`, `stream`, `validate`
and `health`, each with an optional deadline (`timeout`, in seconds) and
metadata. It speaks the generated `flowmanager.v1` messages, so anything the
API can express the client can send. Every RPC error comes out as a
`FlowClientError` carrying the status code, the message and the decoded
AIP-193 details (`BadRequest` field violations, `ErrorInfo`), so callers
never dig through trailing metadata themselves. The history
(`start_execution`, ...) and the flow registry (`create_flow`, ...) have
their methods too.

A request is a generated message (a bare `Flow` or any of the three request
messages) or a dict holding a request's JSON form, the body grpcurl takes
(`{"flow": {...}, "input": {...}, "stubs": {...}}`); one body works for all
three RPCs. docs/python-client.md has a complete example.

```python
async with FlowClient("127.0.0.1:50051") as client:
    summary = await client.execute({"flow": flow}, input={"user": 42}, timeout=30)
    async for event in client.stream({"flow": flow}):
        print(event.WhichOneof("event"))
```

Create the client inside a running event loop: grpc.aio binds the channel
to the loop it was created on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeVar, cast

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from flowmanager.v1 import (
    execution_service_pb2,
    execution_service_pb2_grpc,
    flow_pb2,
    flow_registry_service_pb2,
    flow_registry_service_pb2_grpc,
    flow_service_pb2,
    flow_service_pb2_grpc,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "ErrorInfo",
    "FieldViolation",
    "FlowClient",
    "FlowClientError",
    "FlowRequest",
    "Metadata",
    "Stubs",
]

DEFAULT_ADDRESS: Final = "127.0.0.1:50051"
"""Where `make run` serves."""

FlowRequest = (
    flow_pb2.Flow
    | flow_service_pb2.ExecuteRequest
    | flow_service_pb2.ExecuteStreamRequest
    | flow_service_pb2.ValidateRequest
    | Mapping[str, Any]
)
"""What `execute`, `stream` and `validate` accept: a bare flow, any of the
three request messages, or a dict with a request's JSON form (`{"flow": ...,
"input": ..., "stubs": ...}`, proto field names or their lowerCamel forms)."""

Stubs = Mapping[str, flow_service_pb2.TaskStub | Mapping[str, Any]]
"""What-if stubs by task name: `TaskStub` messages or their JSON form
(`{"outcome": "TASK_OUTCOME_SUCCESS", "output": {...}}`)."""

Metadata = Sequence[tuple[str, str | bytes]]
"""gRPC metadata: (key, value) pairs; keys ending in `-bin` take bytes."""

# The server's responses carry every task output and may reach 64 MiB
# (server.MAX_RESPONSE_BYTES); grpc's client default of 4 MiB would refuse them.
_MAX_RECEIVE_BYTES = 64 * 1024 * 1024

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request, from a `google.rpc.BadRequest` detail."""

    field: str
    """The path of the field, as in the request: `flow.conditions[1].target_task_success`."""
    description: str
    """What is wrong, for people."""
    reason: str
    """What is wrong, for programs: an UPPER_SNAKE_CASE code such as `UNKNOWN_TASK_TYPE`."""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a call failed, for programs, from a `google.rpc.ErrorInfo` detail."""

    reason: str
    """An UPPER_SNAKE_CASE code such as `INVALID_FLOW` or `DEADLINE_EXCEEDED`."""
    domain: str
    """Who defined the reason: `flowmanager` for this service's own errors."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Values a program may need, such as `limit` and `limit_value`."""


class FlowClientError(Exception):
    """An RPC that ended with a non-OK status, with its decoded details.

    A flow that runs and fails is not one of these: it is a response with
    status `EXECUTION_STATUS_FAILED`.
    """

    code: grpc.StatusCode
    """The gRPC status code."""
    message: str
    """The status message."""
    field_violations: tuple[FieldViolation, ...]
    """The `BadRequest` field violations, one per problem; empty when none were sent."""
    error_info: ErrorInfo | None
    """The `ErrorInfo` detail, when the server sent one."""
    status: status_pb2.Status | None
    """The whole `google.rpc.Status`, for details this class does not decode."""
    address: str
    """The address of the server that was called."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        address: str,
        field_violations: Sequence[FieldViolation] = (),
        error_info: ErrorInfo | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.address = address
        self.field_violations = tuple(field_violations)
        self.error_info = error_info
        self.status = status

    @property
    def unreachable(self) -> bool:
        """True when no server answered at the address (nothing listening, or no route)."""
        return self.code is grpc.StatusCode.UNAVAILABLE

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError, address: str) -> FlowClientError:
        """The error for a failed call, with its `google.rpc.Status` details decoded."""
        try:
            # from_call reads only code(), details() and trailing_metadata(),
            # which AioRpcError has (synchronously), though the stubs ask for a Call.
            status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, error))
        except ValueError:
            # The details disagree with the call's own status: trust the call.
            status = None
        violations: list[FieldViolation] = []
        info: ErrorInfo | None = None
        for detail in status.details if status is not None else ():
            bad_request = error_details_pb2.BadRequest()
            error_info = error_details_pb2.ErrorInfo()
            # Unpack is true only when the detail holds that message type.
            if detail.Unpack(bad_request):
                violations.extend(
                    FieldViolation(v.field, v.description, v.reason)
                    for v in bad_request.field_violations
                )
            elif info is None and detail.Unpack(error_info):
                info = ErrorInfo(error_info.reason, error_info.domain, dict(error_info.metadata))
        return cls(
            error.code(),
            error.details() or "",
            address=address,
            field_violations=violations,
            error_info=info,
            status=status,
        )


class FlowClient:
    """An async client of one Flow Manager server; an async context manager.

    `timeout` and `metadata` given here apply to every call; a call's own
    `timeout` replaces the default, and its `metadata` is sent after the
    default's. By default (grpc's), a call fails at once with UNAVAILABLE
    when the server cannot be reached; `wait_for_ready=True` makes calls
    wait for it instead, until their deadline. `credentials` make the
    channel secure (TLS); `options` are grpc channel options.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        wait_for_ready: bool | None = None,
    ) -> None:
        channel_options = [("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES), *options]
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=channel_options)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=channel_options)
        self._address = address
        self._timeout = timeout
        self._metadata = tuple(metadata)
        self._wait_for_ready = wait_for_ready
        self._stub = flow_service_pb2_grpc.FlowServiceStub(self._channel)
        self._history = execution_service_pb2_grpc.ExecutionServiceStub(self._channel)
        self._registry = flow_registry_service_pb2_grpc.FlowRegistryServiceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    @property
    def address(self) -> str:
        """The server's address, as given."""
        return self._address

    async def __aenter__(self) -> Self:
        """The client itself; leaving the block closes it."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Closes the channel."""
        await self.close()

    async def close(self) -> None:
        """Closes the channel, cancelling calls still in flight."""
        await self._channel.close(None)

    async def execute(
        self,
        request: FlowRequest,
        *,
        input: Mapping[str, Any] | struct_pb2.Struct | None = None,
        stubs: Stubs | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> flow_service_pb2.ExecuteResponse:
        """Runs a flow to its end and returns its summary; `FlowClientError` on an RPC error.

        `request` is a bare `Flow` or a request message; `input` and `stubs`,
        when given, replace the request's own (on a copy). A flow that fails
        is a response with status `EXECUTION_STATUS_FAILED`, not an error.
        """
        message = _request(flow_service_pb2.ExecuteRequest, request, input, stubs)
        with self._errors():
            return await self._stub.Execute(message, **self._call_options(timeout, metadata))

    async def stream(
        self,
        request: FlowRequest,
        *,
        input: Mapping[str, Any] | struct_pb2.Struct | None = None,
        stubs: Stubs | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> AsyncGenerator[flow_service_pb2.ExecuteStreamResponse, None]:
        """Runs a flow and yields its events as they happen, `execution_finished` last.

        Arguments as for `execute`. An execution that runs out of time yields
        its finished event (status `EXECUTION_STATUS_TIMED_OUT`) and then
        raises `FlowClientError` with DEADLINE_EXCEEDED. Closing the
        generator (`aclose()`, or `contextlib.aclosing` around the loop)
        cancels the call, and with it the execution; a generator left
        unfinished is closed when it is garbage-collected.
        """
        message = _request(flow_service_pb2.ExecuteStreamRequest, request, input, stubs)
        call = self._stub.ExecuteStream(message, **self._call_options(timeout, metadata))
        try:
            with self._errors():
                async for event in call:
                    yield event
        finally:
            # A consumer that stops early (break, cancellation) must not leave
            # the server running a flow nobody listens to.
            call.cancel()

    async def validate(
        self,
        request: FlowRequest,
        *,
        input: Mapping[str, Any] | struct_pb2.Struct | None = None,
        stubs: Stubs | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> flow_service_pb2.ValidateResponse:
        """Checks a flow (and its input and stubs) without running it: errors and warnings.

        Arguments as for `execute`; the problems come back as data, not as errors.
        """
        message = _request(flow_service_pb2.ValidateRequest, request, input, stubs)
        with self._errors():
            return await self._stub.Validate(message, **self._call_options(timeout, metadata))

    async def health(
        self,
        service: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> health_pb2.HealthCheckResponse:
        """The server's health (`""`), or a service's (`"flowmanager.v1.FlowService"`).

        Compare `.status` with `HealthCheckResponse.SERVING`. A service the
        server does not know fails with NOT_FOUND.
        """
        request = health_pb2.HealthCheckRequest(service=service)
        with self._errors():
            return await self._health_check(request, **self._call_options(timeout, metadata))

    async def start_execution(
        self,
        request: FlowRequest,
        *,
        input: Mapping[str, Any] | struct_pb2.Struct | None = None,
        stubs: Stubs | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> execution_service_pb2.Execution:
        """Starts a flow detached from the call (`ExecutionService.StartExecution`); arguments
        as for `execute`. Returns the execution, usually still running."""
        message = _request(flow_service_pb2.ExecuteRequest, request, input, stubs)
        start = execution_service_pb2.StartExecutionRequest.FromString(message.SerializeToString())
        with self._errors():
            response = await self._history.StartExecution(
                start, **self._call_options(timeout, metadata)
            )
        return response.execution

    async def get_execution(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> execution_service_pb2.Execution:
        """One execution from the history; `FlowClientError` NOT_FOUND for an unknown id."""
        request = execution_service_pb2.GetExecutionRequest(execution_id=execution_id)
        with self._errors():
            response = await self._history.GetExecution(
                request, **self._call_options(timeout, metadata)
            )
        return response.execution

    async def list_executions(
        self,
        request: execution_service_pb2.ListExecutionsRequest | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> execution_service_pb2.ListExecutionsResponse:
        """A page of executions, newest first (filters and paging in `request`)."""
        message = request or execution_service_pb2.ListExecutionsRequest()
        with self._errors():
            return await self._history.ListExecutions(
                message, **self._call_options(timeout, metadata)
            )

    async def watch_execution(
        self,
        execution_id: str,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> AsyncGenerator[flow_service_pb2.ExecuteStreamResponse, None]:
        """The execution's events after `after_sequence`, then live until it finishes."""
        request = execution_service_pb2.WatchExecutionRequest(
            execution_id=execution_id, after_sequence=after_sequence
        )
        call = self._history.WatchExecution(request, **self._call_options(timeout, metadata))
        try:
            with self._errors():
                async for message in call:
                    yield message.event
        finally:
            call.cancel()  # only the watch: the execution goes on

    async def cancel_execution(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> execution_service_pb2.Execution:
        """Cancels a running execution; FAILED_PRECONDITION for a finished one."""
        request = execution_service_pb2.CancelExecutionRequest(execution_id=execution_id)
        with self._errors():
            response = await self._history.CancelExecution(
                request, **self._call_options(timeout, metadata)
            )
        return response.execution

    async def create_flow(
        self,
        flow: flow_pb2.Flow,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> flow_registry_service_pb2.CreateFlowResponse:
        """Stores `flow` in the registry under its `id` (`FlowRegistryService.CreateFlow`):
        the version, whether it is new, and the flow's warnings. An invalid flow
        fails with INVALID_ARGUMENT, as `execute` does."""
        request = flow_registry_service_pb2.CreateFlowRequest(flow=flow)
        with self._errors():
            return await self._registry.CreateFlow(request, **self._call_options(timeout, metadata))

    async def get_flow(
        self,
        flow_id: str,
        version: int = 0,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> flow_registry_service_pb2.FlowVersion:
        """A version of a flow of the registry (0: the latest); NOT_FOUND when there is none."""
        request = flow_registry_service_pb2.GetFlowRequest(flow_id=flow_id, version=version)
        with self._errors():
            response = await self._registry.GetFlow(
                request, **self._call_options(timeout, metadata)
            )
        return response.flow

    async def list_flows(
        self,
        request: flow_registry_service_pb2.ListFlowsRequest | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> flow_registry_service_pb2.ListFlowsResponse:
        """A page of the registry's flows, by id: the latest version of each, without bodies."""
        message = request or flow_registry_service_pb2.ListFlowsRequest()
        with self._errors():
            return await self._registry.ListFlows(message, **self._call_options(timeout, metadata))

    async def list_flow_versions(
        self,
        request: flow_registry_service_pb2.ListFlowVersionsRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, sent to the server
        metadata: Metadata = (),
    ) -> flow_registry_service_pb2.ListFlowVersionsResponse:
        """A page of one flow's versions, newest first, without bodies."""
        with self._errors():
            return await self._registry.ListFlowVersions(
                request, **self._call_options(timeout, metadata)
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turns the grpc error of a call made inside into a `FlowClientError`."""
        try:
            yield
        except grpc.aio.AioRpcError as error:
            raise FlowClientError.from_rpc_error(error, self._address) from None

    def _call_options(self, timeout: float | None, metadata: Metadata) -> dict[str, Any]:
        return {
            "timeout": self._timeout if timeout is None else timeout,
            "metadata": (*self._metadata, *metadata) or None,
            "wait_for_ready": self._wait_for_ready,
        }


_Request = TypeVar(
    "_Request",
    flow_service_pb2.ExecuteRequest,
    flow_service_pb2.ExecuteStreamRequest,
    flow_service_pb2.ValidateRequest,
)


def _request(
    kind: type[_Request],
    request: FlowRequest,
    flow_input: Mapping[str, Any] | struct_pb2.Struct | None,
    stubs: Stubs | None,
) -> _Request:
    """A `kind` request from a flow, a request or its JSON form, `input` and `stubs` replaced."""
    message = kind()
    if isinstance(request, flow_pb2.Flow):
        message.flow.CopyFrom(request)
    elif isinstance(request, Mapping):
        _parse_json(request, message, "the request")
    elif isinstance(request, _REQUESTS):
        # The three requests have the same fields, numbered alike (the API says
        # one JSON body works for all), so the bytes of one parse as another.
        message.ParseFromString(request.SerializeToString())
    else:
        raise TypeError(
            f"a request is a flowmanager.v1 Flow, a request message or a dict with a "
            f"request's JSON form ({{'flow': ...}}), not {type(request).__name__}"
        )
    if flow_input is not None:
        message.ClearField("input")
        if isinstance(flow_input, struct_pb2.Struct):
            message.input.CopyFrom(flow_input)
        else:
            json_format.ParseDict(dict(flow_input), message.input)
    if stubs is not None:
        message.ClearField("stubs")
        for name, stub in stubs.items():
            if isinstance(stub, flow_service_pb2.TaskStub):
                message.stubs[name].CopyFrom(stub)
            else:
                _parse_json(stub, message.stubs[name], f"stubs[{name!r}]")
    return message


_REQUESTS = (
    flow_service_pb2.ExecuteRequest,
    flow_service_pb2.ExecuteStreamRequest,
    flow_service_pb2.ValidateRequest,
)


def _parse_json(value: Mapping[str, Any], message: Any, what: str) -> None:
    """Fills `message` from its JSON form; `ValueError` naming `what` when it does not fit."""
    try:
        json_format.ParseDict(dict(value), message)
    except json_format.ParseError as error:
        raise ValueError(
            f"{what} is not the JSON form of a {message.DESCRIPTOR.full_name}: {error}"
        ) from None
