"""The `http` task type against a real HTTP server: outcomes, retries, limits, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from flowservice import Engine, Flow, Limits, RetryPolicy, Task
from flowservice.errors import InvalidFlowError
from flowservice.models import ExecutionStatus, ExecutionSummary, TaskOutcome
from flowservice.outbound import HttpTask, OutboundPolicy
from flowservice.tasks import TaskRegistry
from tests.outbound.downstream import Downstream, downstream

RETRY = RetryPolicy(
    max_attempts=3, initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=5)
)


@pytest.fixture
def server() -> Iterator[Downstream]:
    with downstream() as seen:
        yield seen


class Setup:
    def __init__(self, server: Downstream, allow: tuple[str, ...], targets: tuple[str, ...] = ()):
        self.task = HttpTask(OutboundPolicy.parse(allow, targets), Limits(max_output_bytes=10_000))
        self.delays: list[float] = []

        async def sleep(seconds: float) -> None:
            self.delays.append(seconds)

        self.engine = Engine(
            TaskRegistry({"http": self.task}), limits=Limits(max_output_bytes=10_000), sleep=sleep
        )

    async def call(
        self,
        params: dict[str, Any],
        *,
        flow_input: dict[str, Any] | None = None,
        flow_timeout: timedelta | None = None,
        **task: Any,
    ) -> ExecutionSummary:
        flow = Flow(
            id="f",
            name="f",
            start_task="call",
            timeout=flow_timeout,
            tasks=(Task("call", "http", params=params, **task),),
        )
        return await self.engine.execute(flow, flow_input=flow_input)


@pytest.fixture
async def setup(server: Downstream) -> AsyncIterator[Setup]:
    made = Setup(server, (f"127.0.0.1:{server.port}",), (f"api={server.base}/",))
    yield made
    await made.task.aclose()
    made.engine.close()


async def test_a_json_reply_is_the_output_with_documented_headers_only(
    setup: Setup, server: Downstream
) -> None:
    summary = await setup.call({"url": f"{server.base}/json", "query": {"q": 1}})

    result = summary.task_results[0]
    assert result.outcome is TaskOutcome.SUCCESS
    assert result.output["status"] == 200
    assert result.output["body"] == {"ok": True, "path": "/json?q=1"}
    assert result.output["headers"]["content-type"] == "application/json"
    assert "x-secret-internal" not in result.output["headers"]
    assert server.headers[0]["x-idempotency-key"] == f"{summary.execution_id}/call/1"


async def test_a_named_target_with_a_path_and_a_body_posts_json(server: Downstream) -> None:
    setup = Setup(server, (), (f"api={server.base}/",))  # allowed by its name alone
    try:
        summary = await setup.call({"target": "api", "path": "text", "body": {"n": 1}})
    finally:
        await setup.task.aclose()
        setup.engine.close()

    result = summary.task_results[0]
    assert result.output["body"] == "plain words"
    assert server.bodies == [b'{"n":1}']


async def test_a_5xx_is_retried_with_one_idempotency_key_and_retry_after(
    setup: Setup, server: Downstream
) -> None:
    summary = await setup.call({"url": f"{server.base}/status/503"}, retry=RETRY)

    result = summary.task_results[0]
    assert (result.outcome, result.error_type, result.attempts) == (
        TaskOutcome.FAILURE,
        "http.503",
        3,
    )
    assert result.output["body"] == {"error": "nope"}
    assert len({h["x-idempotency-key"] for h in server.headers}) == 1
    assert setup.delays == [5.0, 5.0]  # Retry-After 7, within maximum_interval 5


@pytest.mark.parametrize("code", [400, 404, 409])
async def test_other_4xx_are_never_retried(setup: Setup, server: Downstream, code: int) -> None:
    summary = await setup.call({"url": f"{server.base}/status/{code}"}, retry=RETRY)

    result = summary.task_results[0]
    assert (result.error_type, result.attempts) == (f"http.{code}", 1)
    assert len(server.headers) == 1


@pytest.mark.parametrize("code", [408, 429, 500])
async def test_408_429_and_5xx_are_retried(setup: Setup, server: Downstream, code: int) -> None:
    summary = await setup.call({"url": f"{server.base}/status/{code}"}, retry=RETRY)

    assert summary.task_results[0].attempts == 3


async def test_redirects_are_not_followed_unless_asked(setup: Setup, server: Downstream) -> None:
    summary = await setup.call({"url": f"{server.base}/redirect"})
    followed = await setup.call({"url": f"{server.base}/redirect", "follow_redirects": True})

    assert summary.task_results[0].error_type == "http.302"
    assert followed.task_results[0].output["body"]["path"] == "/json"


async def test_a_body_past_the_output_limit_fails_without_truncation(
    setup: Setup, server: Downstream
) -> None:
    summary = await setup.call({"url": f"{server.base}/big"}, retry=RETRY)

    result = summary.task_results[0]
    assert (result.error_type, result.attempts) == ("OutputTooLarge", 1)
    assert "body" not in result.output


async def test_a_literal_target_not_allowed_fails_validation(setup: Setup) -> None:
    with pytest.raises(InvalidFlowError) as raised:
        await setup.call({"url": "http://example.com/"})

    [violation] = raised.value.violations
    assert (violation.field, violation.reason) == ("flow.tasks[0].params.url", "TARGET_NOT_ALLOWED")


async def test_a_target_from_an_input_mapping_is_refused_at_run_time(
    setup: Setup, server: Downstream
) -> None:
    summary = await setup.call(
        {},
        input_mapping={"url": "input.url"},
        retry=RETRY,
        flow_input={"url": "http://10.1.2.3:80/"},
    )

    result = summary.task_results[0]
    assert (result.error_type, result.attempts) == ("TARGET_NOT_ALLOWED", 1)
    assert server.headers == []


async def test_a_host_that_resolves_to_a_metadata_address_is_refused(server: Downstream) -> None:
    # 2852039166 is 169.254.169.254 written as one number: allowed as text,
    # refused once resolved.
    setup = Setup(server, ("2852039166:80",))
    try:
        summary = await setup.call({"url": "http://2852039166/latest/meta-data/"})
    finally:
        await setup.task.aclose()
        setup.engine.close()

    assert summary.task_results[0].error_type == "TARGET_NOT_ALLOWED"


async def test_the_execution_deadline_closes_the_request_downstream(
    setup: Setup, server: Downstream
) -> None:
    summary = await setup.call({"url": f"{server.base}/slow"}, flow_timeout=timedelta(seconds=3))

    assert summary.status is ExecutionStatus.TIMED_OUT
    assert await asyncio.to_thread(server.disconnected.wait, 30)


async def test_cancelling_the_execution_closes_the_request_downstream(
    setup: Setup, server: Downstream
) -> None:
    running = asyncio.create_task(setup.call({"url": f"{server.base}/slow"}))
    assert await asyncio.to_thread(server.entered.wait, 30)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert await asyncio.to_thread(server.disconnected.wait, 30)


async def test_the_callers_request_id_goes_with_the_call(setup: Setup, server: Downstream) -> None:
    from flowservice.observability import request_id_var

    token = request_id_var.set("req-42")
    try:
        await setup.call({"url": f"{server.base}/json"})
    finally:
        request_id_var.reset(token)

    assert server.headers[0]["x-request-id"] == "req-42"
