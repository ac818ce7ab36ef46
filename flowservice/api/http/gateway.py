"""The HTTP port: uvicorn, in the server's own event loop, serving `HttpApp`.

The gateway binds its socket when it is made (port 0 picks a free one, as
for the gRPC port), starts serving after the gRPC server has started, and
forwards every call over one loopback channel to `grpc_target`: a Unix
socket in a directory that only this process's user may open, where the
gRPC server listens too (`flowservice.server`), so the gRPC port's TLS and
its address do not matter to the bridge.

The hardening of the gRPC port holds here too (docs/security.md):
a request body (a unary message, or one message of a stream) larger than
`max_request_bytes` is refused with RESOURCE_EXHAUSTED before it is read
whole; a request line and headers larger than `MAX_HEADER_BYTES` close the
connection; past `max_connections` connections and calls at once, uvicorn
answers 503; and every call then passes the gRPC port's own authentication,
shedding and limits, as it is one of its calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import TypedDict

import grpc
import uvicorn
from connectrpc.server import ConnectASGIApplication
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import Message

from flowservice.api.http.asgi import HttpApp
from flowservice.api.http.bridge import endpoints, json_codec, proto_codec
from flowservice.security import SecuritySettings

__all__ = ["MAX_HEADER_BYTES", "HttpGateway"]

MAX_HEADER_BYTES = 16 * 1024
"""Bytes of a request's line and headers together (grpc's metadata limit is 8 KiB)."""
_KEEP_ALIVE = 5  # seconds an idle HTTP/1.1 connection stays open
_STOP_TIMEOUT = 5.0  # seconds the HTTP server gets to close, after the gRPC calls have ended

logger = logging.getLogger(__name__)


class _RpcApplication(ConnectASGIApplication[None]):
    """connectrpc's application for our endpoints (generated code would subclass it too)."""

    @property
    def path(self) -> str:
        return "/"


class HttpGateway:
    """The HTTP port and the loopback channel its calls go through."""

    def __init__(
        self,
        address: str,
        *,
        services: tuple[ServiceDescriptor, ...],
        max_request_bytes: int,
        max_response_bytes: int,
        max_connections: int,
        console_dir: Path,
        cors_origins: tuple[str, ...] = (),
        security: SecuritySettings | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._socket = _bind(address, reuse_port)
        self.port: int = self._socket.getsockname()[1]
        self.tls = security is not None and security.tls
        # A directory of this user's alone (0700) holds the socket to the gRPC port.
        self._socket_dir = tempfile.mkdtemp(prefix="flowmanager-http-")
        self.grpc_target = f"unix:{self._socket_dir}/grpc.sock"
        """Where the gRPC server must listen for the calls forwarded from HTTP."""
        self._channel_options = [
            ("grpc.max_receive_message_length", max_response_bytes),
            ("grpc.max_send_message_length", max_request_bytes),
        ]
        self._channel: grpc.aio.Channel | None = None
        found = endpoints(services, self._open_channel, _message_class)
        rpc = _RpcApplication(
            service=None,
            endpoints=lambda _: found,
            read_max_bytes=max_request_bytes,
            codecs=[proto_codec, json_codec],
        )
        app = HttpApp(
            rpc, found.keys(), console_dir, cors_origins, MAX_HEADER_BYTES, max_request_bytes
        )
        self._server = uvicorn.Server(_uvicorn_config(app, max_connections, security))

    def _open_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.grpc_target, options=self._channel_options
            )
        return self._channel

    async def start(self) -> None:
        """Starts accepting HTTP requests."""
        self._server.lifespan = self._server.config.lifespan_class(self._server.config)
        await self._server.startup(sockets=[self._socket])

    async def stop(self) -> None:
        """Closes the port and its connections; the gRPC calls have ended by then."""
        self._server.force_exit = True  # no wait for keep-alive connections
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_TIMEOUT):
                await self._server.shutdown(sockets=[self._socket])
        if self._channel is not None:
            await self._channel.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)


def _uvicorn_config(
    app: HttpApp, max_connections: int, security: SecuritySettings | None
) -> uvicorn.Config:
    """uvicorn's settings, each bound set explicitly (module docstring), loaded."""
    config = uvicorn.Config(
        app,
        http="h11",
        lifespan="off",
        log_config=None,  # the server's logging, as configured at start-up
        access_log=False,
        server_header=False,
        # uvicorn counts the connection of the request it is deciding on, too.
        limit_concurrency=max_connections + 1,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=_KEEP_ALIVE,
        timeout_graceful_shutdown=int(_STOP_TIMEOUT),
        **_tls_options(security),
    )
    config.load()
    return config


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _bind(address: str, reuse_port: bool) -> socket.socket:
    """A listening TCP socket on host:port ([::1]:port for IPv6); with `reuse_port`
    shared with the other `--workers`, as their gRPC port is."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server(
            (host, int(port)), family=family, backlog=128, reuse_port=reuse_port
        )
    except OSError as exc:
        raise RuntimeError(
            f"Failed to bind HTTP to address {address}: {exc.strerror or exc}"
        ) from None
    # asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP, which
    # create_server's are not; without it a keep-alive connection's replies
    # (headers, then body: two writes) wait for delayed ACKs, ~40 ms each.
    # Linux passes the option on to the accepted sockets.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _TlsOptions(TypedDict, total=False):
    ssl_certfile: str
    ssl_keyfile: str
    ssl_ca_certs: str
    ssl_cert_reqs: int


def _tls_options(security: SecuritySettings | None) -> _TlsOptions:
    """uvicorn's TLS settings: the gRPC port's certificate and key, and its client CA."""
    if security is None or not security.tls:
        return {}
    options = _TlsOptions(ssl_certfile=security.tls_cert, ssl_keyfile=security.tls_key)
    if security.tls_client_ca:
        options["ssl_ca_certs"] = security.tls_client_ca
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options
