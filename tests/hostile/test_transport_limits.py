"""The HTTP/2 limits the server sets are on the wire, as a client sees them.

nghttp (nghttp2's client) prints the SETTINGS frame the server sends; grpc's
default has no MAX_CONCURRENT_STREAMS at all, which the HTTP/2 rapid-reset
advisories (CVE-2023-44487) warn against.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from flowservice.limits import Limits
from tests.e2e.conftest import RunningServer

NGHTTP = shutil.which("nghttp")
EMPTY_GRPC_MESSAGE = b"\x00\x00\x00\x00\x00"
"""A gRPC frame holding an empty message: a valid HealthCheckRequest."""


def received_settings(address: str, tmp_file: str) -> dict[str, int]:
    """The SETTINGS the server sent nghttp, by name, for one Health/Check."""
    assert NGHTTP is not None
    result = subprocess.run(
        [
            NGHTTP,
            "-v",
            "-n",
            "-H",
            ":method: POST",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            tmp_file,
            f"http://{address}/grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    received = result.stdout.split("recv SETTINGS frame", 1)[1].split("send ", 1)[0]
    return {name: int(value) for name, value in re.findall(r"\[(\w+)\(0x\w+\):(\d+)\]", received)}


@pytest.mark.skipif(NGHTTP is None, reason="nghttp (nghttp2-client) is not installed")
@pytest.mark.parametrize("flags", [(), ("--max-concurrent-streams", "123")], ids=["default", "set"])
def test_the_settings_frame_carries_max_concurrent_streams(
    limited_server: Callable[..., AbstractContextManager[RunningServer]],
    tmp_path: Path,
    flags: tuple[str, ...],
) -> None:
    body = tmp_path / "request.bin"
    body.write_bytes(EMPTY_GRPC_MESSAGE)
    expected = int(flags[1]) if flags else Limits().max_concurrent_streams
    with limited_server(*flags) as server:
        settings = received_settings(server.address, str(body))
    assert settings["SETTINGS_MAX_CONCURRENT_STREAMS"] == expected
