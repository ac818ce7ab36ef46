"""gRPC-Web's text form (`application/grpc-web-text`), as the binary form in base64.

Google's grpc-web client sends it by default (`mode=grpcwebtext`); connectrpc
speaks only the binary form. This wrapper decodes the request body, hands
connectrpc the binary request, and encodes each piece of the reply as its
own padded base64 chunk, which the protocol allows (a reader decodes the
concatenation chunk by chunk), so a stream's messages still reach the browser
as they are sent.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from flowservice.api.http.asgi_types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["is_web_text", "web_text"]

_TEXT = b"application/grpc-web-text"
_BINARY = b"application/grpc-web+proto"


def is_web_text(scope: Scope) -> bool:
    """Whether the request is gRPC-Web text."""
    kind = _content_type(scope)
    return kind is not None and kind.split(b";")[0].strip().startswith(_TEXT)


async def web_text(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, max_body_bytes: int
) -> None:
    """Runs `app` on the binary form of a gRPC-Web text request.

    A body longer than the base64 of `max_body_bytes` is refused with 413
    before it is read whole; one that is not base64 with 400.
    """
    text = bytearray()
    limit = (max_body_bytes + 2) // 3 * 4 + 64
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        text += message.get("body", b"")
        if len(text) > limit:
            await _refuse(send, 413, b"Request body too large.\n")
            return
        if not message.get("more_body", False):
            break
    try:
        body = _decode(bytes(text))
    except (binascii.Error, ValueError):
        await _refuse(send, 400, b"The request body is not base64.\n")
        return
    headers = [
        (name, _BINARY if name.lower() == b"content-type" else value)
        for name, value in scope["headers"]
        if name.lower() != b"content-length"
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    sent = False

    async def binary_receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    async def text_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": _text_headers(message.get("headers", ()))}
        elif message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": base64.b64encode(message["body"])}
        await send(message)

    await app({**scope, "headers": headers}, binary_receive, text_send)


def _decode(text: bytes) -> bytes:
    """Decodes base64 that may be several padded chunks one after another."""
    decoded = bytearray()
    for chunk in text.replace(b"\r", b"").replace(b"\n", b"").split(b"="):
        if chunk:
            decoded += base64.b64decode(chunk + b"=" * (-len(chunk) % 4), validate=True)
    return bytes(decoded)


def _text_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    found: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name.lower() == b"content-length":
            continue  # base64 makes it longer
        if name.lower() == b"content-type" and value.startswith(b"application/grpc-web"):
            value = _TEXT + b"+proto"
        found.append((name, value))
    return found


def _content_type(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            return bytes(value)
    return None


async def _refuse(send: Send, status: int, text: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})
