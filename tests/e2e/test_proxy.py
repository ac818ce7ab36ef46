"""End to end through a real HTTP/2 proxy: nginx with `grpc_pass` in front of the server.

As in a mesh or behind an ingress, the client talks to nginx and nginx to the
server: unary and streaming calls, health checks, the caller's deadline and
the drain on SIGTERM must all work across the hop. Each test writes its own
nginx.conf into a temporary directory and runs nginx (Debian's, installed by
`make nginx`) in the foreground on a free loopback port, stopped at teardown.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from tests.e2e.conftest import EXAMPLES, RunningServer, serving

TIMEOUT = 15.0
"""Seconds any one wait in these tests may take."""
RPC_TIMEOUT = 10.0
"""The deadline of calls that are expected to succeed."""
FLOW_SERVICE = "flowmanager.v1.FlowService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

NGINX_CONF = """\
daemon off;
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 64;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    server {{
        {listen}
        location / {{
            grpc_pass grpc://127.0.0.1:{upstream};
            grpc_connect_timeout 5s;
            # Longer than any call here: deadlines come from the callers.
            grpc_read_timeout 30s;
            grpc_send_timeout 30s;
        }}
    }}
}}
"""


@dataclass(frozen=True, slots=True)
class RunningProxy:
    """An nginx process proxying gRPC to a server."""

    process: subprocess.Popen[bytes]
    """The nginx master process (in the foreground: `daemon off`)."""
    port: int
    """The loopback port nginx listens on, plaintext HTTP/2."""
    directory: Path
    """Its config, pid file, logs and temp files."""

    @property
    def address(self) -> str:
        """host:port for a gRPC channel."""
        return f"127.0.0.1:{self.port}"

    def error_log(self) -> str:
        """Everything nginx has logged so far."""
        return self._read("error.log")

    def access_log(self) -> str:
        """One line per call nginx has finished."""
        return self._read("access.log")

    def _read(self, name: str) -> str:
        path = self.directory / name
        return path.read_text(errors="replace") if path.exists() else ""


def nginx_binary() -> str:
    """The nginx executable (in /usr/sbin, which a non-root PATH may lack)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    assert found, "nginx is not installed: run `make nginx`"
    return found


def listen_directives(nginx: str, port: int) -> str:
    """HTTP/2 without TLS on `port`, in the syntax of this nginx's version."""
    version_text = subprocess.run(
        [nginx, "-v"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version_text)
    assert match, version_text
    # 1.25.1 replaced `listen ... http2` (now deprecated) with `http2 on`.
    if tuple(int(part) for part in match.groups()) >= (1, 25, 1):
        return f"listen 127.0.0.1:{port};\n        http2 on;"
    return f"listen 127.0.0.1:{port} http2;"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def proxying(upstream: RunningServer, directory: Path) -> Iterator[RunningProxy]:
    """Runs nginx in front of `upstream` until the block exits."""
    nginx = nginx_binary()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(
        NGINX_CONF.format(
            # As root, nginx's workers would switch to an unprivileged user that
            # cannot write to this private temporary directory.
            user="user root;" if os.geteuid() == 0 else "",
            dir=directory,
            listen=listen_directives(nginx, port),
            upstream=upstream.port,
        )
    )
    process = subprocess.Popen(
        # -e: nginx opens its error log before it reads the config; not /var/log.
        [nginx, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own process group, so that teardown can kill the workers too if
        # the master does not stop.
        start_new_session=True,
    )
    proxy = RunningProxy(process=process, port=port, directory=directory)
    try:
        wait_for_listener(proxy)
        yield proxy
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=TIMEOUT)


def wait_for_listener(proxy: RunningProxy) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        if proxy.process.poll() is not None:
            pytest.fail(f"nginx exited with {proxy.process.returncode}:\n{proxy.error_log()}")
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nginx did not listen within {TIMEOUT} s:\n{proxy.error_log()}")
            time.sleep(0.05)


def wait_for_line(read: Callable[[], str], pattern: str, timeout: float = TIMEOUT) -> None:
    """Waits, at most `timeout` seconds, for a log that `read` returns to match `pattern`."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, read()):
        assert time.monotonic() < deadline, f"no log line matches {pattern!r}:\n{read()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # DEBUG, so that completed executions are logged too (the tests read them).
    with serving(
        tmp_path_factory.mktemp("backend") / "server.log", ["--log-level", "DEBUG"]
    ) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(
    backend: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningProxy]:
    with proxying(backend, tmp_path_factory.mktemp("nginx")) as running:
        yield running


@pytest.fixture
def channel(proxy: RunningProxy) -> Iterator[grpc.Channel]:
    """A channel to nginx, never to the server itself."""
    with grpc.insecure_channel(proxy.address) as opened:
        yield opened


def test_execute_through_the_proxy(
    channel: grpc.Channel, proxy: RunningProxy, backend: RunningServer
) -> None:
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    request = json_format.Parse((EXAMPLES / "seed-flow.json").read_text(), pb.ExecuteRequest())

    response = stub.Execute(request, timeout=RPC_TIMEOUT)

    assert response.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(response.executed_tasks) == ["task1", "task2", "task3"]
    # It went through nginx, which logs the call once it is over, to the server.
    wait_for_line(proxy.access_log, r"POST /flowmanager\.v1\.FlowService/Execute HTTP/2\.0\" 200")
    wait_for_line(backend.log, rf"execution {response.execution_id} of flow 'flow123' completed")


def test_execute_stream_through_the_proxy_delivers_every_event_in_order_as_it_happens(
    channel: grpc.Channel,
) -> None:
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    request = json_format.Parse(
        (EXAMPLES / "seed-flow.json").read_text(), pb.ExecuteStreamRequest()
    )
    for task in request.flow.tasks:
        task.params.update({"sleep_ms": 300})

    arrivals: list[tuple[float, pb.ExecuteStreamResponse]] = []
    for event in stub.ExecuteStream(request, timeout=RPC_TIMEOUT):
        arrivals.append((time.monotonic(), event))
    events = [event for _, event in arrivals]

    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert len({event.execution_id for event in events}) == 1
    assert [event.WhichOneof("event") for event in events] == [
        "execution_started",
        *["task_started", "task_finished", "condition_evaluated"] * 2,
        "task_started",
        "task_finished",
        "execution_finished",
    ]
    summary = events[-1].execution_finished.result
    assert summary.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(summary.executed_tasks) == ["task1", "task2", "task3"]
    # nginx forwarded each event when it happened instead of buffering the
    # response: the first arrived about 3 x 300 ms before the last.
    assert arrivals[-1][0] - arrivals[0][0] > 0.6


def test_health_through_the_proxy(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    for service in ("", FLOW_SERVICE):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
        assert response.status == SERVING


def test_the_callers_deadline_is_honoured_across_the_proxy(
    channel: grpc.Channel, backend: RunningServer
) -> None:
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    # build_report sleeps 5 s; the caller allows 0.5 s.
    request = json_format.Parse((EXAMPLES / "slow-flow.json").read_text(), pb.ExecuteRequest())

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        stub.Execute(request, timeout=0.5)
    elapsed = time.monotonic() - started

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 2, f"DEADLINE_EXCEEDED came after {elapsed:.1f} s, not promptly"
    # The server stopped the execution too (nginx forwards the grpc-timeout
    # header, and resets the upstream stream when the caller goes away), long
    # before the 5 s task would have finished.
    wait_for_line(
        backend.log,
        r"of flow 'flow-slow' (timed_out|cancelled) after 1 task runs",
        timeout=4.5 - (time.monotonic() - started),
    )


def test_draining_reports_not_serving_through_the_proxy_before_the_port_closes(
    tmp_path: Path,
) -> None:
    with (
        serving(tmp_path / "server.log", ["--drain-delay", "3"]) as server,
        proxying(server, tmp_path / "nginx") as proxy,
        grpc.insecure_channel(proxy.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        stub = flow_service_pb2_grpc.FlowServiceStub(channel)
        check = health_pb2.HealthCheckRequest(service=FLOW_SERVICE)
        assert health.Check(check, timeout=RPC_TIMEOUT).status == SERVING

        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while health.Check(check, timeout=RPC_TIMEOUT).status != NOT_SERVING:
            assert time.monotonic() < deadline, f"still SERVING after SIGTERM:\n{server.log()}"
            time.sleep(0.05)

        # A load balancer that has not heard yet still gets its calls served
        # during the drain delay.
        request = json_format.Parse((EXAMPLES / "seed-flow.json").read_text(), pb.ExecuteRequest())
        assert stub.Execute(request, timeout=RPC_TIMEOUT).status == pb.EXECUTION_STATUS_COMPLETED

        assert server.process.wait(timeout=TIMEOUT) == 0
        assert "draining: NOT_SERVING for 3.0 s" in server.log()
