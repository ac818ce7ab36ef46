"""A real HTTP server on 127.0.0.1:0 that records what it received, for the http task's tests."""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Downstream:
    """The server's address and what it saw."""

    port: int
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(seen: Downstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.headers.append({k.lower(): v for k, v in self.headers.items()})
            self._route()

        def do_POST(self) -> None:
            seen.headers.append({k.lower(): v for k, v in self.headers.items()})
            length = int(self.headers.get("content-length", "0"))
            seen.bodies.append(self.rfile.read(length))
            self._route()

        def _route(self) -> None:
            path = self.path.split("?")[0]
            if path == "/json":
                self._send(
                    200, json.dumps({"ok": True, "path": self.path}).encode(), "application/json"
                )
            elif path == "/text":
                self._send(200, b"plain words", "text/plain; charset=utf-8")
            elif path.startswith("/status/"):
                code = int(path.rsplit("/", 1)[1])
                self._send(code, b'{"error": "nope"}', "application/json", {"Retry-After": "7"})
            elif path == "/big":
                self._send(200, b"x" * 100_000, "text/plain")
            elif path == "/redirect":
                self._send(302, b"", "text/plain", {"Location": "/json"})
            elif path == "/slow":
                self._wait_for_disconnect()

        def _send(
            self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Secret-Internal", "dropped")
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _wait_for_disconnect(self) -> None:
            seen.entered.set()
            sock: socket.socket = self.connection
            for _ in range(600):  # 60 s at most
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable and sock.recv(1, socket.MSG_PEEK) == b"":
                    seen.disconnected.set()
                    return

    return Handler


@contextmanager
def downstream() -> Iterator[Downstream]:
    """A running server; shut down on exit."""
    seen = Downstream(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    server.daemon_threads = True
    seen.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
