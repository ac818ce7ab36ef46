"""HTTPS for /metrics, where one silent client cannot stall every scrape.

prometheus_client's own TLS wraps the listening socket, so each TLS
handshake runs inside `accept`, in the one thread that accepts: a client
that opens a connection and sends nothing blocks every other scrape until
it goes away. Here the accepted socket is wrapped in the request's own
thread, and each connection has `REQUEST_TIMEOUT` seconds for its
handshake and its request.
"""

from __future__ import annotations

import socket
import ssl
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import WSGIApplication

from flowservice.security.tls import TlsFiles

__all__ = ["REQUEST_TIMEOUT", "serve_https", "server_ssl_context"]

REQUEST_TIMEOUT = 10.0
"""Seconds one connection has for its TLS handshake and its HTTP request."""


def server_ssl_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """A TLS 1.2+ server context; with `client_ca`, clients need a certificate it signs.

    Raises SecurityConfigError, naming the file, when one cannot be used.
    """
    TlsFiles.load(cert, key, client_ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged, as with prometheus_client's own server."""


class _HttpsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread (ThreadingMixIn).
        request.settimeout(REQUEST_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # a failed or abandoned handshake ends only this connection
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


def serve_https(app: WSGIApplication, host: str, port: int, context: ssl.SSLContext) -> int:
    """Serves `app` over HTTPS on host:port (0 picks one) in a daemon thread; the port."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("HttpsServer", (_HttpsServer,), {"address_family": family})
    server: _HttpsServer = make_server(
        host, port, app, server_class=server_class, handler_class=_QuietHandler
    )
    server.context = context
    threading.Thread(target=server.serve_forever, name="metrics-https", daemon=True).start()
    return int(server.server_port)
