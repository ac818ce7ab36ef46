"""The HTTP port in-process: what only the server's side of a connection shows."""

from __future__ import annotations

import asyncio
import socket

from flowservice.server import create_server
from flowservice.settings import Settings


async def test_connections_send_without_nagle_delays() -> None:
    """A keep-alive reply is two writes (headers, body); with Nagle's algorithm the
    second waits for the client's delayed ACK, some 40 ms a call. asyncio sets
    TCP_NODELAY only on sockets it makes itself, so the gateway must."""
    server = create_server(
        Settings(store="memory", address="127.0.0.1:0", http_address="127.0.0.1:0")
    )
    await server.start()
    try:
        assert server.http is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http.port)
        # A missing asset: 404 whether or not console/dist is built.
        writer.write(b"GET /x.js HTTP/1.1\r\nhost: test\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 404")
        connections = list(server.http._server.server_state.connections)
        accepted = [c.transport.get_extra_info("socket") for c in connections]

        assert len(accepted) == 1
        assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop(grace=None)
