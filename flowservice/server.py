"""The grpc.aio server: FlowService, standard health checking and reflection.

`create_server` builds and binds a server (port 0 picks a free one) without
starting it; `serve` runs one until SIGTERM or SIGINT, then drains: health
goes NOT_SERVING so load balancers stop sending calls, and in-flight calls
get the grace period to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from flowservice.api import FlowServicer
from flowservice.api.auth import AccessControl
from flowservice.api.interceptors import RpcObserver
from flowservice.api.task_types import server_registry
from flowservice.api.tls import server_credentials
from flowservice.engine import Engine
from flowservice.errors import SecurityConfigError, TaskRegistrationError
from flowservice.observability import CompositeObserver, Metrics, Tracing
from flowservice.observer import Observer
from flowservice.security import AccessGuard, SecuritySettings, is_loopback
from flowservice.security.https import server_ssl_context
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry

__all__ = ["FlowServer", "create_server", "serve"]

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
FLOW_SERVICE_NAME: str = flow_service_pb2.DESCRIPTOR.services_by_name["FlowService"].full_name


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

    async def start(self) -> None:
        """Starts serving and reports SERVING."""
        await self.server.start()
        for service in ("", FLOW_SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None, drain_delay: float = 0.0) -> None:
        """Reports NOT_SERVING, then lets in-flight calls finish within `grace` seconds.

        New calls are still accepted for `drain_delay` seconds after NOT_SERVING,
        so health watchers and load balancers hear of it before the port closes.
        """
        await self.health.enter_graceful_shutdown()
        if drain_delay > 0:
            await asyncio.sleep(drain_delay)
        await self.server.stop(grace)
        await self.engine.aclose()


def create_server(
    settings: Settings,
    registry: TaskRegistry | None = None,
    *,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
) -> FlowServer:
    """A Flow Manager server bound to `settings.address`, not yet started.

    `metrics` and `tracing`, when given, observe every execution and RPC.
    Raises SecurityConfigError when a TLS, token or policy file cannot be used.
    """
    limits = settings.limits
    observers: list[Observer] = [o for o in (metrics, tracing) if o is not None]
    engine = Engine(
        registry or server_registry(settings, metrics, tracing),
        limits=limits,
        task_threads=settings.task_threads,
        observer=CompositeObserver(observers) if observers else None,
    )
    if tracing is not None:
        tracing.instrument_grpc_server()  # must precede grpc.aio.server()
    server = grpc.aio.server(
        interceptors=_interceptors(settings, metrics),
        options=[
            # Larger requests get RESOURCE_EXHAUSTED from grpc before any handler runs.
            ("grpc.max_receive_message_length", limits.max_request_bytes),
            # Responses carry every task output (each up to max_output_bytes),
            # so they may be larger than requests; still bounded, explicitly.
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            # grpc shares ports by default on Linux; only --workers wants that.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        ],
    )
    flow_service_pb2_grpc.add_FlowServiceServicer_to_server(FlowServicer(engine), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.security.reflection:
        reflection.enable_server_reflection(
            (FLOW_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    credentials = server_credentials(settings.security)
    if credentials is None:
        port = server.add_insecure_port(settings.address)
    else:
        port = server.add_secure_port(settings.address, credentials)
    return FlowServer(server=server, port=port, health=health_servicer, engine=engine)


def _served_methods(security: SecuritySettings) -> list[str]:
    """Full names (`/package.Service/Method`) of every method the server serves."""
    names = [FLOW_SERVICE_NAME, health.SERVICE_NAME]
    if security.reflection:
        names.append(reflection.SERVICE_NAME)
    pool = descriptor_pool.Default()
    services = [pool.FindServiceByName(name) for name in names]
    return [f"/{s.full_name}/{method.name}" for s in services for method in s.methods]


def _interceptors(settings: Settings, metrics: Metrics | None) -> list[grpc.aio.ServerInterceptor]:
    """Access control first (a refused call goes no further), then RPC observation.

    Reads the token and policy files; raises SecurityConfigError when one cannot be used.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = []
    security = settings.security
    if security.authentication:
        guard = AccessGuard.from_settings(security, _served_methods(security))
        interceptors.append(AccessControl(guard, mtls=security.mtls, metrics=metrics))
    interceptors.append(RpcObserver(metrics))
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
    metrics_address = settings.metrics_address
    if metrics_address and not security.metrics_tls_cert and not is_loopback(metrics_address):
        logger.warning(
            "serving /metrics on %s without TLS; bind it to 127.0.0.1 or set "
            "--metrics-tls-cert and --metrics-tls-key",
            metrics_address,
        )


def _serve_metrics(metrics: Metrics, settings: Settings) -> None:
    """Serves /metrics on its own address, over HTTPS when it has a certificate."""
    security = settings.security
    tls = None
    if security.metrics_tls_cert:
        tls = server_ssl_context(
            security.metrics_tls_cert, security.metrics_tls_key, security.metrics_tls_client_ca
        )
    port = metrics.serve(settings.metrics_address, tls)
    scheme = "https" if tls else "http"
    host = settings.metrics_address.rsplit(":", 1)[0]
    logger.info("metrics on %s://%s:%d/metrics", scheme, host, port)


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then drains gracefully."""
    metrics = Metrics() if settings.metrics_address else None
    tracing = Tracing.otlp(settings.otlp_endpoint) if settings.otlp_endpoint else None
    try:
        flow_server = create_server(settings, metrics=metrics, tracing=tracing)
    except (SecurityConfigError, TaskRegistrationError) as exc:
        logger.error("cannot serve: %s", exc)
        raise SystemExit(2) from None
    await flow_server.start()
    host = settings.address.rsplit(":", 1)[0]
    logger.info("Flow Manager listening on %s:%d", host, flow_server.port)
    _warn_if_exposed(settings)
    if metrics is not None:
        try:
            _serve_metrics(metrics, settings)
        except SecurityConfigError as exc:
            logger.error("cannot serve metrics: %s", exc)
            raise SystemExit(2) from None
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
