"""Rebuilding a grpc method handler around its behaviour, whatever its kind.

Both server interceptors (`auth` and `interceptors`) wrap every handler they
see; grpc has four kinds of handler, each built by its own function, so the
choice of kind is written here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["Around", "rewrap"]

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
