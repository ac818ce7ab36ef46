"""Prometheus metrics of executions, task runs and RPCs, on their own HTTP port.

Flow ids come from callers, so the `flow_id` label is bounded: a value is
cut to `MAX_LABEL_LENGTH` characters with every character that is not
printable (a NUL, a newline, a control code) replaced by `_`, and past
`max_flow_ids` distinct values new ones are counted as `_other` rather than
growing the metric without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flowservice.events import Event, ExecutionFinished, TaskFinished, TaskStarted
from flowservice.history import ExecutionStore
from flowservice.models import Flow, Task
from flowservice.security.https import serve_https

__all__ = ["Metrics"]

_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
OTHER_FLOW = "_other"
"""The `flow_id` label of executions past the bound on distinct flow ids."""
MAX_LABEL_LENGTH = 128
"""Characters kept of a caller-chosen label value."""


class Metrics:
    """The service's metrics; an `Observer` for the engine, plus RPC counting."""

    def __init__(self, max_flow_ids: int = 500) -> None:
        self.registry = CollectorRegistry()
        """Holds only this service's metrics (tests create one per server)."""
        self._max_flow_ids = max_flow_ids
        self._flow_ids: set[str] = set()
        # Per execution in flight: task name -> type (TaskFinished does not carry
        # the type); dropped when the execution finishes, so an execution still
        # present when its context exits never finished: it was cancelled.
        self._task_types: dict[str, dict[str, str]] = {}
        self.executions = Counter(
            "flowmanager_executions",
            "Executions that finished, by flow and status.",
            ["flow_id", "status"],
            registry=self.registry,
        )
        self.task_runs = Counter(
            "flowmanager_task_runs",
            "Task runs that finished, by task type and outcome.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.task_duration = Histogram(
            "flowmanager_task_duration_seconds",
            "How long task runs took, retries included, by task type.",
            ["type"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.execution_duration = Histogram(
            "flowmanager_execution_duration_seconds",
            "How long executions took, by status.",
            ["status"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "flowmanager_executions_in_flight",
            "Executions running now.",
            registry=self.registry,
        )
        self.rpcs = Counter(
            "flowmanager_rpcs",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self._rpc_counters: dict[tuple[str, str], Counter] = {}
        self.outbound_calls = Counter(
            "flowmanager_outbound_calls",
            "Calls of grpc and http tasks, by task type, target and result code.",
            ["type", "target", "code"],
            registry=self.registry,
        )

    def watch_worker_backlog(self, backlog: Callable[[], Mapping[str, int]]) -> None:
        """Exports `flowmanager_worker_backlog{queue}`, read from `backlog()` at each scrape.

        `backlog` (`Dispatcher.backlog`) lists only queues with assignments
        waiting, so the label is bounded by the waiting assignments themselves.
        """
        self.registry.register(_BacklogCollector(backlog))

    def watch_plan_cache(self, plans: PlanCounts) -> None:
        """Exports the compiled-plan cache's hits, misses and size, read at each scrape.

        The cache counts with two integers; nothing is done per call for the metrics.
        """
        self.registry.register(_PlanCacheCollector(plans))

    def watch_store(self, store: ExecutionStore) -> None:
        """Exports the execution history's size, write latency and write errors."""
        Gauge(
            "flowmanager_stored_executions",
            "Executions in the execution history, running and finished.",
            registry=self.registry,
        ).set_function(lambda: store.count)
        writes = Histogram(
            "flowmanager_store_write_seconds",
            "How long each write transaction of the execution history took (many executions' "
            "events each).",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        errors = Counter(
            "flowmanager_store_errors",
            "Write transactions of the execution history that failed.",
            registry=self.registry,
        )

        def on_write(seconds: float, ok: bool) -> None:
            writes.observe(seconds)
            if not ok:
                errors.inc()

        store.observe(on_write)

    def serve(self, address: str, tls: ssl.SSLContext | None = None) -> int:
        """Serves /metrics on `address` (host:port, port 0 picks one); the port.

        Over HTTPS with `tls` (see `flowservice.security.https` for why not
        prometheus_client's own TLS). Called on the server's event loop, it
        also counts that loop's tasks.
        """
        self._count_event_loop_tasks()
        host, _, port = address.rpartition(":")
        host = host or "127.0.0.1"
        if tls is not None:
            return serve_https(make_wsgi_app(self.registry), host.strip("[]"), int(port), tls)
        server, _ = start_http_server(int(port), addr=host, registry=self.registry)
        return int(server.server_port)

    def _count_event_loop_tasks(self) -> None:
        """Adds `flowmanager_asyncio_tasks`, the tasks alive on the calling thread's loop.

        grpc.aio runs each call in a task, so a count that keeps growing under
        steady load is a leak (`make soak` reports it). It is read when
        /metrics is scraped, on the HTTP server's thread: `asyncio.all_tasks`
        only reads the loop's task set, and retries if it changes meanwhile.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop: no tasks to count
        Gauge(
            "flowmanager_asyncio_tasks",
            "asyncio tasks alive on the server's event loop (one per call in flight, and more).",
            registry=self.registry,
        ).set_function(lambda: len(asyncio.all_tasks(loop)))

    @contextlib.contextmanager
    def execution(self, flow: Flow, execution_id: str) -> Iterator[None]:
        """Counts the execution in flight while it runs; one that never finished was cancelled."""
        self.in_flight.inc()
        self._task_types[execution_id] = {}
        try:
            yield
        finally:
            self.in_flight.dec()
            if self._task_types.pop(execution_id, None) is not None:
                # No ExecutionFinished came: the caller cancelled or went away.
                self.executions.labels(self._flow_label(flow.id), "cancelled").inc()

    @contextlib.contextmanager
    def attempt(self, task: Task, step: int, attempt: int) -> Iterator[None]:
        """Attempts are measured through the task's events."""
        yield

    def event(self, event: Event) -> None:
        """Records finished task runs and executions."""
        match event:
            case TaskStarted():
                self._task_types.get(event.execution_id, {})[event.task] = event.type
            case TaskFinished():
                result = event.result
                types = self._task_types.get(event.execution_id, {})
                task_type = types.get(result.task, "unknown")
                self.task_runs.labels(task_type, result.outcome.value).inc()
                self.task_duration.labels(task_type).observe(result.duration.total_seconds())
            case ExecutionFinished():
                self._task_types.pop(event.execution_id, None)
                summary = event.summary
                status = summary.status.value
                self.executions.labels(self._flow_label(summary.flow_id), status).inc()
                self.execution_duration.labels(status).observe(summary.duration.total_seconds())

    def rpc(self, method: str, code: str) -> None:
        """Counts one handled RPC.

        Each (method, code) pair's counter is looked up through `labels` once
        and kept: `labels` validates and locks on every lookup. The pairs are
        bounded: only methods the server serves are counted.
        """
        counter = self._rpc_counters.get((method, code))
        if counter is None:
            counter = self._rpc_counters[(method, code)] = self.rpcs.labels(method, code)
        counter.inc()

    def _flow_label(self, caller_flow_id: str) -> str:
        flow_id = _printable(caller_flow_id)
        if flow_id in self._flow_ids:
            return flow_id
        if len(self._flow_ids) < self._max_flow_ids:
            self._flow_ids.add(flow_id)
            return flow_id
        return OTHER_FLOW


def _printable(value: str) -> str:
    """`value` cut to `MAX_LABEL_LENGTH`, each unprintable character replaced by `_`."""
    value = value[:MAX_LABEL_LENGTH]
    if value.isprintable():
        return value
    return "".join(char if char.isprintable() else "_" for char in value)


class _BacklogCollector(Collector):
    """The worker backlog gauge, computed when scraped rather than kept up to date."""

    def __init__(self, backlog: Callable[[], Mapping[str, int]]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "flowmanager_worker_backlog",
            "Worker task runs waiting for a worker with a free credit, by queue.",
            labels=["queue"],
        )
        for queue, waiting in sorted(self._backlog().items()):
            gauge.add_metric([queue], waiting)
        yield gauge


class PlanCounts(Protocol):
    """What the metrics read of the engine's plan cache (`Engine.plans`)."""

    hits: int
    misses: int

    def __len__(self) -> int: ...


class _PlanCacheCollector(Collector):
    """The plan cache's counters (`Engine.plans`), read when scraped."""

    def __init__(self, plans: PlanCounts) -> None:
        self._plans = plans

    def collect(self) -> Iterator[Metric]:
        plans = self._plans
        yield CounterMetricFamily(
            "flowmanager_plan_cache_hits",
            "Executions whose flow's compiled plan was reused (the same flow sent before).",
            value=plans.hits,
        )
        yield CounterMetricFamily(
            "flowmanager_plan_cache_misses",
            "Executions (without stubs) whose flow was converted, validated and compiled.",
            value=plans.misses,
        )
        yield GaugeMetricFamily(
            "flowmanager_plan_cache_plans",
            "Compiled plans kept (at most --max-cached-plans).",
            value=len(plans),
        )
