"""A server interceptor that every call goes through, whatever its service.

It rebuilds each handler so that the call:

- parses its own request bytes (of every method, streams of requests too,
  so reflection is covered): grpc would answer bytes that do not parse
  (or a message nested deeper than protobuf's recursion limit of 100) with
  UNKNOWN and the Python exception's text; here they get INVALID_ARGUMENT,
  reason MALFORMED_REQUEST, and a plain message;
- is shed with RESOURCE_EXHAUSTED and RetryInfo past `max_concurrent_rpcs`
  calls at once (Health/Check aside, so probes still answer under load);
- ends, if it would never end by itself (a health Watch), once the server
  drains, so that an open watch does not hold shutdown for the grace period;
- turns any other exception into the status `status_for` chooses (INTERNAL
  with a plain message), never into grpc's UNKNOWN with Python text;
- is counted by method and status code, with the caller's request id
  (metadata `x-request-id`) in every log line it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from flowservice.api._handlers import rewrap
from flowservice.api.status import status_for
from flowservice.errors import MalformedRequestError, ServerShuttingDownError, TooManyCallsError
from flowservice.observability import Metrics, request_id_var

__all__ = ["REQUEST_ID_KEY", "RpcObserver"]

REQUEST_ID_KEY = "x-request-id"
"""The metadata key whose value is logged as `request_id`."""

_UNLIMITED_METHODS = frozenset(
    {"/grpc.health.v1.Health/Check", "/flowmanager.v1.WorkerService/Work"}
)
"""Methods never shed by `max_concurrent_rpcs`: a probe must hear from an
overloaded server too, and workers' streams, which last as long as the worker,
are bounded by `max_worker_streams` instead (counted here, idle workers would
make the server shed Execute calls)."""
_ENDLESS_METHODS = frozenset({"/grpc.health.v1.Health/Watch"})
"""Methods whose calls end only when the caller goes: ended when the server drains."""

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Context = grpc.aio.ServicerContext[Any, Any]


class RpcObserver(grpc.aio.ServerInterceptor):
    """Wraps every handler to parse, admit, count and finish its calls (see the module)."""

    def __init__(self, metrics: Metrics | None, max_concurrent_rpcs: int | None = None) -> None:
        self._metrics = metrics
        self._max_calls = max_concurrent_rpcs
        self._calls = 0
        self._draining = asyncio.Event()

    def drain(self) -> None:
        """Ends the calls of endless methods now and any started from now on."""
        self._draining.set()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails],
            Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None],
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        call = _Call(method, str(metadata.get(REQUEST_ID_KEY, "")))
        one = _RequestParser(handler.request_deserializer)  # grpc then hands over bytes

        def parser(streamed_requests: bool) -> Callable[[Any], Any]:
            return one.parse_each if streamed_requests else one.parse

        return rewrap(
            handler,
            lambda behavior, streamed: self._unary(call, behavior, parser(streamed)),
            lambda behavior, streamed: self._stream(call, behavior, parser(streamed)),
            request_deserializer=None,
        )

    def _unary(
        self, call: _Call, behavior: Callable[..., Any], parse: Callable[[Any], Any]
    ) -> Callable[..., Awaitable[Any]]:
        """`behavior` (returning one response) wrapped; `parse` makes its request(s) of bytes."""

        async def observed(request: Any, context: _Context) -> Any:
            async with self._observed(call, context):
                return await behavior(parse(request), context)

        return observed

    def _stream(
        self, call: _Call, behavior: Callable[..., Any], parse: Callable[[Any], Any]
    ) -> Callable[..., AsyncIterator[Any]]:
        """`behavior` (streaming its responses) wrapped; `parse` as in `_unary`."""

        async def observed(request: Any, context: _Context) -> AsyncIterator[Any]:
            async with self._observed(call, context):
                responses = behavior(parse(request), context)
                if hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield response
                elif call.method in _ENDLESS_METHODS:  # the health Watch
                    await self._until_drained(responses)
                else:  # a handler that writes with context.write
                    await responses

        return observed

    @contextlib.asynccontextmanager
    async def _observed(self, call: _Call, context: _Context) -> AsyncIterator[None]:
        """Admits, counts and maps the errors of one call, around its whole body."""
        # Each call runs in its own asyncio task, with its own copy of the
        # context: the value ends with the call and is never reset (a reset
        # from a stream's finaliser would run in another context and fail).
        request_id_var.set(call.request_id)
        code = "UNKNOWN"
        admitted = False
        try:
            if self._max_calls is not None and call.method not in _UNLIMITED_METHODS:
                if self._calls >= self._max_calls:
                    raise TooManyCallsError(self._max_calls)
                self._calls += 1
                admitted = True
            yield
            code = _code(context)
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            code = _code(context)
            raise
        except Exception as exc:
            status = status_for(exc)
            code = status.code.name
            await context.abort(status.code, status.details, status.trailing_metadata)
        finally:
            if admitted:
                self._calls -= 1
            if self._metrics is not None:
                self._metrics.rpc(call.method, code)

    async def _until_drained(self, body: Awaitable[Any]) -> Any:
        """Awaits `body` (in a task of its own) unless the server drains first."""
        task = asyncio.ensure_future(body)
        drained = asyncio.ensure_future(self._draining.wait())
        try:
            await asyncio.wait((task, drained), return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise ServerShuttingDownError()
        return task.result()


@dataclass(frozen=True, slots=True)
class _Call:
    """What the interceptor knows of one call before it runs."""

    method: str
    """The full method name, `/package.Service/Method`."""
    request_id: str
    """The caller's `x-request-id`, or ""."""


class _RequestParser:
    """Parses a method's request bytes; MalformedRequestError for bytes that do not parse."""

    __slots__ = ("_from_bytes",)

    def __init__(self, from_bytes: Callable[[bytes], Any] | None) -> None:
        self._from_bytes = from_bytes

    def parse(self, request: bytes) -> Any:
        """The message of one request's bytes."""
        if self._from_bytes is None:
            return request
        try:
            return self._from_bytes(request)
        except Exception as exc:  # DecodeError, or protobuf's recursion limit
            message_type = getattr(getattr(self._from_bytes, "__self__", None), "DESCRIPTOR", None)
            name = message_type.full_name if message_type is not None else "request"
            raise MalformedRequestError(name) from exc

    async def parse_each(self, requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        """The messages of a client stream's requests, as they arrive."""
        async for request in requests:
            yield self.parse(request)


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _code(context: _Context) -> str:
    code: Any = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODE_NAMES.get(int(code), "UNKNOWN")
