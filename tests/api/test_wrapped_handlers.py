"""`WrappedHandlers`: a method's handler is wrapped once, and again only when grpc's changes."""

from __future__ import annotations

from typing import Any

import grpc

from flowservice.api._handlers import MAX_WRAPPED, WrappedHandlers


async def _echo(request: Any, context: Any) -> Any:
    return request


def _handler() -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(_echo)


def _wrapping() -> tuple[WrappedHandlers, list[str]]:
    built: list[str] = []

    def wrap(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> Any:
        built.append(method)
        return grpc.unary_unary_rpc_method_handler(_echo)

    return WrappedHandlers(wrap), built


def test_a_method_is_wrapped_once_while_grpc_returns_the_same_handler() -> None:
    handlers, built = _wrapping()
    check, execute = _handler(), _handler()

    first = handlers.get("/s/Check", check)
    assert handlers.get("/s/Check", check) is first
    handlers.get("/s/Execute", execute)
    assert handlers.get("/s/Execute", execute) is not first
    assert built == ["/s/Check", "/s/Execute"]


def test_another_handler_for_the_method_is_wrapped_anew() -> None:
    handlers, built = _wrapping()
    old, new = _handler(), _handler()

    stale = handlers.get("/s/Check", old)
    renewed = handlers.get("/s/Check", new)

    assert renewed is not stale
    assert handlers.get("/s/Check", new) is renewed
    assert built == ["/s/Check", "/s/Check"]


def test_methods_past_the_bound_are_wrapped_on_every_call() -> None:
    handlers, built = _wrapping()
    handler = _handler()
    for number in range(MAX_WRAPPED):
        handlers.get(f"/s/M{number}", handler)

    handlers.get("/s/OneTooMany", handler)
    handlers.get("/s/OneTooMany", handler)

    assert built.count("/s/OneTooMany") == 2
    assert len(built) == MAX_WRAPPED + 2
