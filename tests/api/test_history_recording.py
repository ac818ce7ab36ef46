"""Execute and ExecuteStream record their executions in a real SQLite file (docs/history.md)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowmanager.v1 import flow_service_pb2 as pb
from flowmanager.v1 import flow_service_pb2_grpc
from flowservice.api.journal import stored_messages
from flowservice.history import RUNNING, StoredExecution
from flowservice.observability import Metrics
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from tests.api.conftest import Recorder, execute_request, stream_request
from tests.api.test_execute import seed_body
from tests.api.test_execution_control import error_info, slow_then_more

Stub = flow_service_pb2_grpc.FlowServiceStub


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(address="127.0.0.1:0", store=str(tmp_path / "history.db"))


async def _stored(server: FlowServer, execution_id: str) -> StoredExecution:
    assert server.history is not None
    stored = await server.history.store.get(execution_id)
    assert stored is not None
    return stored


async def test_execute_is_recorded_before_its_reply(
    server: FlowServer, stub: Stub, tmp_path: Path
) -> None:
    request = execute_request(seed_body())
    response = await stub.Execute(request, metadata=[("x-request-id", "req-7")])

    # Read through another connection: what the reply reports is in the file.
    db = sqlite3.connect(tmp_path / "history.db")
    row = db.execute(
        "SELECT status, summary, request, caller_request_id FROM executions WHERE execution_id = ?",
        (response.execution_id,),
    ).fetchone()
    assert row == ("completed", response.SerializeToString(), request.SerializeToString(), "req-7")
    stored = await _stored(server, response.execution_id)
    assert stored.record.flow_id == "flow123" and stored.finished_at is not None
    assert server.history is not None
    events = await server.history.store.events(response.execution_id)
    # Nobody listened and it ended at once: its last event alone (tests/api/test_journal.py).
    assert len(events) == 1
    last = pb.ExecuteStreamResponse.FromString(events[-1].payload)
    assert last.execution_finished.result == response


async def test_the_deadline_of_the_call_is_kept_for_a_resumption(
    server: FlowServer, stub: Stub
) -> None:
    with_deadline = await stub.Execute(execute_request(seed_body()), timeout=30)
    without = await stub.Execute(execute_request(seed_body()))

    kept = (await _stored(server, with_deadline.execution_id)).record.time_allowed
    assert kept is not None and 25 < kept < 31  # what was left (grpc rounds the timeout up)
    assert (await _stored(server, without.execution_id)).record.time_allowed is None


async def test_execute_stream_records_the_events_it_sends(server: FlowServer, stub: Stub) -> None:
    sent = [message async for message in stub.ExecuteStream(stream_request(seed_body()))]

    assert server.history is not None
    store = server.history.store
    rows = await store.events(sent[0].execution_id)
    execution = await store.get(sent[0].execution_id)
    assert execution is not None
    # Stored sparse (flowservice.api.journal): read back, exactly what was sent.
    assert stored_messages(execution, rows) == sent
    assert len(rows) < len(sent)
    assert (await _stored(server, sent[0].execution_id)).status == "completed"


async def test_an_execution_whose_caller_goes_away_is_recorded_cancelled(
    server: FlowServer, stub: Stub, recorder: Recorder
) -> None:
    call = stub.ExecuteStream(stream_request(slow_then_more()))
    first = await call.read()
    await asyncio.wait_for(_until(lambda: bool(recorder.started)), 30)
    call.cancel()
    await asyncio.wait_for(recorder.any_cancelled.wait(), 30)

    async def cancelled() -> bool:
        return (await _stored(server, first.execution_id)).status == "cancelled"

    await asyncio.wait_for(_until_async(cancelled), 30)


async def test_a_store_that_cannot_write_fails_calls_and_health_until_it_can(
    server: FlowServer, stub: Stub, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    db = sqlite3.connect(tmp_path / "history.db", isolation_level=None)
    db.execute("ALTER TABLE events RENAME TO events_away")  # every write of an event fails

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Execute(execute_request(seed_body()))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(failed.value).reason == "STORE_UNAVAILABLE"
    assert "history.db" not in (failed.value.details() or "")  # the path is the operator's

    async def serving(expected: int) -> bool:
        reply = await health.Check(health_pb2.HealthCheckRequest())
        return bool(reply.status == expected)

    await asyncio.wait_for(
        _until_async(lambda: serving(health_pb2.HealthCheckResponse.NOT_SERVING)), 30
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Execute(execute_request(seed_body()))
    assert error_info(refused.value).reason == "STORE_UNAVAILABLE"

    db.execute("ALTER TABLE events_away RENAME TO events")
    await asyncio.wait_for(
        _until_async(lambda: serving(health_pb2.HealthCheckResponse.SERVING)), 30
    )
    response = await stub.Execute(execute_request(seed_body()))
    assert (await _stored(server, response.execution_id)).status == "completed"


class TestRetention:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        # 0.000005 days: about 0.4 s.
        return Settings(address="127.0.0.1:0", store=str(tmp_path / "h.db"), retention=0.000005)

    async def test_finished_executions_older_than_the_retention_are_deleted(
        self, server: FlowServer, stub: Stub
    ) -> None:
        response = await stub.Execute(execute_request(seed_body()))
        assert server.history is not None
        store = server.history.store

        async def gone() -> bool:
            return await store.get(response.execution_id) is None

        await asyncio.wait_for(_until_async(gone), 30)
        assert await store.events(response.execution_id) == []


async def test_a_running_execution_is_recorded_running(
    server: FlowServer, stub: Stub, recorder: Recorder
) -> None:
    call = stub.ExecuteStream(stream_request(slow_then_more()))
    first = await call.read()
    assert (await _stored(server, first.execution_id)).status == RUNNING
    call.cancel()


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


async def _until_async(check: Callable[[], Awaitable[bool]]) -> None:
    while not await check():
        await asyncio.sleep(0.02)


async def test_metrics_count_stored_executions_write_latency_and_errors(
    settings: Settings, tmp_path: Path
) -> None:
    metrics = Metrics()
    flow_server = create_server(settings, metrics=metrics)
    await flow_server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{flow_server.port}") as channel:
            stub = flow_service_pb2_grpc.FlowServiceStub(channel)
            for _ in range(3):
                await stub.Execute(execute_request(seed_body()))
            value = metrics.registry.get_sample_value
            assert value("flowmanager_stored_executions") == 3
            assert (value("flowmanager_store_write_seconds_count") or 0) >= 1
            assert value("flowmanager_store_errors_total") == 0

            db = sqlite3.connect(tmp_path / "history.db", isolation_level=None)
            db.execute("ALTER TABLE events RENAME TO events_away")
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Execute(execute_request(seed_body()))
            assert (value("flowmanager_store_errors_total") or 0) >= 1
            assert value("flowmanager_stored_executions") == 3
            db.execute("ALTER TABLE events_away RENAME TO events")
    finally:
        await flow_server.stop(grace=None)
