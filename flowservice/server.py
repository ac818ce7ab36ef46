"""The grpc.aio server: FlowService, standard health checking and reflection.

`create_server` builds and binds a server (port 0 picks a free one) without
starting it; `serve` runs one until SIGTERM or SIGINT, then drains: health
goes NOT_SERVING so load balancers stop sending calls, and in-flight calls
get the grace period to finish (open health watches end at once, so they do
not hold it). Every call goes through `RpcObserver`, and the HTTP/2 limits
and keepalive policy are set explicitly (`_transport_options`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flowmanager.v1 import (
    execution_service_pb2,
    execution_service_pb2_grpc,
    flow_registry_service_pb2,
    flow_registry_service_pb2_grpc,
    flow_service_pb2,
    flow_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from flowservice import collector
from flowservice.api import FlowServicer
from flowservice.api.auth import AccessControl
from flowservice.api.execution_servicer import ExecutionServicer
from flowservice.api.history_keeper import HistoryKeeper
from flowservice.api.http import HttpGateway
from flowservice.api.interceptors import RpcObserver
from flowservice.api.registry_servicer import RegistryServicer
from flowservice.api.resumption import Resumer
from flowservice.api.task_types import server_registry
from flowservice.api.tls import server_credentials
from flowservice.api.worker_servicer import WorkerServicer, encode_assignment
from flowservice.dispatch import Dispatcher
from flowservice.engine import Engine
from flowservice.errors import (
    SecurityConfigError,
    StoreUnavailableError,
    TaskRegistrationError,
)
from flowservice.history import ExecutionStore, open_store, time_ordered_id
from flowservice.limits import Limits
from flowservice.observability import CompositeObserver, Metrics, Tracing
from flowservice.observer import Observer
from flowservice.registry import FlowRegistry, open_registry
from flowservice.security import AccessGuard, SecuritySettings, is_loopback
from flowservice.security.https import server_ssl_context
from flowservice.settings import Settings
from flowservice.shared_dispatch import SharedDispatch
from flowservice.tasks import TaskRegistry
from flowservice.tasks.worker_task import WORKER_TASK_TYPE, WorkerTask

__all__ = ["FlowServer", "create_server", "serve"]

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console" / "dist"
"""The built web console, served at / of the HTTP port unless `--console-dir` says otherwise."""
_IDLE_POLL = 0.05  # seconds between looks at the running executions, while stopping
FLOW_SERVICE_NAME: str = flow_service_pb2.DESCRIPTOR.services_by_name["FlowService"].full_name
WORKER_SERVICE_NAME: str = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
EXECUTION_SERVICE_NAME: str = execution_service_pb2.DESCRIPTOR.services_by_name[
    "ExecutionService"
].full_name
REGISTRY_SERVICE_NAME: str = flow_registry_service_pb2.DESCRIPTOR.services_by_name[
    "FlowRegistryService"
].full_name
_SERVICE_NAMES = (
    "",
    FLOW_SERVICE_NAME,
    WORKER_SERVICE_NAME,
    EXECUTION_SERVICE_NAME,
    REGISTRY_SERVICE_NAME,
)
"""The names health reports on ("" is the server as a whole)."""


@dataclass(frozen=True, slots=True)
class FlowServer:
    """A bound Flow Manager server and the handles needed to run and drain it."""

    server: grpc.aio.Server
    """The underlying grpc.aio server."""
    port: int
    """The port it is bound to."""
    health: health_aio.HealthServicer
    """Its health service, flipped to NOT_SERVING on drain."""
    engine: Engine
    """The engine that runs its executions."""
    observer: RpcObserver
    """The interceptor every call goes through; told when the server drains."""
    dispatcher: Dispatcher | None = None
    """Hands `worker` tasks to the workers connected to its WorkerService."""
    history: HistoryKeeper | None = None
    """The execution history and its upkeep (retention, health, leases)."""
    flows: FlowRegistry | None = None
    """The flow registry (`FlowRegistryService`), in the history's store."""
    resumer: Resumer | None = None
    """Takes over the executions of server processes that died (docs/durability.md)."""
    http: HttpGateway | None = None
    """The HTTP port (Connect, gRPC-Web, the web console), with `--http-address`."""
    sharing: SharedDispatch | None = None
    """The worker queues shared with the other replicas, on PostgreSQL (docs/replicas.md)."""

    async def start(self) -> None:
        """Starts serving and reports SERVING."""
        if self.sharing is not None:
            await self.sharing.start()
        await self.server.start()
        for service in _SERVICE_NAMES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.history is not None:
            self.history.start(self.health, self.resumer)
        if self.http is not None:
            await self.http.start()

    async def stop(self, grace: float | None, drain_delay: float = 0.0) -> None:
        """Reports NOT_SERVING, then lets in-flight calls finish within `grace` seconds.

        New calls are still accepted for `drain_delay` seconds after NOT_SERVING,
        so health watchers and load balancers hear of it before the port closes.
        """
        await self.health.enter_graceful_shutdown()
        if drain_delay > 0:
            await asyncio.sleep(drain_delay)
        self.observer.drain()  # open health watches end now; they would hold the grace period
        if self.history is not None:  # what the grace period cuts short, another process resumes
            self.history.running.leave_for_takeover()
        closer = asyncio.create_task(self._close_workers_when_idle())
        try:
            await self.server.stop(grace)
        finally:
            closer.cancel()
        if self.history is not None:  # before the tasks' connections close under them
            await self.history.stop_executions()
        if self.http is not None:
            await self.http.stop()  # its calls were gRPC calls: they have ended
        await self.engine.aclose()
        if self.sharing is not None:
            await self.sharing.stop()
        if self.history is not None:
            await self.history.stop()
        if self.flows is not None:
            self.flows.close()

    async def _close_workers_when_idle(self) -> None:
        """Ends the workers' streams once no execution runs (one might still need them).

        Without this, a connected worker's `Work` stream, which never ends on
        its own, would hold the shutdown for the whole grace period.
        """
        if self.dispatcher is None:
            return
        # The engine keeps a count, not an event, of its executions; a look
        # each _IDLE_POLL while stopping costs nothing on the hot path.
        while self.engine.running:  # noqa: ASYNC110
            await asyncio.sleep(_IDLE_POLL)
        self.dispatcher.close()


def create_server(
    settings: Settings,
    registry: TaskRegistry | None = None,
    *,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
) -> FlowServer:
    """A Flow Manager server bound to `settings.address`, not yet started.

    `metrics` and `tracing`, when given, observe every execution and RPC.
    The `worker` task type is added to `registry` unless it has one already
    (see `_worker_dispatch`).
    Raises SecurityConfigError when a TLS, token or policy file cannot be used,
    StoreUnavailableError when the history (`--store`) cannot be opened.
    """
    limits = settings.limits
    store = open_store(settings.store, lease_seconds=settings.lease_seconds)
    history = HistoryKeeper(store, settings.retention, _SERVICE_NAMES)
    flows = open_registry(settings.store)
    if metrics is not None:
        metrics.watch_store(history.store)
    registry = registry or server_registry(settings, metrics, tracing)
    dispatcher = _worker_dispatch(settings, registry, metrics)
    sharing = _shared_dispatch(settings.store, history.store, dispatcher)
    observers: list[Observer] = [o for o in (metrics, tracing) if o is not None]
    engine = Engine(
        registry,
        limits=limits,
        task_threads=settings.task_threads,
        observer=CompositeObserver(observers) if observers else None,
        new_execution_id=time_ordered_id,  # the history's indexes append (history/ids.py)
    )
    if metrics is not None:
        metrics.watch_plan_cache(engine.plans)
    if tracing is not None:
        tracing.instrument_grpc_server()  # must precede grpc.aio.server()
    observer = RpcObserver(metrics, limits.max_concurrent_rpcs)
    server = grpc.aio.server(
        interceptors=_interceptors(settings, metrics, observer),
        options=[
            # Larger requests get RESOURCE_EXHAUSTED from grpc before any handler runs.
            ("grpc.max_receive_message_length", limits.max_request_bytes),
            # Responses carry every task output (each up to max_output_bytes),
            # so they may be larger than requests; still bounded, explicitly.
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            # grpc shares ports by default on Linux; only --workers wants that.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            *_transport_options(limits),
        ],
    )
    history.running.engine_cancel = engine.cancel  # CancelExecution ends runs with their last event
    resumer = Resumer(engine, history.store, history.running)
    flow_service_pb2_grpc.add_FlowServiceServicer_to_server(
        FlowServicer(engine, history.store, history.running, registry=flows, resumer=resumer),
        server,
    )
    execution_service_pb2_grpc.add_ExecutionServiceServicer_to_server(
        ExecutionServicer(engine, history.store, history.running, registry=flows), server
    )
    flow_registry_service_pb2_grpc.add_FlowRegistryServiceServicer_to_server(
        RegistryServicer(engine, flows, limits), server
    )
    worker_servicer = WorkerServicer(dispatcher, limits.max_name_length)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(worker_servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.security.reflection:
        reflection.enable_server_reflection(
            (*_SERVICE_NAMES[1:], health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
        )
    credentials = server_credentials(settings.security)
    if credentials is None:
        port = server.add_insecure_port(settings.address)
    else:
        port = server.add_secure_port(settings.address, credentials)
    http = _http_gateway(settings, server) if settings.http_address else None
    return FlowServer(
        server=server,
        port=port,
        health=health_servicer,
        engine=engine,
        observer=observer,
        dispatcher=dispatcher,
        history=history,
        flows=flows,
        resumer=resumer,
        http=http,
        sharing=sharing,
    )


def _http_gateway(settings: Settings, server: grpc.aio.Server) -> HttpGateway:
    """The HTTP port, whose calls reach `server` through a Unix socket of its own.

    The socket is in a directory only this user may open: the calls that
    come through it meet the same interceptors as any other, and a process of
    another user cannot reach the server around the gRPC port's TLS.
    """
    limits = settings.limits
    gateway = HttpGateway(
        settings.http_address,
        services=tuple(
            descriptor_pool.Default().FindServiceByName(name) for name in _SERVICE_NAMES[1:]
        ),
        max_request_bytes=limits.max_request_bytes,
        max_response_bytes=MAX_RESPONSE_BYTES,
        max_connections=limits.max_connections,
        console_dir=Path(settings.console_dir) if settings.console_dir else CONSOLE_DIR,
        cors_origins=settings.cors_origins,
        security=settings.security,
        reuse_port=settings.reuse_port,
    )
    server.add_insecure_port(gateway.grpc_target)
    return gateway


def _transport_options(limits: Limits) -> list[tuple[str, int]]:
    """grpc channel arguments for the HTTP/2 limits and keepalive policy in `limits`.

    Set explicitly rather than left to grpc's defaults (no stream limit at
    all, connections that live forever), as the HTTP/2 rapid-reset advisories
    (CVE-2023-44487) recommend. docs/security.md lists them.
    """
    seconds = 1000  # grpc takes milliseconds
    most_streams = limits.max_concurrent_streams * limits.max_connections
    return [
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
        # grpc queues the calls the server has not picked up yet and, past
        # 1,000 of them, cancels new ones at random: the caller sees CANCELLED,
        # which it neither tells from its own cancel nor retries. Every call
        # the connection limits let in may wait instead; the server then picks
        # it up and sheds it itself (RESOURCE_EXHAUSTED with RetryInfo).
        ("grpc.server.max_pending_requests", most_streams),
        ("grpc.server.max_pending_requests_hard_limit", most_streams),
        ("grpc.max_connection_idle_ms", round(limits.max_connection_idle * seconds)),
        ("grpc.max_connection_age_ms", round(limits.max_connection_age * seconds)),
        # After GOAWAY for age, calls in flight may run to their longest.
        ("grpc.max_connection_age_grace_ms", round((limits.max_run_time + 5) * seconds)),
        ("grpc.keepalive_time_ms", round(limits.keepalive_time * seconds)),
        ("grpc.keepalive_timeout_ms", 20 * seconds),
        ("grpc.keepalive_permit_without_calls", 0),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            round(limits.min_ping_interval * seconds),
        ),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def _worker_dispatch(
    settings: Settings, registry: TaskRegistry, metrics: Metrics | None
) -> Dispatcher:
    """The dispatcher of `worker` tasks (docs/workers.md), registered in `registry`.

    A registry that has a `worker` type already keeps it (the dispatcher then
    serves workers that nothing submits to).
    """
    dispatcher = Dispatcher(
        max_workers=settings.max_worker_streams, max_backlog=settings.max_worker_backlog
    )
    if WORKER_TASK_TYPE not in registry:
        registry.register(WORKER_TASK_TYPE, WorkerTask(dispatcher, settings.limits.max_name_length))
    if metrics is not None:
        metrics.watch_worker_backlog(dispatcher.backlog)
    return dispatcher


def _shared_dispatch(
    location: str, store: ExecutionStore, dispatcher: Dispatcher
) -> SharedDispatch | None:
    """On PostgreSQL, the worker queues this replica shares with the others (else None)."""
    if not location.startswith(("postgresql://", "postgres://")):
        return None
    from flowservice.history.postgres_queue import PostgresWorkQueue  # psycopg only when used

    queue = PostgresWorkQueue(location, owner=store.owner)
    return SharedDispatch(dispatcher, queue, encode_assignment)


def _served_methods(security: SecuritySettings) -> list[str]:
    """Full names (`/package.Service/Method`) of every method the server serves."""
    names = [*_SERVICE_NAMES[1:], health.SERVICE_NAME]
    if security.reflection:
        names.append(reflection.SERVICE_NAME)
    pool = descriptor_pool.Default()
    services = [pool.FindServiceByName(name) for name in names]
    return [f"/{s.full_name}/{method.name}" for s in services for method in s.methods]


def _interceptors(
    settings: Settings, metrics: Metrics | None, observer: RpcObserver
) -> list[grpc.aio.ServerInterceptor]:
    """Access control first (a refused call goes no further), then `observer`.

    Reads the token and policy files; raises SecurityConfigError when one cannot be used.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = []
    security = settings.security
    if security.authentication:
        guard = AccessGuard.from_settings(security, _served_methods(security))
        interceptors.append(AccessControl(guard, mtls=security.mtls, metrics=metrics))
    interceptors.append(observer)
    return interceptors


def _warn_if_exposed(settings: Settings) -> None:
    """A warning for each port that other machines can reach in plaintext."""
    security = settings.security
    if not security.tls and not is_loopback(settings.address):
        logger.warning(
            "serving gRPC on %s without TLS: anyone on the network can read and send "
            "calls; see docs/security.md (--tls-cert, --tls-key)",
            settings.address,
        )
    if settings.http_address and not security.tls and not is_loopback(settings.http_address):
        logger.warning(
            "serving HTTP on %s without TLS: anyone on the network can read and send "
            "calls; see docs/http.md",
            settings.http_address,
        )
    metrics_address = settings.metrics_address
    if metrics_address and not security.metrics_tls_cert and not is_loopback(metrics_address):
        logger.warning(
            "serving /metrics on %s without TLS; bind it to 127.0.0.1 or set "
            "--metrics-tls-cert and --metrics-tls-key",
            metrics_address,
        )


def _serve_metrics(metrics: Metrics, settings: Settings) -> str:
    """Serves /metrics on its own address, over HTTPS when it has a certificate; its URL.

    A taken address is a RuntimeError without a traceback, as grpc raises for its own port;
    an unusable certificate exits with status 2, as for the gRPC port's.
    """
    security, address = settings.security, settings.metrics_address
    tls = None
    try:
        if security.metrics_tls_cert:
            tls = server_ssl_context(
                security.metrics_tls_cert, security.metrics_tls_key, security.metrics_tls_client_ca
            )
        port = metrics.serve(address, tls)
    except SecurityConfigError as exc:
        logger.error("cannot serve metrics: %s", exc)
        raise SystemExit(2) from None
    except OSError as exc:
        raise RuntimeError(
            f"Failed to bind metrics to address {address}: {exc.strerror or exc}"
        ) from None
    scheme = "https" if tls else "http"
    return f"{scheme}://{address.rsplit(':', 1)[0]}:{port}/metrics"


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then drains gracefully."""
    metrics = Metrics() if settings.metrics_address else None
    tracing = Tracing.otlp(settings.otlp_endpoint) if settings.otlp_endpoint else None
    try:
        flow_server = create_server(settings, metrics=metrics, tracing=tracing)
    except (SecurityConfigError, StoreUnavailableError, TaskRegistrationError) as exc:
        logger.error("cannot serve: %s", exc)
        raise SystemExit(2) from None
    # Both ports are bound before "listening" is logged, so a taken one is a
    # clean start-up error (RuntimeError, as grpc raises for its own port).
    metrics_url = _serve_metrics(metrics, settings) if metrics is not None else ""
    await flow_server.start()
    collector.settle()  # what starting made is frozen; young collections are rarer
    host = settings.address.rsplit(":", 1)[0]
    logger.info("Flow Manager listening on %s:%d", host, flow_server.port)
    _warn_if_exposed(settings)
    if metrics is not None:
        logger.info("metrics on %s", metrics_url)
    if flow_server.http is not None:
        scheme = "https" if flow_server.http.tls else "http"
        http_host = settings.http_address.rsplit(":", 1)[0]
        logger.info(
            "Connect, gRPC-Web and the web console on %s://%s:%d",
            scheme,
            http_host,
            flow_server.http.port,
        )
    if tracing is not None:
        logger.info("exporting traces to %s", settings.otlp_endpoint)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info(
        "draining: NOT_SERVING for %.1f s, then %.1f s for in-flight calls",
        settings.drain_delay,
        settings.grace_period,
    )
    await flow_server.stop(settings.grace_period, settings.drain_delay)
    if tracing is not None:
        tracing.shutdown()
    logger.info("stopped")
