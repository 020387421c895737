"""OperationsService end to end: a real `Service` on a loopback port, a grpc.aio client.

Operator controls reach the core as `OperatorCommand`s and come back with a message or the
status the core's verdict maps to; alerts are listed from the core and watched as they come.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fleet.bootstrap import Service
from fleet.v1 import operations_pb2, operations_pb2_grpc
from tests.integration.test_grpc_api import (
    STEP_TIMEOUT_S,
    expect_error,
    start_service,
    wait_until,
)

DOOR = "D-OR-01"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    svc = await start_service(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        yield svc
    finally:
        await svc.stop(grace=0)


@pytest.fixture
async def channel(service: Service) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}")
    try:
        yield ch
    finally:
        await ch.close(None)


@pytest.fixture
def ops(channel: grpc.aio.Channel) -> operations_pb2_grpc.OperationsServiceStub:
    return operations_pb2_grpc.OperationsServiceStub(channel)


async def alerts(
    ops: operations_pb2_grpc.OperationsServiceStub, active_only: bool = False
) -> list[operations_pb2.Alert]:
    response = await ops.ListAlerts(
        operations_pb2.ListAlertsRequest(active_only=active_only), timeout=STEP_TIMEOUT_S
    )
    return list(response.alerts)


async def test_no_alerts_at_start(ops: operations_pb2_grpc.OperationsServiceStub) -> None:
    assert await alerts(ops) == []
    assert await alerts(ops, active_only=True) == []


async def test_pausing_an_unknown_robot_names_the_field(
    ops: operations_pb2_grpc.OperationsServiceStub,
) -> None:
    # The core names the command's target; the wire calls it robot_id.
    details = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: ops.PauseRobot(
            operations_pb2.OperatorRobotRequest(robot_id="AMR-99", reason="test", operator_id="op")
        ),
        field="robot_id",
    )
    assert "AMR-99" in details


async def test_malformed_controls_name_the_field(
    ops: operations_pb2_grpc.OperationsServiceStub, service: Service
) -> None:
    handled: list[object] = []
    handle = service.core.handle

    def record(msg: object) -> object:
        handled.append(msg)
        return handle(msg)  # type: ignore[arg-type]

    service.core.handle = record  # type: ignore[method-assign]
    cases = [
        (ops.CloseLane, operations_pb2.OperatorLaneRequest(lane=""), "lane"),
        (ops.CloseLane, operations_pb2.OperatorLaneRequest(lane="L1-C-01"), "lane"),
        (ops.ReopenLane, operations_pb2.OperatorLaneRequest(lane="--L1-C-01"), "lane"),
        (ops.CloseDoor, operations_pb2.OperatorDoorRequest(door_id=" "), "door_id"),
        (ops.CloseLift, operations_pb2.OperatorLiftRequest(), "lift_id"),
    ]
    for rpc, request, field in cases:
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            functools.partial(rpc, request, timeout=STEP_TIMEOUT_S),
            field=field,
        )
    await asyncio.sleep(0.1)
    # Refused at the edge: the core never saw them.
    assert not [msg for msg in handled if type(msg).__name__ == "OperatorCommand"]


async def test_close_and_reopen_a_lane(
    ops: operations_pb2_grpc.OperationsServiceStub, service: Service
) -> None:
    lane = next(lane for lane in service.core.building.lanes if lane.bidirectional).name
    closed = await ops.CloseLane(
        operations_pb2.OperatorLaneRequest(lane=lane, reason="spill", operator_id="op-7"),
        timeout=STEP_TIMEOUT_S,
    )
    assert closed.message == f"lane {lane} closed"
    reopened = await ops.ReopenLane(
        operations_pb2.OperatorLaneRequest(lane=lane, reason="cleaned", operator_id="op-7"),
        timeout=STEP_TIMEOUT_S,
    )
    assert reopened.message == f"lane {lane} reopened"


async def test_watch_alerts_sees_an_operator_closing_a_door(
    ops: operations_pb2_grpc.OperationsServiceStub, service: Service
) -> None:
    call = ops.WatchAlerts(operations_pb2.WatchAlertsRequest())
    await wait_until(lambda: len(service.bus.router.alert_watchers) == 1)
    response = await ops.CloseDoor(
        operations_pb2.OperatorDoorRequest(door_id=DOOR, reason="cleaning", operator_id="op-7"),
        timeout=STEP_TIMEOUT_S,
    )
    assert response.message == f"door {DOOR} closed to robots"
    alert = await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)
    assert isinstance(alert, operations_pb2.Alert)
    assert (alert.code, alert.subject, alert.cleared) == ("DOOR_CLOSED_BY_OPERATOR", DOOR, False)
    assert alert.severity != operations_pb2.ALERT_SEVERITY_UNSPECIFIED
    assert alert.HasField("at")
    assert [a.code for a in await alerts(ops, active_only=True)] == ["DOOR_CLOSED_BY_OPERATOR"]
    # A watcher that asks for the active alerts gets them first.
    second = ops.WatchAlerts(operations_pb2.WatchAlertsRequest(include_active=True))
    first = await asyncio.wait_for(second.read(), STEP_TIMEOUT_S)
    assert isinstance(first, operations_pb2.Alert)
    assert (first.code, first.subject) == ("DOOR_CLOSED_BY_OPERATOR", DOOR)
    # Cancelled watches are unregistered.
    call.cancel()
    second.cancel()
    await wait_until(lambda: not service.bus.router.alert_watchers)


async def test_operations_service_is_served(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(
        health_pb2.HealthCheckRequest(service="fleet.v1.OperationsService")
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    reflected = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names: set[str] = set()
    async for answer in reflected:
        names.update(s.name for s in answer.list_services_response.service)
    assert "fleet.v1.OperationsService" in names
