"""End to end: executions survive their server's death (kill -9) on one SQLite file.

Each flow is a chain of `http` tasks that call a small counting HTTP server
in the test process (allowed with --allow-target): it records every call's
`x-idempotency-key` and when it arrived, and answers after a short wait, so
that a kill lands while tasks are in flight. The history is read from the
SQLite file itself between a kill and the next start: what a dead server
had written. Takeover times are printed (`pytest -s`), never asserted.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from flowmanager.v1 import execution_service_pb2 as xpb
from flowmanager.v1 import execution_service_pb2_grpc, flow_service_pb2, flow_service_pb2_grpc
from tests.server_process import RunningServer, serving

LEASE = 2.0
"""--lease-seconds of the servers here: short, so that takeovers come quickly."""
TASKS = ("t1", "t2", "t3", "t4")
WAIT = 60.0
"""Seconds a test waits for something that should take a few."""


@dataclass
class Call:
    key: str
    arrived: float


@dataclass
class CountingServer:
    """An HTTP server that records each call's idempotency key and answers after `delay_ms`."""

    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def keys_since(self, moment: float) -> list[str]:
        with self.lock:
            return [c.key for c in self.calls if c.arrived >= moment]

    def wait_for_call_after(self, moment: float) -> float:
        """When the first call after `moment` arrived (waits at most `WAIT`)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            with self.lock:
                later = [c.arrived for c in self.calls if c.arrived >= moment]
            if later:
                return min(later)
            time.sleep(0.02)
        raise AssertionError("no task called the counting server")


class _HttpServer(ThreadingHTTPServer):
    request_queue_size = 128  # every execution's call at once
    daemon_threads = True


@contextmanager
def counting_server() -> Iterator[CountingServer]:
    counter = CountingServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with counter.lock:
                counter.calls.append(
                    Call(self.headers.get("x-idempotency-key", ""), time.monotonic())
                )
            delay = int(self.path.rsplit("/", 1)[-1]) / 1000  # /work/<ms>
            time.sleep(delay)
            body = b'{"ok": true}'
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the caller died meanwhile

        def log_message(self, *args: Any) -> None:
            pass

    http = _HttpServer(("127.0.0.1", 0), Handler)
    counter.url = f"http://127.0.0.1:{http.server_address[1]}/"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield counter
    finally:
        http.shutdown()
        http.server_close()


def flow(counter: CountingServer, delay_ms: int, name: str = "durable") -> dict[str, Any]:
    """A chain of http tasks, each a call to the counting server that takes `delay_ms`."""
    return {
        "id": name,
        "start_task": TASKS[0],
        "tasks": [
            {
                "name": task,
                "type": "http",
                "params": {"url": f"{counter.url}work/{delay_ms}"},
                "retry": {"max_attempts": 3},
            }
            for task in TASKS
        ],
    }


@contextmanager
def server(
    tmp_path: Path, store: Path, counter: CountingServer, name: str, *, graceful: bool = False
) -> Iterator[Server]:
    flags = [
        "--store",
        str(store),
        "--lease-seconds",
        str(LEASE),
        "--allow-target",
        counter.url,
        "--grace-period",
        "1",
    ]
    with serving(tmp_path / f"{name}.log", flags, graceful_stop=graceful) as running:
        channel = grpc.insecure_channel(running.address)
        try:
            yield Server(running, channel)
        finally:
            channel.close()


@dataclass
class Server:
    running: RunningServer
    channel: grpc.Channel

    @property
    def executions(self) -> execution_service_pb2_grpc.ExecutionServiceStub:
        return execution_service_pb2_grpc.ExecutionServiceStub(self.channel)

    @property
    def flows(self) -> flow_service_pb2_grpc.FlowServiceStub:
        return flow_service_pb2_grpc.FlowServiceStub(self.channel)

    def start(self, body: dict[str, Any], request_id: str = "") -> str:
        request = json_format.ParseDict(
            {"flow": body, "request_id": request_id}, xpb.StartExecutionRequest()
        )
        return str(self.executions.StartExecution(request, timeout=WAIT).execution.execution_id)

    def kill(self) -> float:
        """Kills the server process at once (SIGKILL); when."""
        os.kill(self.running.process.pid, signal.SIGKILL)
        self.running.process.wait(timeout=WAIT)
        return time.monotonic()


@dataclass
class History:
    """What an SQLite history file holds, read directly."""

    status: dict[str, str]
    events: dict[str, list[flow_service_pb2.ExecuteStreamResponse]]

    def finished_keys(self) -> set[str]:
        """The idempotency keys of the task runs that have a stored TaskFinished."""
        return {
            f"{execution_id}/{e.task_finished.result.task}/{e.task_finished.result.step}"
            for execution_id, events in self.events.items()
            for e in events
            if e.HasField("task_finished")
        }


def read_history(path: Path) -> History:
    with sqlite3.connect(path) as db:
        status = dict(db.execute("SELECT execution_id, status FROM executions").fetchall())
        events: dict[str, list[flow_service_pb2.ExecuteStreamResponse]] = {i: [] for i in status}
        for execution_id, payload in db.execute(
            "SELECT execution_id, payload FROM events ORDER BY execution_id, sequence"
        ):
            events[execution_id].append(flow_service_pb2.ExecuteStreamResponse.FromString(payload))
    return History(status, events)


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT} s"
        time.sleep(0.05)


def all_finished(store: Path) -> Callable[[], bool]:
    return lambda: all(s != "running" for s in read_history(store).status.values())


def assert_finished_exactly_once(history: History) -> None:
    """Every execution completed, with each task run once and each event once, in order."""
    for execution_id, events in history.events.items():
        assert history.status[execution_id] == "completed", execution_id
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds.count("execution_started") == 1
        assert kinds.count("execution_finished") == 1 and kinds[-1] == "execution_finished"
        finished = [e.task_finished.result for e in events if e.HasField("task_finished")]
        assert [(r.task, r.step) for r in finished] == [(t, i + 1) for i, t in enumerate(TASKS)]
        result = events[-1].execution_finished.result
        assert list(result.executed_tasks) == list(TASKS)


def test_executions_survive_repeated_kill_9_and_finish_exactly_once(tmp_path: Path) -> None:
    store = tmp_path / "history.db"
    takeovers: list[float] = []
    rerun: set[str] = set()
    with counting_server() as counter:
        with server(tmp_path, store, counter, "first") as first:
            ids = [first.start(flow(counter, delay_ms=400)) for _ in range(8)]
            counter.wait_for_call_after(0)
            time.sleep(0.6)  # some tasks finish, others are in flight
            killed = first.kill()
        for restart in range(3):
            dead = read_history(store)  # what the killed server had written
            done = dead.finished_keys()
            interrupted = set(counter.keys_since(0)) - done
            with server(tmp_path, store, counter, f"restart{restart}") as again:
                takeovers.append(counter.wait_for_call_after(killed) - killed)
                if restart < 2:
                    time.sleep(0.7)  # the resumed executions get a little further
                    next_kill = again.kill()
                else:
                    wait_until(all_finished(store), "every execution finishing")
            called_since = set(counter.keys_since(killed))
            # No task run that had finished before the kill ran again after it;
            # a run that was cut off ran again with the same idempotency key.
            assert not done & called_since
            rerun |= interrupted & called_since
            killed = next_kill
        after = read_history(store)
    print(f"\ntakeover after kill -9, restart included (s): {[round(t, 2) for t in takeovers]}")
    assert sorted(after.status) == sorted(ids)
    assert_finished_exactly_once(after)
    assert rerun, "no kill cut a task run off"


def execute_request(counter: CountingServer, request_id: str) -> flow_service_pb2.ExecuteRequest:
    return json_format.ParseDict(
        {"flow": flow(counter, delay_ms=400), "request_id": request_id},
        flow_service_pb2.ExecuteRequest(),
    )


def test_execute_retried_after_its_server_died_continues_the_same_execution(
    tmp_path: Path,
) -> None:
    store = tmp_path / "history.db"
    with counting_server() as counter, ThreadPoolExecutor(1) as pool:
        request = execute_request(counter, "retry-after-crash")
        with server(tmp_path, store, counter, "first") as first:
            call = pool.submit(first.flows.Execute, request, timeout=WAIT)
            counter.wait_for_call_after(0)
            time.sleep(0.6)  # t2 in flight
            killed = first.kill()
            with pytest.raises(grpc.RpcError) as raised:
                call.result(timeout=WAIT)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        dead = read_history(store)
        (execution_id,) = dead.status
        with server(tmp_path, store, counter, "second") as second:
            result = second.flows.Execute(request, timeout=WAIT)
            replay = list(second.flows.ExecuteStream(request, timeout=WAIT))
        assert not dead.finished_keys() & set(counter.keys_since(killed))
    assert result.execution_id == execution_id
    assert result.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    assert list(result.executed_tasks) == list(TASKS)
    assert [m.sequence for m in replay] == list(range(1, len(replay) + 1))
    assert replay[-1].execution_finished.result == result
    assert_finished_exactly_once(read_history(store))


def test_a_stalled_owner_is_fenced_out_by_the_process_that_took_over(tmp_path: Path) -> None:
    store = tmp_path / "history.db"
    with (
        counting_server() as counter,
        server(tmp_path, store, counter, "stalled") as stalled,
        server(tmp_path, store, counter, "other") as other,
    ):
        stalled.start(flow(counter, delay_ms=300))
        counter.wait_for_call_after(0)
        os.kill(stalled.running.process.pid, signal.SIGSTOP)  # its lease runs out
        stopped = time.monotonic()
        try:
            taken_over = counter.wait_for_call_after(stopped) - stopped
        finally:
            os.kill(stalled.running.process.pid, signal.SIGCONT)
        print(f"\ntakeover of a stalled owner (s): {taken_over:.2f}")
        wait_until(all_finished(store), "the execution finishing")
        wait_until(lambda: "was taken over" in stalled.running.log(), "the stalled owner noticing")
        assert "cannot write" not in stalled.running.log() + other.running.log()
    assert_finished_exactly_once(read_history(store))


def error_reason(error: grpc.RpcError) -> str:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")  # type: ignore[attr-defined]
    for detail in status_pb2.Status.FromString(raw).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def assert_watch_ends_cancelled(
    watcher: Server, store: Path, execution_id: str, executed: list[str]
) -> None:
    """Watching from `watcher`: every stored event, numbered 1..n, the last CANCELLED."""
    request = xpb.WatchExecutionRequest(execution_id=execution_id)
    watched = [m.event for m in watcher.executions.WatchExecution(request, timeout=WAIT)]
    assert watched == read_history(store).events[execution_id]
    assert [e.sequence for e in watched] == list(range(1, len(watched) + 1))
    end = watched[-1].execution_finished.result
    assert (end.status, end.error_type) == (
        flow_service_pb2.EXECUTION_STATUS_CANCELLED,
        "Cancelled",
    )
    assert list(end.executed_tasks) == executed
    got = watcher.executions.GetExecution(xpb.GetExecutionRequest(execution_id=execution_id))
    assert got.execution.result == end


def test_cancel_execution_reaches_the_process_that_runs_it(tmp_path: Path) -> None:
    store = tmp_path / "history.db"
    with (
        counting_server() as counter,
        server(tmp_path, store, counter, "owner") as owner,
        server(tmp_path, store, counter, "other") as other,
    ):
        execution_id = owner.start(flow(counter, delay_ms=3000))
        counter.wait_for_call_after(0)
        cancel = xpb.CancelExecutionRequest(execution_id=execution_id)
        cancelled = other.executions.CancelExecution(cancel, timeout=WAIT).execution
        assert cancelled.state == xpb.EXECUTION_STATE_FINISHED
        assert cancelled.status == flow_service_pb2.EXECUTION_STATUS_CANCELLED
        with pytest.raises(grpc.RpcError) as again:
            other.executions.CancelExecution(cancel, timeout=WAIT)
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(again.value) == "EXECUTION_FINISHED"
        time.sleep(3.5)  # t1's call has long returned: had the run gone on, t2 would be called
        assert [key.split("/")[1] for key in counter.keys_since(0)] == ["t1"]
        # The owner's engine ended it: t1's run, cut short, then the end.
        assert_watch_ends_cancelled(other, store, execution_id, ["t1"])
        interrupted = read_history(store).events[execution_id][-2].task_finished.result
        assert (interrupted.task, interrupted.error_type) == ("t1", "Cancelled")


def test_cancelling_an_execution_whose_server_died_records_it_cancelled(tmp_path: Path) -> None:
    store = tmp_path / "history.db"
    with counting_server() as counter, server(tmp_path, store, counter, "other") as other:
        with server(tmp_path, store, counter, "dead") as dead:
            execution_id = dead.start(flow(counter, delay_ms=3000))
            counter.wait_for_call_after(0)
            killed = dead.kill()
        cancel = xpb.CancelExecutionRequest(execution_id=execution_id)
        cancelled = other.executions.CancelExecution(cancel, timeout=WAIT).execution
        assert cancelled.status == flow_service_pb2.EXECUTION_STATUS_CANCELLED
        time.sleep(LEASE)  # had it been resumed rather than cancelled, t1 would run again now
        assert counter.keys_since(killed) == []
        # Built from what the dead server stored: t1 had started, not finished.
        assert_watch_ends_cancelled(other, store, execution_id, [])


def test_an_execution_cut_short_by_a_shutdown_is_resumed_by_the_next_server(
    tmp_path: Path,
) -> None:
    store = tmp_path / "history.db"
    with counting_server() as counter:
        with server(tmp_path, store, counter, "stopping", graceful=True) as stopping:
            execution_id = stopping.start(flow(counter, delay_ms=2500))
            counter.wait_for_call_after(0)
        # SIGTERM: the grace period (1 s) ended before t1 did.
        assert "stopped" in stopping.running.log()
        assert read_history(store).status[execution_id] == "running"
        with server(tmp_path, store, counter, "next"):
            wait_until(all_finished(store), "the execution finishing")
    assert_finished_exactly_once(read_history(store))
