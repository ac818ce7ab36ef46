"""The keepalive policy and connection limits, tried with raw HTTP/2 frames.

A client that pings an idle connection faster than the server allows is sent
GOAWAY ENHANCE_YOUR_CALM ("too_many_pings"); a connection left without calls
past `--max-connection-idle` is sent GOAWAY and closed.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from contextlib import AbstractContextManager

from tests.e2e.conftest import RunningServer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY = 0x4, 0x6, 0x7
ENHANCE_YOUR_CALM = 0xB
READ_TIMEOUT = 20.0
"""Seconds to wait for the server's GOAWAY before the test fails."""


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def read_frame(connection: socket.socket) -> tuple[int, int, bytes]:
    """The next frame's type, flags and payload."""
    header = read_exactly(connection, 9)
    length = int.from_bytes(header[:3], "big")
    return header[3], header[4], read_exactly(connection, length)


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection without GOAWAY")
        data += chunk
    return data


def connect(address: str) -> socket.socket:
    """A connection that has sent the client preface and an empty SETTINGS frame."""
    host, port = address.rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=READ_TIMEOUT)
    connection.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return connection


def goaway(connection: socket.socket, pings: int = 0) -> tuple[int, bytes]:
    """Sends `pings` PINGs, acks the server's SETTINGS; its GOAWAY's error code and debug data."""
    for index in range(pings):
        connection.sendall(frame(PING, 0, 0, index.to_bytes(8, "big")))
    while True:
        kind, flags, payload = read_frame(connection)
        if kind == SETTINGS and not flags & 0x1:
            connection.sendall(frame(SETTINGS, 0x1, 0))
        if kind == GOAWAY:
            return int.from_bytes(payload[4:8], "big"), payload[8:]


def test_pinging_an_idle_connection_too_often_gets_goaway_too_many_pings(
    limited_server: Callable[..., AbstractContextManager[RunningServer]],
) -> None:
    with limited_server() as server, connect(server.address) as connection:
        assert goaway(connection, pings=10) == (ENHANCE_YOUR_CALM, b"too_many_pings")


def test_an_idle_connection_is_closed_after_max_connection_idle(
    limited_server: Callable[..., AbstractContextManager[RunningServer]],
) -> None:
    with (
        limited_server("--max-connection-idle", "0.5") as server,
        connect(server.address) as connection,
    ):
        # grpc's reason for this GOAWAY (its error code says nothing more).
        assert goaway(connection)[1] == b"connection idle"
