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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc

from flowservice.api._handlers import WrappedHandlers, rewrap
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
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class RpcObserver(grpc.aio.ServerInterceptor):
    """Wraps every handler to parse, admit, count and finish its calls (see the module).

    A method's wrapped handler is built once, the first time it is called, and
    reused while grpc returns the same handler for it (its generic handlers
    keep one per method); a call pays only for what is its own: its request
    id, and its place among `max_concurrent_rpcs`.
    """

    def __init__(self, metrics: Metrics | None, max_concurrent_rpcs: int | None = None) -> None:
        self._metrics = metrics
        self._max_calls = max_concurrent_rpcs
        self._calls = 0
        self._draining = asyncio.Event()
        self._wrapped = WrappedHandlers(self._wrap)

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
        # grpc runs the interceptors and then the handler in one asyncio task,
        # with its own copy of the context: the value set here is the call's,
        # ends with it, and is never reset (a reset from a stream's finaliser
        # would run in another context and fail). An interceptor before this
        # one (access control) logs its refusals with it too.
        request_id_var.set(_request_id(handler_call_details.invocation_metadata))
        return self._wrapped.get(handler_call_details.method, handler)

    def _wrap(self, method: str, handler: _Handler) -> _Handler:
        """`handler` rebuilt to parse its own requests and be observed as `method`."""
        parser = _RequestParser(handler.request_deserializer)  # grpc then hands over bytes

        def parse(streamed_requests: bool) -> Callable[[Any], Any]:
            return parser.parse_each if streamed_requests else parser.parse

        return rewrap(
            handler,
            lambda behavior, streamed: self._unary(method, behavior, parse(streamed)),
            lambda behavior, streamed: self._stream(method, behavior, parse(streamed)),
            request_deserializer=None,
        )

    def _unary(
        self, method: str, behavior: Callable[..., Any], parse: Callable[[Any], Any]
    ) -> Callable[..., Awaitable[Any]]:
        """`behavior` (returning one response) wrapped; `parse` makes its request(s) of bytes."""
        limited = self._max_calls is not None and method not in _UNLIMITED_METHODS

        async def observed(request: Any, context: _Context) -> Any:
            failure: type[BaseException] | None = None  # not the exception: no reference cycle
            admitted = False
            try:
                if limited:
                    admitted = self._admit()
                return await behavior(parse(request), context)
            except BaseException as exc:
                failure = type(exc)
                await _reraise_or_abort(exc, context)
            finally:
                self._ended(method, admitted, context, failure)

        return observed

    def _stream(
        self, method: str, behavior: Callable[..., Any], parse: Callable[[Any], Any]
    ) -> Callable[..., AsyncIterator[Any]]:
        """`behavior` (streaming its responses) wrapped; `parse` as in `_unary`."""
        limited = self._max_calls is not None and method not in _UNLIMITED_METHODS
        endless = method in _ENDLESS_METHODS  # the health Watch

        async def observed(request: Any, context: _Context) -> AsyncIterator[Any]:
            failure: type[BaseException] | None = None  # not the exception: no reference cycle
            admitted = False
            try:
                if limited:
                    admitted = self._admit()
                responses = behavior(parse(request), context)
                if hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield response
                elif endless:
                    await self._until_drained(responses)
                else:  # a handler that writes with context.write
                    await responses
            except BaseException as exc:
                failure = type(exc)
                await _reraise_or_abort(exc, context)
            finally:
                self._ended(method, admitted, context, failure)

        return observed

    def _admit(self) -> bool:
        """Counts one more call in flight (True); TooManyCallsError past `max_concurrent_rpcs`."""
        limit = self._max_calls
        if limit is not None and self._calls >= limit:
            raise TooManyCallsError(limit)
        self._calls += 1
        return True

    def _ended(
        self, method: str, admitted: bool, context: _Context, failure: type[BaseException] | None
    ) -> None:
        """Frees the call's place, if it had one, and counts it by the code it ended with."""
        if admitted:
            self._calls -= 1
        if self._metrics is not None:
            self._metrics.rpc(method, _ended_with(failure, context))

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


def _request_id(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The value of `REQUEST_ID_KEY` in `metadata`, or ""."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            return str(value)
    return ""


async def _reraise_or_abort(exc: BaseException, context: _Context) -> NoReturn:
    """Ends a call that raised `exc`: a cancellation or an abort goes on as it is,
    any other exception becomes the status `status_for` chooses."""
    if isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError):
        status = status_for(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)
    raise exc


def _ended_with(failure: type[BaseException] | None, context: _Context) -> str:
    """The name of the status code a call ended with, having raised a `failure` (or not)."""
    if failure is None or issubclass(failure, Exception):
        return _code(context)  # an abort, ours or the handler's, set the context's code
    if issubclass(failure, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "UNKNOWN"  # KeyboardInterrupt, SystemExit


def _code(context: _Context) -> str:
    code: Any = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODE_NAMES.get(int(code), "UNKNOWN")
