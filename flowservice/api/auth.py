"""The interceptor that lets a call in only when its caller may make it.

It runs before every other interceptor: the bearer token comes from the
metadata (`authorization: Bearer <token>`), the client certificate's
identity from the TLS session, and `AccessGuard` decides. A refused call
ends with UNAUTHENTICATED or PERMISSION_DENIED (through `status_for`).
Health stays open, so probes need no credentials.

When the metadata decides (a token, or no credentials at all), a refused
call's request bytes are never decoded. When the client certificate decides
(mTLS, no token), grpc has read the request by the time the handler's
context, which carries the certificate, exists; only holders of a
certificate signed by the trusted CA get that far.

The caller's identity goes into every log line of the call (`identity`),
and the certificate's SAN (`peer`) too when the connection is mTLS."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health

from flowservice.api._handlers import WrappedHandlers, rewrap
from flowservice.api.status import status_for
from flowservice.errors import AuthenticationError, PermissionDeniedError
from flowservice.observability import Metrics, identity_var, peer_var
from flowservice.security import AccessGuard

__all__ = ["AUTHORIZATION_KEY", "AccessControl", "peer_identity"]

AUTHORIZATION_KEY = "authorization"
"""The metadata key of the bearer token."""

_BEARER = "bearer "
# Exactly the probes: a prefix would also open Health/List (grpcio-health-checking
# serves it) to callers without credentials.
_OPEN_METHODS = frozenset({f"/{health.SERVICE_NAME}/Check", f"/{health.SERVICE_NAME}/Watch"})
# The certificate fields that name a client, in the order they are preferred:
# a URI SAN (a SPIFFE id) over a DNS SAN.
_PEER_PROPERTIES = ("peer_uri", "peer_dns")

logger = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Context = grpc.aio.ServicerContext[Any, Any]
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Refusal = AuthenticationError | PermissionDeniedError


def peer_identity(context: _Context) -> str | None:
    """`mtls:<SAN>` of the client certificate, None without one (or without a SAN)."""
    auth_context = context.auth_context()
    for name in _PEER_PROPERTIES:
        first = next(iter(auth_context.get(name, ())), None)
        if first is not None:
            return "mtls:" + first.decode("utf-8", errors="replace")
    return None


def _bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str):
            if value[: len(_BEARER)].lower() == _BEARER:
                return value[len(_BEARER) :].strip()
            return ""  # another scheme: a credential the server cannot use
    return None


class AccessControl(grpc.aio.ServerInterceptor):
    """Authenticates and authorizes every call except Health's.

    A call the metadata admits is let through as it is (with mTLS, through a
    wrapper that records the certificate's SAN); a call the certificate
    decides goes through a wrapper that decides once the call has a context.
    Both wrappers are built once per method; a refused call gets its own.
    """

    def __init__(self, guard: AccessGuard, *, mtls: bool, metrics: Metrics | None = None) -> None:
        self._guard = guard
        self._mtls = mtls
        self._metrics = metrics
        self._certificate_decides = WrappedHandlers(self._deciding_by_certificate)
        self._peer_recorded = WrappedHandlers(self._recording_peer)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails],
            Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None],
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in _OPEN_METHODS:
            return handler
        token = _bearer_token(handler_call_details.invocation_metadata)
        if token is None and self._mtls:
            return self._certificate_decides.get(method, handler)
        # The metadata decides: refuse now, and never decode the request.
        try:
            identity = self._guard.check(method, token, None)
        except (AuthenticationError, PermissionDeniedError) as exc:
            return _wrap(handler, self._refusal(method, exc), refused=True)
        # grpc runs the interceptors and the handler in the call's own task,
        # with its own context: the identity set here is the call's.
        identity_var.set(identity)
        logger.debug("%s allowed to call %s", identity, method)
        return self._peer_recorded.get(method, handler) if self._mtls else handler

    def _deciding_by_certificate(self, method: str, handler: _Handler) -> _Handler:
        """`handler` admitted by its call's client certificate (mTLS without a token)."""

        async def admit(context: _Context) -> None:
            peer = _record_peer(context)
            try:
                identity = self._guard.check(method, None, peer)
            except (AuthenticationError, PermissionDeniedError) as exc:
                await self._refuse(context, method, exc)
            identity_var.set(identity)
            logger.debug("%s allowed to call %s", identity, method)

        return _wrap(handler, admit, refused=False)

    def _recording_peer(self, method: str, handler: _Handler) -> _Handler:
        """`handler`, admitted by its token, logging its call's certificate SAN too."""

        async def admit(context: _Context) -> None:
            _record_peer(context)

        return _wrap(handler, admit, refused=False)

    def _refusal(self, method: str, refusal: _Refusal) -> Callable[[_Context], Awaitable[None]]:
        """What runs first in a call the metadata refused: ends it with `refusal`."""

        async def refuse(context: _Context) -> None:
            if self._mtls:
                _record_peer(context)
            # The request id is set: RpcObserver, after this interceptor, set it.
            await self._refuse(context, method, refusal)

        return refuse

    async def _refuse(self, context: _Context, method: str, refusal: _Refusal) -> NoReturn:
        if isinstance(refusal, PermissionDeniedError):
            identity_var.set(refusal.identity)
        logger.info("refused a call to %s: %s", method, refusal)
        status = status_for(refusal)
        if self._metrics is not None:
            self._metrics.rpc(method, status.code.name)
        await context.abort(status.code, status.details, status.trailing_metadata)


def _record_peer(context: _Context) -> str | None:
    """`peer_identity(context)`, also kept (without `mtls:`) for the call's log lines."""
    peer = peer_identity(context)
    if peer is not None:
        peer_var.set(peer.removeprefix("mtls:"))
    return peer


def _discard(_: bytes) -> None:
    """The deserializer of a refused call: its bytes are never parsed."""


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any],
    admit: Callable[[_Context], Awaitable[None]],
    *,
    refused: bool,
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with `admit` run before its behaviour, whatever its kind; a call
    already `refused` keeps its request bytes unparsed."""
    deserializer = _discard if refused else handler.request_deserializer
    return rewrap(
        handler,
        lambda behavior, _: _admitted(behavior, admit),
        lambda behavior, _: _streaming(behavior, admit),
        deserializer,
    )


def _admitted(
    behavior: Callable[..., Awaitable[Any]], admit: Callable[[_Context], Awaitable[None]]
) -> Callable[[Any, _Context], Awaitable[Any]]:
    async def admitted(request: Any, context: _Context) -> Any:
        await admit(context)
        return await behavior(request, context)

    return admitted


def _streaming(
    behavior: Callable[..., Any], admit: Callable[[_Context], Awaitable[None]]
) -> Callable[[Any, _Context], AsyncIterator[Any]]:
    async def streamed(request: Any, context: _Context) -> AsyncIterator[Any]:
        await admit(context)
        responses = behavior(request, context)
        if hasattr(responses, "__aiter__"):
            async for response in responses:
                yield response
        else:  # a handler that writes with context.write
            await responses

    return streamed
