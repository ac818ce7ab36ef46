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
from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flowservice.api import FlowServicer
from flowservice.engine import Engine
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry, builtin_registry
from flowservice.validation import FlowLimits

__all__ = ["FlowServer", "create_server", "serve"]

logger = logging.getLogger(__name__)

FLOW_SERVICE_NAME: str = flow_service_pb2.DESCRIPTOR.services_by_name["FlowService"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FlowServer:
    """A bound Flow Manager server and the handles needed to run and drain it."""

    server: grpc.aio.Server
    """The underlying grpc.aio server."""
    port: int
    """The port it is bound to."""
    health: health_aio.HealthServicer
    """Its health service, flipped to NOT_SERVING on drain."""

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


def create_server(settings: Settings, registry: TaskRegistry | None = None) -> FlowServer:
    """A Flow Manager server bound to `settings.address`, not yet started."""
    engine = Engine(
        registry or builtin_registry(),
        default_max_steps=settings.default_max_steps,
        limits=FlowLimits(max_steps_ceiling=settings.max_steps_ceiling),
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    flow_service_pb2_grpc.add_FlowServiceServicer_to_server(FlowServicer(engine), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (FLOW_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(settings.address)
    return FlowServer(server=server, port=port, health=health_servicer)


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then drains gracefully."""
    flow_server = create_server(settings)
    await flow_server.start()
    host = settings.address.rsplit(":", 1)[0]
    logger.info("Flow Manager listening on %s:%d", host, flow_server.port)

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
    logger.info("stopped")
