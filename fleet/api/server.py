"""The gRPC server: the fleet services, health checking and reflection on one port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from fleet.api.custody_servicer import CustodyRunner, CustodyServicer
from fleet.api.servicers import (
    InfrastructureGatewayServicer,
    OperationsServicer,
    OrderServicer,
    RobotGatewayServicer,
)
from fleet.config import Settings
from fleet.dispatch.bus import AsyncBus
from fleet.dispatch.core import FleetCore
from fleet.v1 import (
    custody_pb2,
    custody_pb2_grpc,
    infrastructure_pb2,
    infrastructure_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
    orders_pb2,
    orders_pb2_grpc,
    robot_pb2,
    robot_pb2_grpc,
)

SERVICE_NAMES: tuple[str, ...] = (
    orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
    robot_pb2.DESCRIPTOR.services_by_name["RobotGateway"].full_name,
    infrastructure_pb2.DESCRIPTOR.services_by_name["InfrastructureGateway"].full_name,
    operations_pb2.DESCRIPTOR.services_by_name["OperationsService"].full_name,
)
# Registered only when the server is built with a custody runner.
CUSTODY_SERVICE_NAME: str = custody_pb2.DESCRIPTOR.services_by_name["CustodyService"].full_name
HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass
class GrpcServer:
    """A built (not yet started) server, the port it is bound to and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: Any  # grpc_health.v1.health.aio.HealthServicer (not in the stubs)
    # The fleet services this server registered: SERVICE_NAMES, plus CustodyService when
    # built with a custody runner.
    services: tuple[str, ...] = SERVICE_NAMES

    async def start(self) -> None:
        """Start serving and report SERVING for the server and each fleet service."""
        await self.server.start()
        for name in ("", *self.services):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, then stop; open calls get `grace` seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def build_server(
    bus: AsyncBus,
    core: FleetCore,
    settings: Settings,
    custody: CustodyRunner | None = None,
) -> GrpcServer:
    """A server with the fleet servicers, health and reflection, bound insecurely to
    `settings.host:settings.grpc_port` (port 0: any free port; `GrpcServer.port` is the real
    one). With a `custody` runner, CustodyService is served too (None: not registered).
    Raises RuntimeError when the address cannot be bound."""
    server = grpc.aio.server()
    orders_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(bus, core), server)
    robot_pb2_grpc.add_RobotGatewayServicer_to_server(RobotGatewayServicer(bus, core), server)
    infrastructure_pb2_grpc.add_InfrastructureGatewayServicer_to_server(
        InfrastructureGatewayServicer(bus, core), server
    )
    operations_pb2_grpc.add_OperationsServiceServicer_to_server(
        OperationsServicer(bus, core), server
    )
    services = SERVICE_NAMES
    if custody is not None:
        custody_pb2_grpc.add_CustodyServiceServicer_to_server(CustodyServicer(custody), server)
        services = (*services, CUSTODY_SERVICE_NAME)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (*services, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = _address(settings.host, settings.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return GrpcServer(server, port, health, services)


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):  # a bare IPv6 address
        host = f"[{host}]"
    return f"{host}:{port}"
