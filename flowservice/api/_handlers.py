"""Rebuilding a grpc method handler around its behaviour, whatever its kind.

Both server interceptors (`auth` and `interceptors`) wrap every handler they
see; grpc has four kinds of handler, each built by its own function, so the
choice of kind is written here once. `WrappedHandlers` keeps what they build,
so that a method's handler is rebuilt once, not on every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import grpc

__all__ = ["MAX_WRAPPED", "Around", "WrappedHandlers", "rewrap"]

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

MAX_WRAPPED = 1024
"""Methods whose wrapped handler is kept: more than a server has; a generic
handler that answered any method name at all could not grow a cache past it."""

Around = Callable[[Callable[..., Any], bool], Callable[..., Any]]
"""Makes the new behaviour of a handler from its old one and whether its
requests come as a stream (`True` for client- and bidi-streaming methods)."""


def rewrap(
    handler: grpc.RpcMethodHandler[Any, Any],
    around_unary: Around,
    around_stream: Around,
    request_deserializer: Callable[[bytes], Any] | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` rebuilt with the same kind and response serializer.

    Its behaviour is `around_unary`'s for methods with one response,
    `around_stream`'s for those that stream responses.
    """
    kinds: tuple[tuple[Any, Callable[..., Any], Around, bool], ...] = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, around_unary, False),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, around_stream, False),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, around_unary, True),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, around_stream, True),
    )
    for behavior, make, around, streamed_requests in kinds:
        if behavior is not None:
            built: grpc.RpcMethodHandler[Any, Any] = make(
                around(behavior, streamed_requests),
                request_deserializer,
                handler.response_serializer,
            )
            return built
    return handler


class WrappedHandlers:
    """The handlers `wrap` made of grpc's, one per method, made on its first call.

    grpc's generic handlers return the same handler object for a method on
    every call; should one return another, it is wrapped anew.
    """

    __slots__ = ("_kept", "_wrap")

    def __init__(self, wrap: Callable[[str, _Handler], _Handler]) -> None:
        self._wrap = wrap
        self._kept: dict[str, tuple[_Handler, _Handler]] = {}
        """Method -> (the handler grpc returned, its wrapped handler)."""

    def get(self, method: str, handler: _Handler) -> _Handler:
        """`handler`, the one grpc returned for `method`, wrapped."""
        kept = self._kept.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap(method, handler)
        if kept is not None or len(self._kept) < MAX_WRAPPED:
            self._kept[method] = (handler, wrapped)
        return wrapped
