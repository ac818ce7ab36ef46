"""The envelopes of Connect streams and gRPC-Web: five bytes (flags, length), then the message."""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = ["END_STREAM", "TRAILERS", "envelope", "frames", "json_frames"]

END_STREAM = 0x02
"""The flag of a Connect stream's last envelope (its end-of-stream JSON)."""
TRAILERS = 0x80
"""The flag of gRPC-Web's last frame (its trailers, as HTTP/1 header lines)."""


def envelope(message: bytes, flags: int = 0) -> bytes:
    """One enveloped message."""
    return struct.pack(">BI", flags, len(message)) + message


def frames(body: bytes) -> list[tuple[int, bytes]]:
    """Every (flags, message) of a streamed body; fails on a truncated one."""
    found = []
    position = 0
    while position < len(body):
        flags, length = struct.unpack_from(">BI", body, position)
        message = body[position + 5 : position + 5 + length]
        assert len(message) == length, "a truncated envelope"
        found.append((flags, message))
        position += 5 + length
    return found


def json_frames(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A Connect JSON stream's messages and its end-of-stream JSON."""
    found = frames(body)
    assert found and found[-1][0] == END_STREAM, "no end-of-stream envelope last"
    messages = [json.loads(message) for flags, message in found[:-1]]
    assert all(flags == 0 for flags, _ in found[:-1])
    return messages, json.loads(found[-1][1])
