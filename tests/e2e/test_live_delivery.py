"""End to end over real gRPC on a loopback port: a nurse's order from the warehouse to an OR
upstairs is delivered by a simulated robot that rides a lift and passes doors, and what the
devices saw happen is in the right order."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc

from fleet.bootstrap import Service
from fleet.config import METRICS_OFF, Settings
from fleet.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from simulators.demo import run_demo
from simulators.live import LiveTwin
from tests.conftest import DEMO_MAP
from tests.unit.twin_helpers import clean_robot

SCALE = 40.0


def _index(events: list[tuple[str, str]], actor: str, what: str, after: int = -1) -> int:
    for i, (a, w) in enumerate(events):
        if i > after and a == actor and w.startswith(what):
            return i
    raise AssertionError(f"no '{actor}: {what}' after event {after} in {events}")


async def test_order_to_an_or_upstairs_over_grpc(tmp_path: Path) -> None:
    settings = Settings(
        map_path=DEMO_MAP,
        database_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        grpc_port=0,
        metrics_port=METRICS_OFF,
        time_scale=SCALE,
        log_level="WARNING",
    )
    service = Service(settings)
    await service.start()
    target = f"127.0.0.1:{service.grpc_port}"
    building = service.core.building
    twin = LiveTwin(building, [clean_robot("AMR-01")], target, service.core.clock, SCALE)
    await twin.start()
    channel = grpc.aio.insecure_channel(target)
    try:
        # The robot's hello is in before the nurse orders, so the first answer can name it.
        for _ in range(200):
            run = service.core.robots.get("AMR-01")
            if run is not None and run.connected:
                break
            await asyncio.sleep(0.01)
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        created = await stub.CreateOrder(
            orders_pb2.CreateOrderRequest(
                pickup_station="WH-PORT-1",
                dropoff_station="OR-03",
                cargo_class=common_pb2.CARGO_CLASS_STERILE,
                quantity=2,
                priority=common_pb2.PRIORITY_URGENT,
                requested_by="nurse-or3",
            )
        )
        # The first answer already names a robot and an ETA (the insertion); the full plan follows.
        assert created.state == orders_pb2.ORDER_STATE_ASSIGNED
        assert created.robot_id == "AMR-01"
        assert created.HasField("eta")

        async def delivered() -> orders_pb2.Order:
            request = orders_pb2.WatchOrdersRequest(order_ids=[created.id], include_current=True)
            async for update in stub.WatchOrders(request):
                if update.order.state == orders_pb2.ORDER_STATE_DELIVERED:
                    return update.order
            raise AssertionError("watch ended before delivery")

        done = await asyncio.wait_for(delivered(), timeout=60)
        assert done.robot_id == "AMR-01"
        states = [e.state for e in done.history]
        assert states == [
            orders_pb2.ORDER_STATE_PENDING,
            orders_pb2.ORDER_STATE_ASSIGNED,
            orders_pb2.ORDER_STATE_PICKED_UP,
            orders_pb2.ORDER_STATE_DELIVERED,
        ]
    finally:
        await channel.close(None)
        await twin.stop()
        await service.stop(grace=0.2)

    events = [(e.actor, e.what) for e in twin.world.events]
    # Lift: called, car open at the robot's level, robot enters, car rides, robot exits, released.
    call = _index(events, "LIFT-CLEAN", "CALL B1 requested by AMR-01")
    open_b1 = _index(events, "LIFT-CLEAN", "open at B1", call)
    enter = _index(events, "AMR-01", "enter lift LIFT-CLEAN at B1", open_b1)
    go = _index(events, "LIFT-CLEAN", "GO_TO L1 requested by AMR-01", enter)
    ride = _index(events, "LIFT-CLEAN", "ride B1 -> L1", go)
    open_l1 = _index(events, "LIFT-CLEAN", "open at L1", ride)
    leave = _index(events, "AMR-01", "exit lift LIFT-CLEAN at L1", open_l1)
    _index(events, "LIFT-CLEAN", "RELEASE", leave)
    # The access-controlled door of the clean OR suite: requested, open, passed, closed.
    door = "D-L1-CLEAN-SUITE"
    req = _index(events, door, "open requested by AMR-01", leave)
    opened = _index(events, door, "open", req)
    passed = _index(events, "AMR-01", f"pass door {door}", opened)
    close_req = _index(events, door, "close requested by AMR-01", passed)
    _index(events, door, "closed", close_req)
    assert twin.world.conflicts == 0 and twin.world.violations == []


async def test_the_demo_ends_with_deliveries_through_doors_and_lifts(tmp_path: Path) -> None:
    args = argparse.Namespace(
        map=str(DEMO_MAP),
        robots=4,
        duration_s=20.0,
        time_scale=60.0,
        db=f"sqlite:///{tmp_path / 'demo.db'}",
        seed=3,
    )
    lines: list[str] = []
    summary = await run_demo(args, lines)
    assert summary["orders delivered"] and summary["orders failed"] == 0
    assert summary["deliveries that crossed a door and rode a lift"] != 0
    assert summary["conflicts (robots sharing a door, car or one-robot spot)"] == 0
    assert summary["safety violations"] == 0
    assert any("DELIVERED" in line for line in lines)
