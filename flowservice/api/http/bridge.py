"""Each RPC of `flowmanager.v1` as a Connect endpoint that forwards to the gRPC port.

An endpoint does no work of its own: it sends the request's bytes, the
caller's metadata and the remaining deadline as a generic (bytes in) call
over a loopback `grpc.aio` channel to the server's own gRPC port, so that
authentication, the RPC observer (parsing, shedding, counting), the status
mapping and the servicers run exactly as for any gRPC caller. What comes back
(the response, its headers and trailers, or the status with its
`grpc-status-details-bin`) becomes the Connect or gRPC-Web reply; connectrpc
writes the protocol (envelopes, error JSON, trailers) and cancels the
endpoint when the HTTP caller goes away or its deadline passes, which
cancels the gRPC call, and so the execution.

A binary request's bytes reach the server untouched (it parses them, as it
parses any caller's). A JSON request is read here into the method's message
(`json_format`, unknown fields refused, as grpcurl refuses them) and sent as
its bytes; JSON that does not read is INVALID_ARGUMENT with reason
MALFORMED_REQUEST, the status the server gives bytes that do not parse.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import Headers, RequestContext
from connectrpc.server import Endpoint
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2
from protobuf.wkt import Any as AnyDetail

from flowservice.api.status import status_for
from flowservice.errors import MalformedRequestError

__all__ = ["STATUS_DETAILS_KEY", "endpoints", "json_codec", "proto_codec", "take_deadline"]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailing metadata key of the `google.rpc.Status` with the error details."""

_FORWARDED_HEADERS = frozenset({"authorization", "x-request-id", "traceparent", "tracestate"})
"""Request headers that become gRPC metadata: what the server reads (the
bearer token, the request id of its log lines, the W3C trace context its
tracing continues). Others (cookies, the browser's own) stay on the HTTP side."""
_NOT_RETURNED = frozenset({"content-type", "grpc-status", "grpc-message", STATUS_DETAILS_KEY})
"""gRPC response metadata the protocols carry in their own way, never as headers."""

_TIMEOUT_HEADERS = {
    b"connect-timeout-ms": re.compile(rb"(\d{1,10})"),
    b"grpc-timeout": re.compile(rb"(\d{1,8})([HMSmun])"),
}
"""The deadline headers of Connect and of gRPC-Web, and their forms."""
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "http_call_deadline", default=None
)
"""The loop time by which the HTTP call in this context must end (`take_deadline`)."""

_CODES: dict[grpc.StatusCode, Code] = {
    status: Code(status.name.lower()) if status.name != "CANCELLED" else Code.CANCELED
    for status in grpc.StatusCode
    if status is not grpc.StatusCode.OK
}


def endpoints(
    services: Iterable[ServiceDescriptor],
    channel: Callable[[], grpc.aio.Channel],
    message_class: Callable[[Any], type[Message]],
) -> dict[str, Any]:
    """The endpoints of every unary and server-streaming method of `services`, by URL path.

    `channel` gives the loopback channel to the gRPC port at call time;
    `message_class` the generated class of a message descriptor. Streams of
    requests (WorkerService.Work) need a full-duplex transport and stay on gRPC.
    """
    found: dict[str, Any] = {}
    for service in services:
        for method in service.methods:
            if method.client_streaming:
                continue
            path = f"/{service.full_name}/{method.name}"
            output = message_class(method.output_type)
            info: MethodInfo[Any, Any] = MethodInfo(
                name=method.name,
                service_name=service.full_name,
                input=message_class(method.input_type),
                output=output,
                idempotency_level=IdempotencyLevel.UNKNOWN,
                stream_type=_stream_type(method),
            )
            if method.server_streaming:
                found[path] = Endpoint.server_stream(info, _streamed(path, channel, output))
            else:
                found[path] = Endpoint.unary(info, _unary(path, channel, output))
    return found


def _stream_type(method: MethodDescriptor) -> StreamType:
    return StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY


def _unary(
    path: str, channel: Callable[[], grpc.aio.Channel], output: type[Message]
) -> Callable[[bytes, RequestContext[Any, Any]], Any]:
    async def forward(request: bytes, ctx: RequestContext[Any, Any]) -> Message:
        method = channel().unary_unary(
            path, request_serializer=_same_bytes, response_deserializer=output.FromString
        )
        call = method(request, metadata=_metadata(ctx.request_headers), timeout=_timeout())
        try:
            response: Message = await call
            _copy(await call.initial_metadata(), ctx.response_headers)
            _copy(await call.trailing_metadata(), ctx.response_trailers)
        except grpc.aio.AioRpcError as exc:
            raise _connect_error(exc, ctx) from None
        except Exception as exc:  # connectrpc would send its text
            raise _status_error(exc) from None
        return response

    return forward


def _streamed(
    path: str, channel: Callable[[], grpc.aio.Channel], output: type[Message]
) -> Callable[[bytes, RequestContext[Any, Any]], AsyncIterator[Message]]:
    async def forward(request: bytes, ctx: RequestContext[Any, Any]) -> AsyncIterator[Message]:
        method = channel().unary_stream(
            path, request_serializer=_same_bytes, response_deserializer=output.FromString
        )
        call = method(request, metadata=_metadata(ctx.request_headers), timeout=_timeout())
        try:
            _copy(await call.initial_metadata(), ctx.response_headers)
            async for response in call:
                yield response
            _copy(await call.trailing_metadata(), ctx.response_trailers)
        except grpc.aio.AioRpcError as exc:
            raise _connect_error(exc, ctx) from None
        except Exception as exc:  # connectrpc would send its text
            raise _status_error(exc) from None
        finally:
            call.cancel()  # a no-op once it has ended; ends it when the HTTP caller went away

    return forward


def _same_bytes(request: bytes) -> bytes:
    return request


def take_deadline(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` without a well-formed deadline header, whose deadline the call's
    context keeps for the forwarded call instead.

    The forwarded gRPC call gets the caller's deadline, exactly, as a gRPC
    caller's deadline is the server's. connectrpc does not see it: its own
    timer would race the server's DEADLINE_EXCEEDED, whose ErrorInfo (which
    task ran, the execution id) would then be lost. A malformed value is left
    for connectrpc to refuse.
    """
    kept = []
    seconds: float | None = None
    for name, value in headers:
        form = _TIMEOUT_HEADERS.get(name.lower())
        found = form.fullmatch(value) if form is not None else None
        if found is None:
            kept.append((name, value))
            continue
        unit = _TIMEOUT_UNITS[found.group(2)] if found.lastindex == 2 else 1e-3
        seconds = int(found.group(1)) * unit
    if seconds is not None:
        _deadline.set(asyncio.get_running_loop().time() + seconds)
    return kept


def _timeout() -> float | None:
    """The seconds left of the caller's deadline, None without one."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return max(deadline - asyncio.get_running_loop().time(), 0.0)


def _metadata(headers: Headers) -> tuple[tuple[str, str], ...]:
    return tuple(
        (key.lower(), value)
        for key, value in headers.allitems()
        if key.lower() in _FORWARDED_HEADERS
    )


def _copy(metadata: Iterable[tuple[str, str | bytes]] | None, headers: Headers) -> None:
    """gRPC response metadata as HTTP headers (binary values base64, as gRPC-Web sends them)."""
    for key, value in metadata or ():
        if key in _NOT_RETURNED:
            continue
        text = value if isinstance(value, str) else base64.b64encode(value).decode("ascii")
        headers.add(key, text)


def _connect_error(exc: grpc.aio.AioRpcError, ctx: RequestContext[Any, Any]) -> ConnectError:
    """The call's status as a ConnectError with the same code, message and details."""
    trailers = exc.trailing_metadata() or ()
    _copy(trailers, ctx.response_trailers)
    details = next((value for key, value in trailers if key == STATUS_DETAILS_KEY), None)
    return connect_error(exc.code(), exc.details() or "", details)


def connect_error(code: grpc.StatusCode, message: str, details: str | bytes | None) -> ConnectError:
    """A ConnectError of a gRPC status and its `grpc-status-details-bin` (if any)."""
    found: list[ErrorDetail] = []
    if isinstance(details, bytes):
        status = status_pb2.Status.FromString(details)
        found = [
            ErrorDetail(AnyDetail(type_url=detail.type_url, value=detail.value))
            for detail in status.details
        ]
    return ConnectError(_CODES.get(code, Code.UNKNOWN), message, found)


def _status_error(exc: Exception) -> ConnectError:
    """The ConnectError of the status `status_for` maps `exc` to, as the gRPC port sends it
    (for an unexpected error: INTERNAL with an incident id, the error in the log)."""
    status = status_for(exc)
    details: Mapping[str, str | bytes] = dict(status.trailing_metadata or ())
    return connect_error(status.code, status.details, details.get(STATUS_DETAILS_KEY))


class _ProtoCodec:
    """Binary requests pass through as bytes; the server parses them."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> bytes:
        return bytes(data)


class _JsonCodec:
    """JSON requests are read into the method's message and sent as its bytes."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(message, indent=None).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> bytes:
        message = message_class()
        try:
            json_format.Parse(bytes(data), message)
        except Exception as exc:  # ParseError, a bad encoding, nesting past the recursion limit
            raise _status_error(MalformedRequestError(message.DESCRIPTOR.full_name)) from exc
        return message.SerializeToString()


proto_codec = _ProtoCodec()
json_codec = _JsonCodec()
