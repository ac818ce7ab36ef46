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

import base64
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

__all__ = ["STATUS_DETAILS_KEY", "endpoints", "json_codec", "proto_codec"]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailing metadata key of the `google.rpc.Status` with the error details."""

_FORWARDED_HEADERS = frozenset({"authorization", "x-request-id", "x-idempotency-key"})
"""Request headers that become gRPC metadata: what the server reads (the
bearer token, the request id of its log lines). Others (cookies, the
browser's own) stay on the HTTP side."""
_NOT_RETURNED = frozenset({"content-type", "grpc-status", "grpc-message", STATUS_DETAILS_KEY})
"""gRPC response metadata the protocols carry in their own way, never as headers."""

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
        call = method(request, metadata=_metadata(ctx.request_headers), timeout=_timeout(ctx))
        try:
            response: Message = await call
        except grpc.aio.AioRpcError as exc:
            raise _connect_error(exc, ctx) from None
        _copy(await call.initial_metadata(), ctx.response_headers)
        _copy(await call.trailing_metadata(), ctx.response_trailers)
        return response

    return forward


def _streamed(
    path: str, channel: Callable[[], grpc.aio.Channel], output: type[Message]
) -> Callable[[bytes, RequestContext[Any, Any]], AsyncIterator[Message]]:
    async def forward(request: bytes, ctx: RequestContext[Any, Any]) -> AsyncIterator[Message]:
        method = channel().unary_stream(
            path, request_serializer=_same_bytes, response_deserializer=output.FromString
        )
        call = method(request, metadata=_metadata(ctx.request_headers), timeout=_timeout(ctx))
        try:
            _copy(await call.initial_metadata(), ctx.response_headers)
            async for response in call:
                yield response
            _copy(await call.trailing_metadata(), ctx.response_trailers)
        except grpc.aio.AioRpcError as exc:
            raise _connect_error(exc, ctx) from None
        finally:
            call.cancel()  # a no-op once it has ended; ends it when the HTTP caller went away

    return forward


def _same_bytes(request: bytes) -> bytes:
    return request


def _timeout(ctx: RequestContext[Any, Any]) -> float | None:
    """The seconds left of the caller's deadline (`connect-timeout-ms`, `grpc-timeout`)."""
    remaining = ctx.timeout_ms
    return None if remaining is None else max(remaining, 0.0) / 1000


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
    """The ConnectError of the status `status_for` maps `exc` to, as the gRPC port sends it."""
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
        except (json_format.ParseError, UnicodeDecodeError, RecursionError, ValueError) as exc:
            raise _status_error(MalformedRequestError(message.DESCRIPTOR.full_name)) from exc
        return message.SerializeToString()


proto_codec = _ProtoCodec()
json_codec = _JsonCodec()
