"""A server interceptor that counts RPCs by method and status code, and carries
the caller's request id (metadata `x-request-id`) into every log line of the call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from flowservice.observability import Metrics, request_id_var

__all__ = ["REQUEST_ID_KEY", "RpcObserver"]

REQUEST_ID_KEY = "x-request-id"
"""The metadata key whose value is logged as `request_id`."""


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class RpcObserver(grpc.aio.ServerInterceptor):
    """Wraps every handler to count its outcome and expose the request id to logs."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails],
            Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None],
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        request_id = str(metadata.get(REQUEST_ID_KEY, ""))
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, request_id, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, request_id, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client- and bidi-streaming calls (reflection) pass untouched

    def _unary(
        self, method: str, request_id: str, behavior: Callable[..., Any]
    ) -> Callable[..., Awaitable[Any]]:
        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            # Each call runs in its own asyncio task, with its own copy of the
            # context: the value ends with the call and is never reset (a reset
            # from a stream's finaliser would run in another context and fail).
            request_id_var.set(request_id)
            code = "UNKNOWN"
            try:
                response = await behavior(request, context)
                code = _code(context)
                return response
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = _code(context)
                raise
            finally:
                self._count(method, code)

        return observed

    def _stream(
        self, method: str, request_id: str, behavior: Callable[..., Any]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def observed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            request_id_var.set(request_id)  # not reset: see _unary
            code = "UNKNOWN"
            try:
                responses = behavior(request, context)
                if hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield response
                else:  # a handler that writes with context.write (the health Watch)
                    await responses
                code = _code(context)
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = _code(context)
                raise
            finally:
                self._count(method, code)

        return observed

    def _count(self, method: str, code: str) -> None:
        if self._metrics is not None:
            self._metrics.rpc(method, code)


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _code(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code: Any = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODE_NAMES.get(int(code), "UNKNOWN")
