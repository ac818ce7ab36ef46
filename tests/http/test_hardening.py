"""The HTTP port is no way around the gRPC port's hardening (docs/security.md).

A caller who hangs up cancels its execution; bodies, headers and connections
are bounded; and the gRPC port's shedding applies to HTTP calls, which are
its calls.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.http.conftest import EXAMPLES, HttpServer, curl, http_serving
from tests.http.framing import envelope, frames

TIMEOUT = 20.0
"""Seconds any one wait here may take."""
SMALL_REQUESTS = 64 * 1024
"""--max-request-bytes of the server under test."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    flags = ["--store", "memory", "--max-request-bytes", str(SMALL_REQUESTS)]
    with http_serving(tmp_path_factory.mktemp("hardening") / "server.log", flags) as s:
        yield s


def post_json(url: str, body: bytes, *headers: str) -> tuple[int, dict[str, Any]]:
    """POSTs JSON with curl: the HTTP status and the JSON reply ({} for another body)."""
    args = [arg for header in headers for arg in ("-H", header)]
    result = curl(
        "-o", "-", "-w", "\n%{http_code}", "-H", "content-type: application/json",
        *args, "--data-binary", "@-", url, stdin=body,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    text, _, status = result.stdout.rpartition(b"\n")
    try:
        return int(status), json.loads(text)
    except ValueError:
        return int(status), {}


class SlowStream:
    """curl reading ExecuteStream of the slow flow (5 s), as a browser tab would."""

    def __init__(self, server: HttpServer) -> None:
        self.process = subprocess.Popen(
            [
                "curl", "-sS", "-N", "--max-time", "30",
                "-H", "content-type: application/connect+json",
                "--data-binary", "@-", server.rpc("FlowService/ExecuteStream"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(envelope((EXAMPLES / "slow-flow.json").read_bytes()))
            self.process.stdin.close()
            self.first = json.loads(_read_envelope(self.process.stdout))
        except BaseException:
            self.hang_up()
            raise

    @property
    def execution_id(self) -> str:
        return str(self.first["executionId"])

    def hang_up(self) -> None:
        self.process.kill()
        self.process.wait(timeout=TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _read_envelope(stream: IO[bytes]) -> bytes:
    head = stream.read(5)
    assert len(head) == 5, "the stream ended before its first message"
    return stream.read(int.from_bytes(head[1:], "big"))


def execution_state(server: HttpServer, execution_id: str) -> tuple[str, str | None]:
    """The execution's state and, once it has finished, its status."""
    status, reply = post_json(
        server.rpc("ExecutionService/GetExecution"),
        json.dumps({"execution_id": execution_id}).encode(),
    )
    assert status == 200, reply
    execution = reply["execution"]
    return execution["state"], execution.get("status")


def test_a_client_that_hangs_up_cancels_the_execution(server: HttpServer) -> None:
    stream = SlowStream(server)
    assert "executionStarted" in stream.first
    assert execution_state(server, stream.execution_id)[0] == "EXECUTION_STATE_RUNNING"

    stream.hang_up()

    deadline = time.monotonic() + TIMEOUT
    while (found := execution_state(server, stream.execution_id))[0] == "EXECUTION_STATE_RUNNING":
        assert time.monotonic() < deadline, "the execution outlived its caller"
        time.sleep(0.1)
    assert found == ("EXECUTION_STATE_FINISHED", "EXECUTION_STATUS_CANCELLED")


def test_a_body_over_the_request_limit_is_refused(server: HttpServer) -> None:
    request = json.loads((EXAMPLES / "seed-flow.json").read_text())
    request["input"] = {"padding": "x" * SMALL_REQUESTS}

    status, reply = post_json(server.rpc("FlowService/Execute"), json.dumps(request).encode())

    assert status == 429
    assert reply["code"] == "resource_exhausted"


def test_a_stream_message_announcing_too_many_bytes_is_refused_unread(
    server: HttpServer,
) -> None:
    # The envelope claims 1 GiB and sends 10 bytes: refused from the length alone.
    body = (0).to_bytes(1, "big") + (1 << 30).to_bytes(4, "big") + b"{}" * 5
    result = curl(
        "-o", "-", "-H", "content-type: application/connect+json",
        "--data-binary", "@-", server.rpc("FlowService/ExecuteStream"), stdin=body,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr.decode()
    end = json.loads(result.stdout[5:])
    assert end["error"]["code"] == "resource_exhausted"


def test_oversized_headers_get_no_call(server: HttpServer) -> None:
    result = curl(
        "-o", "/dev/null", "-w", "%{http_code}",
        "-H", "content-type: application/json", "-H", "x-padding: " + "a" * 20_000,
        "--data-binary", f"@{EXAMPLES / 'seed-flow.json'}", server.rpc("FlowService/Execute"),
    )  # fmt: skip

    assert result.stdout == b"431"


def test_a_header_block_that_never_ends_is_cut_off(server: HttpServer) -> None:
    """A request whose headers grow without end is closed once past the bound."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT) as raw:
        raw.sendall(b"POST /flowmanager.v1.FlowService/Execute HTTP/1.1\r\nhost: x\r\n")
        closed = False
        try:
            for _ in range(200):  # 200 x 1 KiB, far past the 16 KiB bound
                raw.sendall(b"x-more: " + b"a" * 1024 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not closed:
            reply = raw.recv(1024)
            assert reply == b"" or not reply.startswith(b"HTTP/1.1 200")


@pytest.fixture
def one_call_server(tmp_path: Path) -> Iterator[HttpServer]:
    flags = ["--store", "memory", "--max-concurrent-rpcs", "1"]
    with http_serving(tmp_path / "server.log", flags) as s:
        yield s


def test_the_grpc_ports_shedding_applies_to_http_calls(one_call_server: HttpServer) -> None:
    stream = SlowStream(one_call_server)
    try:
        status, reply = post_json(
            one_call_server.rpc("FlowService/Execute"),
            (EXAMPLES / "seed-flow.json").read_bytes(),
        )
    finally:
        stream.hang_up()

    assert status == 429
    assert reply["code"] == "resource_exhausted"
    assert {d["type"] for d in reply["details"]} >= {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"}


def test_past_max_connections_the_port_answers_503(tmp_path: Path) -> None:
    flags = ["--store", "memory", "--max-connections", "2"]
    with http_serving(tmp_path / "server.log", flags) as server:
        streams = [SlowStream(server)]
        try:
            streams.append(SlowStream(server))  # two calls at once are let in
            status, _ = post_json(
                server.rpc("FlowService/Execute"), (EXAMPLES / "seed-flow.json").read_bytes()
            )
        finally:
            for stream in streams:
                stream.hang_up()

    assert status == 503


def test_a_draining_server_ends_http_streams_and_exits(tmp_path: Path) -> None:
    flags = ["--store", "memory", "--grace-period", "1", "--drain-delay", "0"]
    with http_serving(tmp_path / "server.log", flags) as server:
        stream = SlowStream(server)
        try:
            server.grpc.process.send_signal(signal.SIGTERM)
            assert server.grpc.process.wait(timeout=TIMEOUT) == 0
            assert stream.process.stdout is not None
            rest = stream.process.stdout.read()
        finally:
            stream.hang_up()

    end = json.loads(frames(rest)[-1][1])
    assert end["error"]["code"] == "unavailable"


def test_the_callers_request_id_is_in_the_servers_log(tmp_path: Path) -> None:
    flags = ["--store", "memory", "--log-format", "json", "--log-level", "DEBUG"]
    with http_serving(tmp_path / "server.log", flags) as server:
        status, _ = post_json(
            server.rpc("FlowService/Execute"),
            (EXAMPLES / "seed-flow.json").read_bytes(),
            "x-request-id: http-req-42",
        )
        lines = [
            json.loads(line) for line in server.grpc.log().splitlines() if line.startswith("{")
        ]

    assert status == 200
    assert any(line.get("request_id") == "http-req-42" for line in lines)


def test_a_grpc_web_text_body_over_the_request_limit_is_refused(server: HttpServer) -> None:
    result = curl(
        "-o", "/dev/null", "-w", "%{http_code}",
        "-H", "content-type: application/grpc-web-text",
        "--data-binary", "@-", server.rpc("FlowService/Execute"),
        stdin=b"QUFB" * SMALL_REQUESTS,
    )  # fmt: skip

    assert result.stdout == b"413"


def executions_of(server: HttpServer, flow_id: str) -> list[dict[str, Any]]:
    status, reply = post_json(server.rpc("ExecutionService/ListExecutions"), b"{}")
    assert status == 200, reply
    return [e for e in reply.get("executions", []) if e["flowId"] == flow_id]


def test_a_unary_caller_that_hangs_up_cancels_the_execution_too(server: HttpServer) -> None:
    request = json.loads((EXAMPLES / "slow-flow.json").read_text())
    request["flow"]["id"] = "flow-unary-hang-up"
    caller = subprocess.Popen(
        ["curl", "-sS", "--max-time", "30", "-H", "content-type: application/json",
         "--data-binary", json.dumps(request), server.rpc("FlowService/Execute")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while not executions_of(server, "flow-unary-hang-up"):
            assert time.monotonic() < deadline, "the execution never started"
            time.sleep(0.05)
    finally:
        caller.kill()
        caller.wait(timeout=TIMEOUT)

    deadline = time.monotonic() + TIMEOUT
    while (found := executions_of(server, "flow-unary-hang-up")[0])[
        "state"
    ] == "EXECUTION_STATE_RUNNING":
        assert time.monotonic() < deadline, "the execution outlived its caller"
        time.sleep(0.1)
    assert found["status"] == "EXECUTION_STATUS_CANCELLED"
