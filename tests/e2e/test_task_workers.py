"""End to end: `worker` tasks run by real worker processes against the real server.

Python workers are `tests/e2e/worker_process.py` subprocesses (the
`flowservice.Worker` helper); the tests wait on the lines they print, never
on time. Also covered: a worker killed mid-task (the retry reaches another),
cancellations reaching the worker (the caller's deadline, the caller
cancelling), results for finished or unknown assignments (NOT_FOUND, refused
on the stream), and a task that waits with no worker until its timeout.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from flowmanager.v1 import (
    flow_service_pb2,
    flow_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from tests.e2e.conftest import GRPCURL, REPO_ROOT, RunningServer

WORK_METHOD = "flowmanager.v1.WorkerService/Work"
COMPLETE_METHOD = "flowmanager.v1.WorkerService/CompleteTask"
EXECUTE_METHOD = "flowmanager.v1.FlowService/Execute"
NODE_WORKER = REPO_ROOT / "tests" / "interop" / "node" / "dist" / "src" / "worker.js"
LINE_TIMEOUT = 30.0
"""Seconds a worker process may take to print the line a test waits for."""


class WorkerProcess:
    """A `worker_process.py` subprocess and the lines it prints."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())

    def expect(self, prefix: str) -> str:
        """The next line, which must start with `prefix` (waits at most `LINE_TIMEOUT`)."""
        line = self._lines.get(timeout=LINE_TIMEOUT)
        assert line.startswith(prefix), line
        return line

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=LINE_TIMEOUT)
        self._reader.join(timeout=LINE_TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts; each is killed at teardown."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_worker(
    started: list[WorkerProcess], server: RunningServer, mode: str, name: str
) -> WorkerProcess:
    command = [sys.executable, "-m", "tests.e2e.worker_process", server.address, mode, name]
    worker = WorkerProcess(command)
    started.append(worker)
    worker.expect("READY")
    return worker


def worker_flow(queue_name: str = "q", **task: Any) -> dict[str, Any]:
    step = {"name": "pay", "type": "worker", "params": {"queue": queue_name, "amount": 3}, **task}
    return {"id": "pay-flow", "name": "pay", "start_task": "pay", "tasks": [step]}


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield channel


async def execute(
    channel: grpc.aio.Channel, flow: dict[str, Any], deadline: float | None = None
) -> flow_service_pb2.ExecuteResponse:
    request = json_format.ParseDict({"flow": flow}, flow_service_pb2.ExecuteRequest())
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    return await stub.Execute(request, timeout=deadline)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo")


async def test_a_python_worker_completes_a_worker_task(
    server: RunningServer, channel: grpc.aio.Channel, workers: list[WorkerProcess]
) -> None:
    start_worker(workers, server, "echo", "py-1")
    response = await execute(channel, worker_flow())
    assert response.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    output = json_format.MessageToDict(response.task_results[0].output)
    assert output == {"worker": "py-1", "params": {"queue": "q", "amount": 3}, "attempt": 1}


async def test_a_typescript_worker_completes_a_worker_task(
    server: RunningServer, channel: grpc.aio.Channel, workers: list[WorkerProcess]
) -> None:
    node = shutil.which("node")
    assert node, "node is not on PATH: the TypeScript worker needs Node.js 20 or newer"
    assert NODE_WORKER.exists(), f"{NODE_WORKER} is missing: run `make interop-node`"
    worker = WorkerProcess([node, str(NODE_WORKER), server.address, "ts-queue", "ts-1"])
    workers.append(worker)
    worker.expect("READY")
    response = await execute(channel, worker_flow("ts-queue"))
    assert response.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    output = json_format.MessageToDict(response.task_results[0].output)
    assert output == {
        "worker": "ts-1",
        "params": {"queue": "ts-queue", "amount": 3},
        "attempt": 1,
        "hasDeadline": True,
    }
    assert worker.expect("ASSIGNED").split()[1]


async def test_a_cancellation_reaches_the_typescript_worker(
    server: RunningServer, channel: grpc.aio.Channel, workers: list[WorkerProcess]
) -> None:
    node = shutil.which("node")
    assert node, "node is not on PATH: the TypeScript worker needs Node.js 20 or newer"
    command = [node, str(NODE_WORKER), server.address, "ts-hang", "ts-2", "hang"]
    worker = WorkerProcess(command)
    workers.append(worker)
    worker.expect("READY")
    body = {"flow": worker_flow("ts-hang")}
    request = json_format.ParseDict(body, flow_service_pb2.ExecuteStreamRequest())
    call = flow_service_pb2_grpc.FlowServiceStub(channel).ExecuteStream(request)
    assigned = (await asyncio.to_thread(worker.expect, "ASSIGNED")).split()[1]
    call.cancel()
    assert (await asyncio.to_thread(worker.expect, "CANCELLED")).split()[1] == assigned


async def test_a_killed_worker_loses_its_task_and_the_retry_finishes_on_another(
    server: RunningServer, channel: grpc.aio.Channel, workers: list[WorkerProcess]
) -> None:
    doomed = start_worker(workers, server, "hang", "doomed")
    retry = {"max_attempts": 2, "initial_interval": "0.01s"}
    run = asyncio.create_task(execute(channel, worker_flow(retry=retry)))
    await asyncio.to_thread(doomed.expect, "ASSIGNED")
    start_worker(workers, server, "echo", "survivor")
    doomed.process.send_signal(signal.SIGKILL)
    response = await run
    assert response.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    result = response.task_results[0]
    assert result.attempts == 2
    assert json_format.MessageToDict(result.output)["worker"] == "survivor"


async def test_a_killed_worker_without_retry_fails_the_task_as_worker_lost(
    server: RunningServer, channel: grpc.aio.Channel, workers: list[WorkerProcess]
) -> None:
    doomed = start_worker(workers, server, "hang", "doomed")
    run = asyncio.create_task(execute(channel, worker_flow("q")))
    await asyncio.to_thread(doomed.expect, "ASSIGNED")
    doomed.process.send_signal(signal.SIGKILL)
    response = await run
    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    assert response.task_results[0].error_type == "WorkerLost"


async def test_the_callers_deadline_cancels_the_assignment_on_the_worker(
    server: RunningServer, channel: grpc.aio.Channel, workers: list[WorkerProcess]
) -> None:
    worker = start_worker(workers, server, "hang", "slow")
    run = asyncio.create_task(execute(channel, worker_flow(), deadline=2.0))
    assigned = (await asyncio.to_thread(worker.expect, "ASSIGNED")).split()[1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await asyncio.to_thread(worker.expect, "CANCELLED")).split()[1] == assigned


async def test_the_caller_cancelling_cancels_the_assignment_on_the_worker(
    server: RunningServer, channel: grpc.aio.Channel, workers: list[WorkerProcess]
) -> None:
    worker = start_worker(workers, server, "hang", "slow")
    request = json_format.ParseDict(
        {"flow": worker_flow()}, flow_service_pb2.ExecuteStreamRequest()
    )
    call = flow_service_pb2_grpc.FlowServiceStub(channel).ExecuteStream(request)
    assigned = (await asyncio.to_thread(worker.expect, "ASSIGNED")).split()[1]
    call.cancel()
    assert (await asyncio.to_thread(worker.expect, "CANCELLED")).split()[1] == assigned


class ManualWorker:
    """A worker stream driven by the test itself: it reads the pushes one by one."""

    def __init__(self, channel: grpc.aio.Channel, queue_name: str) -> None:
        self._outgoing: asyncio.Queue[worker_service_pb2.WorkRequest | None] = asyncio.Queue()
        start = worker_service_pb2.WorkStart(queues=[queue_name], credits=1)
        self._outgoing.put_nowait(worker_service_pb2.WorkRequest(start=start))
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self.call = stub.Work(self._requests())

    async def _requests(self) -> AsyncIterator[worker_service_pb2.WorkRequest]:
        while (request := await self._outgoing.get()) is not None:
            yield request

    def send(self, request: worker_service_pb2.WorkRequest) -> None:
        self._outgoing.put_nowait(request)

    async def next(self, kind: str) -> Any:
        response = await self.call.read()
        assert response is not grpc.aio.EOF
        assert response.WhichOneof("kind") == kind, response
        return getattr(response, kind)


async def test_a_second_result_and_a_result_for_an_unknown_assignment_get_not_found(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    worker = ManualWorker(channel, "manual")
    await worker.next("started")
    run = asyncio.create_task(execute(channel, worker_flow("manual")))
    assignment = await worker.next("assignment")
    assert json_format.MessageToDict(assignment.params) == {"queue": "manual", "amount": 3}
    assert assignment.idempotency_key == f"{assignment.execution_id}/pay/1"
    assert assignment.HasField("deadline")
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    output = json_format.ParseDict({"by": "hand"}, worker_service_pb2.CompleteTaskRequest().output)
    await stub.CompleteTask(
        worker_service_pb2.CompleteTaskRequest(
            assignment_id=assignment.assignment_id, output=output
        )
    )
    response = await run
    assert json_format.MessageToDict(response.task_results[0].output) == {"by": "hand"}
    for late in (
        stub.CompleteTask(
            worker_service_pb2.CompleteTaskRequest(assignment_id=assignment.assignment_id)
        ),
        stub.FailTask(worker_service_pb2.FailTaskRequest(assignment_id=assignment.assignment_id)),
        stub.CompleteTask(worker_service_pb2.CompleteTaskRequest(assignment_id="no-such-id")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await late
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert reason_of(caught.value) == "ASSIGNMENT_NOT_FOUND"
    # The same late result on the stream is refused with a push; the stream lives on.
    late_on_stream = worker_service_pb2.CompleteTaskRequest(assignment_id=assignment.assignment_id)
    worker.send(worker_service_pb2.WorkRequest(complete=late_on_stream))
    refused = await worker.next("refused")
    assert (refused.assignment_id, refused.reason) == (
        assignment.assignment_id,
        "ASSIGNMENT_NOT_FOUND",
    )
    worker.send(None)


async def test_credits_added_on_the_stream_let_a_second_assignment_through(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    worker = ManualWorker(channel, "credits")
    await worker.next("started")
    runs = [asyncio.create_task(execute(channel, worker_flow("credits"))) for _ in range(2)]
    first = await worker.next("assignment")
    worker.send(worker_service_pb2.WorkRequest(credits=worker_service_pb2.WorkCredits(credits=1)))
    second = await worker.next("assignment")
    # An invalid result is refused and changes nothing: the assignment still awaits one.
    bad = worker_service_pb2.FailTaskRequest(
        assignment_id=first.assignment_id, error_type="T" * 999
    )
    worker.send(worker_service_pb2.WorkRequest(fail=bad))
    refused = await worker.next("refused")
    assert (refused.assignment_id, refused.reason) == (first.assignment_id, "INVALID_RESULT")
    for assignment in (first, second):
        done = worker_service_pb2.CompleteTaskRequest(assignment_id=assignment.assignment_id)
        worker.send(worker_service_pb2.WorkRequest(complete=done))
    responses = await asyncio.gather(*runs)
    assert [r.status for r in responses] == [flow_service_pb2.EXECUTION_STATUS_COMPLETED] * 2
    worker.send(None)


async def test_an_invalid_start_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    start = worker_service_pb2.WorkStart(queues=["q" * 1000], credits=0)

    async def requests() -> AsyncIterator[worker_service_pb2.WorkRequest]:
        yield worker_service_pb2.WorkRequest(start=start)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Work(requests()):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "INVALID_WORK_REQUEST"


async def test_with_no_worker_the_task_waits_until_its_timeout(channel: grpc.aio.Channel) -> None:
    flow = worker_flow("nobody-serves-this", timeout="0.3s")
    validation = await flow_service_pb2_grpc.FlowServiceStub(channel).Validate(
        json_format.ParseDict({"flow": flow}, flow_service_pb2.ValidateRequest())
    )
    assert [(w.field, w.reason) for w in validation.warnings] == [
        ("flow.tasks[0].params.queue", "NO_WORKER_FOR_QUEUE")
    ]
    response = await execute(channel, flow)
    assert response.status == flow_service_pb2.EXECUTION_STATUS_FAILED
    assert response.task_results[0].error_type == "TaskTimeout"


def test_grpcurl_serves_a_queue_by_hand_and_answers_with_complete_task(
    server: RunningServer, grpcurl: Any
) -> None:
    """docs/workers.md's session: grpcurl holds the Work stream, a second grpcurl answers."""
    command = [str(GRPCURL), "-plaintext", "-d", "@", server.address, WORK_METHOD]
    holder = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        holder.stdin.write('{"start": {"queues": ["by-hand"], "credits": 1}}\n')
        holder.stdin.flush()
        assert "started" in read_json_message(holder.stdout)
        flow_file = server.log_path.parent / "by-hand.json"
        flow_file.write_text(json.dumps({"flow": worker_flow("by-hand")}))
        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(grpcurl, "-d", "@", server.address, EXECUTE_METHOD, stdin=flow_file)
            assignment = read_json_message(holder.stdout)["assignment"]
            assert assignment["params"] == {"queue": "by-hand", "amount": 3}
            body = json.dumps(
                {"assignment_id": assignment["assignment_id"], "output": {"ok": True}}
            )
            answer = grpcurl("-d", body, server.address, COMPLETE_METHOD)
            assert answer.returncode == 0, answer.stderr
            assert json.loads(answer.stdout) == {}
            executed = run.result(timeout=LINE_TIMEOUT)
        assert executed.returncode == 0, executed.stderr
        response = json.loads(executed.stdout)
        assert response["status"] == "EXECUTION_STATUS_COMPLETED"
        assert response["task_results"][0]["output"] == {"ok": True}
        again = grpcurl("-format-error", "-d", body, server.address, COMPLETE_METHOD)
        assert again.returncode != 0
        status = json.loads(again.stdout or again.stderr)
        assert status["code"] == grpc.StatusCode.NOT_FOUND.value[0]
        assert status["details"][0]["reason"] == "ASSIGNMENT_NOT_FOUND"
    finally:
        holder.kill()
        holder.wait(timeout=LINE_TIMEOUT)
        holder.stdin.close()
        holder.stdout.close()


def read_json_message(stream: IO[str]) -> dict[str, Any]:
    """The next JSON message grpcurl printed (it prints each over several lines)."""
    text = ""
    while True:
        line = stream.readline()
        assert line, f"grpcurl ended; read so far: {text!r}"
        text += line
        try:
            message: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:
            continue
        return message


def test_reflection_and_health_name_the_worker_service(server: RunningServer, grpcurl: Any) -> None:
    listed = grpcurl(server.address, "list")
    assert "flowmanager.v1.WorkerService" in listed.stdout.split()
    health = grpcurl(
        "-d",
        '{"service": "flowmanager.v1.WorkerService"}',
        server.address,
        "grpc.health.v1.Health/Check",
    )
    assert json.loads(health.stdout) == {"status": "SERVING"}
