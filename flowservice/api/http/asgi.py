"""The HTTP port's ASGI application: RPCs, CORS, and the web console's files.

A request to the path of an RPC (`/flowmanager.v1.FlowService/Execute`)
goes to connectrpc's application (Connect and gRPC-Web, see `bridge`); any
other GET serves a file of the built console (`console/dist`), or its
`index.html` for a deep link such as `/executions/ID`, so the console's
router takes over in the browser.

CORS is off unless origins are configured: a preflight from one of them is
answered, and the replies to it carry `Access-Control-Allow-Origin` and
expose the headers a Connect or gRPC-Web client reads; any other origin gets
no CORS header, and so the browser keeps the reply from its page.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Collection
from pathlib import Path

from flowservice.api.http.asgi_types import ASGIApp, Message, Receive, Scope, Send
from flowservice.api.http.bridge import take_deadline
from flowservice.api.http.web_text import is_web_text, web_text

__all__ = ["HttpApp"]

_ALLOWED_HEADERS = (
    "authorization, content-type, content-encoding, accept-encoding, "
    "connect-protocol-version, connect-timeout-ms, connect-accept-encoding, "
    "connect-content-encoding, grpc-timeout, grpc-accept-encoding, x-grpc-web, "
    "x-user-agent, x-request-id, traceparent, tracestate"
)
"""The request headers a Connect or gRPC-Web client in a browser sends, and ours."""
_EXPOSED_HEADERS = (
    "grpc-status, grpc-message, grpc-status-details-bin, content-encoding, "
    "connect-content-encoding, x-request-id"
)
"""The response headers a browser page may read (gRPC-Web's status among them)."""
_PREFLIGHT_MAX_AGE = "7200"  # seconds a browser may remember a preflight's answer
_NOT_BUILT = (
    b"The web console is not built: console/dist/index.html is missing.\n"
    b"The API is served here all the same (see docs/http.md).\n"
)
_NOT_FOUND = b"Not found.\n"
_HEADERS_TOO_LARGE = b"Request headers too large.\n"
_FILE_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class HttpApp:
    """Routes a request to the RPCs or the console's files, with CORS around both."""

    def __init__(
        self,
        rpc: ASGIApp,
        rpc_paths: Collection[str],
        console_dir: Path,
        cors_origins: Collection[str] = (),
        max_header_bytes: int = 16 * 1024,
        max_body_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._rpc = rpc
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._rpc_paths = frozenset(rpc_paths)
        self._files = _ConsoleFiles(console_dir)
        self._origins = frozenset(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets; lifespan is off
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self._max_header_bytes:
            # h11 bounds a header block that arrives in pieces; this, one that came at once.
            await _plain(send, 431, _HEADERS_TOO_LARGE)
            return
        origin = _header(scope, b"origin")
        allowed = origin if origin in self._origins else None
        method = scope["method"]
        if (
            allowed is not None
            and method == "OPTIONS"
            and _header(scope, b"access-control-request-method")
        ):
            await _preflight(send, allowed)
            return
        if allowed is not None:
            send = _with_cors(send, allowed)
        if scope["path"] in self._rpc_paths:
            # Each request runs in its own task, so the deadline stays with its call.
            scope = {**scope, "headers": take_deadline(list(scope["headers"]))}
            if is_web_text(scope):
                await web_text(self._rpc, scope, receive, send, self._max_body_bytes)
            else:
                await self._rpc(scope, receive, send)
        elif method in ("GET", "HEAD"):
            await self._files.serve(scope["path"], send, body=method == "GET")
        else:
            await _plain(send, 404, _NOT_FOUND)


class _ConsoleFiles:
    """The built console: a file by its path, else index.html for a deep link."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    async def serve(self, path: str, send: Send, *, body: bool) -> None:
        found = self._find(path)
        if found is None:
            index = self._root / "index.html"
            if not index.is_file():
                await _plain(send, 404, _NOT_BUILT)
                return
            if Path(path).suffix:  # a missing asset, not a page of the console
                await _plain(send, 404, _NOT_FOUND)
                return
            found = index
        content = await asyncio.to_thread(found.read_bytes)
        kind = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        # Vite names assets by their content hash; index.html must be fetched anew.
        cache = b"public, max-age=31536000, immutable" if "/assets/" in path else b"no-cache"
        headers = [
            (b"content-type", kind.encode()),
            (b"content-length", str(len(content)).encode()),
            (b"cache-control", cache),
            *_FILE_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content if body else b""})

    def _find(self, path: str) -> Path | None:
        """The file at `path` inside the root; None for a directory, a missing file or a
        path that leads outside (`..`, a symlink out)."""
        relative = path.lstrip("/")
        if not relative:
            return None
        try:
            candidate = (self._root / relative).resolve()
        except (OSError, ValueError):
            return None
        if not candidate.is_relative_to(self._root) or not candidate.is_file():
            return None
        return candidate


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _with_cors(send: Send, origin: str) -> Send:
    """`send` with the CORS headers added to the response's start."""
    extra = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", _EXPOSED_HEADERS.encode()),
        (b"vary", b"origin"),
    ]

    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return cors_send


async def _preflight(send: Send, origin: str) -> None:
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", b"POST, GET"),
        (b"access-control-allow-headers", _ALLOWED_HEADERS.encode()),
        (b"access-control-max-age", _PREFLIGHT_MAX_AGE.encode()),
        (b"vary", b"origin"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _plain(send: Send, status: int, text: bytes) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()),
        *_FILE_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})
