"""The gRPC API end to end: a real `Service` on a loopback port, a grpc.aio client channel.

Covers the order service (round trips, every malformed request, paging, cancel, watch), the
robot and controller streams' admission rules, health, reflection, `/metrics`, and that a
restarted service finds every order again (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fleet.bootstrap import Service
from fleet.config import Settings
from fleet.domain.cargo import CargoClass
from fleet.domain.order import Order, OrderEvent, OrderState
from fleet.domain.priority import Priority
from fleet.store import open_store
from fleet.v1 import (
    common_pb2,
    infrastructure_pb2,
    infrastructure_pb2_grpc,
    orders_pb2,
    orders_pb2_grpc,
    robot_pb2,
    robot_pb2_grpc,
)

MAP = Path(__file__).resolve().parents[2] / "maps" / "demo_hospital.yaml"
STEP_TIMEOUT_S = 5.0


def make_settings(database_url: str) -> Settings:
    return Settings(
        map_path=MAP,
        database_url=database_url,
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        solve_time_limit_s=0.5,
        tick_interval_s=0.2,
        shutdown_grace_s=0.0,
    )


async def wait_for_map() -> None:
    """The demo map is written by another engineer; give it a moment if it is not there yet."""
    deadline = time.monotonic() + 30
    while not MAP.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{MAP} does not exist")
        await asyncio.sleep(0.5)


async def start_service(database_url: str) -> Service:
    await wait_for_map()
    service = Service(make_settings(database_url))
    await service.start()
    return service


class Client:
    """Stubs on one channel to a running service."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}")
        self.orders = orders_pb2_grpc.OrderServiceStub(self.channel)
        self.robots = robot_pb2_grpc.RobotGatewayStub(self.channel)
        self.infra = infrastructure_pb2_grpc.InfrastructureGatewayStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)

    async def create(self, **fields: Any) -> orders_pb2.Order:
        request = orders_pb2.CreateOrderRequest(**(VALID_ORDER | fields))
        return await self.orders.CreateOrder(request, timeout=STEP_TIMEOUT_S)

    async def list_all(self, **fields: Any) -> list[orders_pb2.Order]:
        response = await self.orders.ListOrders(
            orders_pb2.ListOrdersRequest(page_size=1000, **fields), timeout=STEP_TIMEOUT_S
        )
        return list(response.orders)


VALID_ORDER: dict[str, Any] = {
    "pickup_station": "WH-PORT-1",
    "dropoff_station": "OR-03",
    "cargo_class": common_pb2.CARGO_CLASS_STERILE,
    "quantity": 2,
    "priority": common_pb2.PRIORITY_URGENT,
    "requested_by": "nurse-17",
    "note": "tray 4",
}


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    svc = await start_service(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        yield svc
    finally:
        await svc.stop(grace=0)


@pytest.fixture
async def client(service: Service) -> AsyncIterator[Client]:
    c = Client(service)
    try:
        yield c
    finally:
        await c.close()


async def expect_error(
    code: grpc.StatusCode, call: Callable[[], Any], field: str | None = None
) -> str:
    """Await `call()`, expect it to fail with `code`; return the details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details() or ""
    if field is not None:
        assert details.startswith(f"{field}:"), details
    return details


def robot_hello(robot_id: str = "AMR-01", node: str = "B1-PARK-1") -> robot_pb2.RobotMessage:
    return robot_pb2.RobotMessage(
        hello=robot_pb2.RobotHello(
            robot_id=robot_id,
            vendor="Acme",
            model="Carrier 2",
            cargo_classes=[common_pb2.CARGO_CLASS_STERILE, common_pb2.CARGO_CLASS_CLEAN],
            capacity_slots=6,
            max_speed_m_s=1.2,
            current_node=node,
            battery_percent=90,
        )
    )


async def stream_status(call: Any) -> tuple[grpc.StatusCode, str]:
    """Read a stream to its end; its final status code and details."""
    try:
        while await asyncio.wait_for(call.read(), STEP_TIMEOUT_S) is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError:
        pass
    return await call.code(), await call.details()


async def wait_until(predicate: Callable[[], bool], timeout: float = STEP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# ---- orders ------------------------------------------------------------------------------------


async def test_create_then_get_round_trip(store_url: str) -> None:
    service = await start_service(store_url)
    client = Client(service)
    try:
        needed_by = Timestamp(seconds=int(time.time()) + 3600)
        created = await client.create(needed_by=needed_by)
        assert created.id.startswith("ORD-")
        assert created.state == orders_pb2.ORDER_STATE_PENDING
        assert created.HasField("created_at")
        assert [e.state for e in created.history] == [orders_pb2.ORDER_STATE_PENDING]
        got = await client.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=created.id))
        assert got.id == created.id
        assert got.pickup_station == "WH-PORT-1"
        assert got.dropoff_station == "OR-03"
        assert got.cargo_class == common_pb2.CARGO_CLASS_STERILE
        assert got.quantity == 2
        assert got.priority == common_pb2.PRIORITY_URGENT
        assert got.needed_by == needed_by
        assert got.requested_by == "nurse-17"
        assert got.note == "tray 4"
        assert got.created_at == created.created_at
    finally:
        await client.close()
        await service.stop(grace=0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"pickup_station": ""}, "pickup_station", id="missing-pickup"),
        pytest.param({"pickup_station": "NOWHERE"}, "pickup_station", id="unknown-pickup"),
        pytest.param({"dropoff_station": "OR-99"}, "dropoff_station", id="unknown-dropoff"),
        pytest.param(
            {"cargo_class": common_pb2.CARGO_CLASS_UNSPECIFIED}, "cargo_class", id="no-cargo"
        ),
        pytest.param({"cargo_class": 42}, "cargo_class", id="bad-cargo-enum"),
        pytest.param({"quantity": 0}, "quantity", id="quantity-0"),
        pytest.param({"quantity": -3}, "quantity", id="quantity-negative"),
        pytest.param({"needed_by": Timestamp(seconds=1_000_000)}, "needed_by", id="past"),
    ],
)
async def test_malformed_create_is_rejected_and_changes_nothing(
    client: Client, fields: dict[str, Any], field: str
) -> None:
    await client.create()
    before = await client.list_all()
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, lambda: client.create(**fields), field=field
    )
    after = await client.list_all()
    assert [o.id for o in after] == [o.id for o in before]
    # The next accepted order takes the next number: the rejected one used none.
    nxt = await client.create()
    assert nxt.id == "ORD-000002"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        pytest.param({"robot_id": "AMR-404"}, "robot_id", id="unknown-robot"),
        pytest.param({"page_token": "not a token!"}, "page_token", id="garbage-token"),
        pytest.param({"page_token": "bzE6LTE"}, "page_token", id="negative-offset-token"),
        pytest.param({"page_size": 1001}, "page_size", id="page-too-big"),
        pytest.param({"page_size": -1}, "page_size", id="page-negative"),
        pytest.param({"states": [99]}, "states", id="unknown-state"),
    ],
)
async def test_malformed_list_is_rejected(
    client: Client, request_fields: dict[str, Any], field: str
) -> None:
    await client.create()
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: client.orders.ListOrders(orders_pb2.ListOrdersRequest(**request_fields)),
        field=field,
    )
    assert len(await client.list_all()) == 1


async def test_list_pages_newest_first_and_filters(client: Client) -> None:
    ids = [(await client.create()).id for _ in range(5)]
    cancelled = ids[1]
    await client.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=cancelled))
    seen: list[str] = []
    token = ""
    while True:
        page = await client.orders.ListOrders(
            orders_pb2.ListOrdersRequest(page_size=2, page_token=token)
        )
        assert len(page.orders) <= 2
        seen.extend(o.id for o in page.orders)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    only_cancelled = await client.list_all(states=[orders_pb2.ORDER_STATE_CANCELLED])
    assert [o.id for o in only_cancelled] == [cancelled]
    pending = await client.list_all(states=[orders_pb2.ORDER_STATE_PENDING])
    assert {o.id for o in pending} == set(ids) - {cancelled}


async def test_get_unknown_order_is_not_found(client: Client) -> None:
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        lambda: client.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="ORD-999999")),
    )
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: client.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="")),
        field="order_id",
    )


async def test_cancel_pending_then_again(client: Client) -> None:
    order = await client.create()
    cancelled = await client.orders.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=order.id, reason="surgery postponed")
    )
    assert cancelled.state == orders_pb2.ORDER_STATE_CANCELLED
    assert cancelled.history[-1].detail == "surgery postponed"
    await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: client.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order.id)),
    )
    got = await client.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id))
    assert got.state == orders_pb2.ORDER_STATE_CANCELLED
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        lambda: client.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id="ORD-424242")),
    )


async def test_watch_receives_created_order(client: Client, service: Service) -> None:
    watchers_before = len(service.bus.router.watchers)
    call = client.orders.WatchOrders(orders_pb2.WatchOrdersRequest())
    await wait_until(lambda: len(service.bus.router.watchers) == watchers_before + 1)
    created = await client.create()
    update = await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)
    assert isinstance(update, orders_pb2.OrderUpdate)
    assert update.order.id == created.id
    assert update.order.state == orders_pb2.ORDER_STATE_PENDING
    call.cancel()
    # Cancelling the call unregisters the watcher.
    await wait_until(lambda: len(service.bus.router.watchers) == watchers_before)


async def test_watch_filters_and_sends_current_first(client: Client, service: Service) -> None:
    first = await client.create()
    other = await client.create()
    call = client.orders.WatchOrders(
        orders_pb2.WatchOrdersRequest(order_ids=[first.id], include_current=True)
    )
    current = await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)
    assert current.order.id == first.id
    await client.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=other.id))
    await client.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=first.id))
    update = await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)
    assert update.order.id == first.id
    assert update.order.state == orders_pb2.ORDER_STATE_CANCELLED
    call.cancel()


# ---- robots and controllers --------------------------------------------------------------------


async def test_robot_stream_must_start_with_hello(client: Client) -> None:
    call = client.robots.Connect()
    state = robot_pb2.RobotMessage(state=robot_pb2.RobotState(robot_id="AMR-01"))
    await call.write(state)
    code, details = await stream_status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "first message must be hello"


async def test_robot_hello_with_unknown_node_is_rejected(client: Client, service: Service) -> None:
    call = client.robots.Connect()
    await call.write(robot_hello(node="NO-SUCH-NODE"))
    code, details = await stream_status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("current_node:"), details
    assert not service.core.known_robot("AMR-01")
    assert "AMR-01" not in service.bus.router.robots
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: client.orders.ListOrders(orders_pb2.ListOrdersRequest(robot_id="AMR-01")),
        field="robot_id",
    )


async def test_robot_state_naming_another_robot_is_rejected(
    client: Client, service: Service
) -> None:
    call = client.robots.Connect()
    await call.write(robot_hello("AMR-01"))
    welcome = await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)
    assert welcome.WhichOneof("msg") == "welcome"
    assert welcome.welcome.robot_id == "AMR-01"
    assert welcome.welcome.map_name == "Demo Hospital"
    # The robot is known now: listing its orders is allowed.
    assert await client.list_all(robot_id="AMR-01") == []
    await call.write(
        robot_pb2.RobotMessage(state=robot_pb2.RobotState(robot_id="AMR-02", last_node="B1-PARK-1"))
    )
    code, details = await stream_status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("robot_id:"), details
    # The stream is gone: the robot is disconnected and its sink unregistered.
    await wait_until(lambda: "AMR-01" not in service.bus.router.robots)
    await wait_until(lambda: service.core.robot_view()[0].mode.value == "OFFLINE")


async def test_robot_gets_steps_for_an_order(client: Client, service: Service) -> None:
    call = client.robots.Connect()
    await call.write(robot_hello("AMR-01", node="B1-PARK-1"))
    assert (await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)).WhichOneof("msg") == "welcome"
    order = await client.create(pickup_station="WH-PORT-1", dropoff_station="OR-01")
    message = await asyncio.wait_for(call.read(), 15)
    assert message.WhichOneof("msg") == "step"
    assert order.id in message.step.order_ids or message.step.WhichOneof("kind") == "move"
    got = await client.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id))
    assert got.state == orders_pb2.ORDER_STATE_ASSIGNED
    assert got.robot_id == "AMR-01"
    assert [o.id for o in await client.list_all(robot_id="AMR-01")] == [order.id]
    registry = service.metrics.registry
    assert registry.get_sample_value("fleet_dispatch_latency_seconds_count") == 1
    solves = registry.get_sample_value("fleet_solve_duration_seconds_count")
    assert solves is not None and solves >= 1
    call.cancel()


async def test_second_connection_of_a_robot_replaces_the_first(
    client: Client, service: Service
) -> None:
    first = client.robots.Connect()
    await first.write(robot_hello("AMR-01"))
    assert (await asyncio.wait_for(first.read(), STEP_TIMEOUT_S)).WhichOneof("msg") == "welcome"
    second = client.robots.Connect()
    await second.write(robot_hello("AMR-01"))
    assert (await asyncio.wait_for(second.read(), STEP_TIMEOUT_S)).WhichOneof("msg") == "welcome"
    code, _ = await stream_status(first)
    assert code == grpc.StatusCode.ABORTED
    # The old stream's end does not take the robot offline: the new stream holds it.
    await asyncio.sleep(0.1)
    assert [r.mode.value for r in service.core.robot_view()] == ["IDLE"]
    assert "AMR-01" in service.bus.router.robots
    await second.done_writing()
    assert (await stream_status(second))[0] == grpc.StatusCode.OK
    await wait_until(lambda: service.core.robot_view()[0].mode.value == "OFFLINE")


async def test_robot_marked_offline_must_say_hello_again(client: Client, service: Service) -> None:
    from fleet.dispatch import messages as m

    call = client.robots.Connect()
    await call.write(robot_hello("AMR-01"))
    assert (await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)).WhichOneof("msg") == "welcome"
    state = robot_pb2.RobotMessage(
        state=robot_pb2.RobotState(
            robot_id="AMR-01",
            pose=common_pb2.Pose(level="B1", x=60, y=32),
            last_node="B1-PARK-1",
            battery_percent=88,
            mode=robot_pb2.ROBOT_MODE_IDLE,
        )
    )
    await call.write(state)
    await wait_until(lambda: service.core.robot_view()[0].battery_percent == 88)
    # The core marks it offline (as after a report timeout) while the stream stays open.
    await service.bus.submit(m.RobotDisconnected("AMR-01"))
    await call.write(state)
    code, details = await stream_status(call)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "send a hello" in details


async def test_controller_hello_with_unknown_lift_is_rejected(
    client: Client, service: Service
) -> None:
    call = client.infra.Connect()
    await call.write(
        infrastructure_pb2.InfrastructureMessage(
            hello=infrastructure_pb2.ControllerHello(
                controller_id="KONE-1", lift_ids=["LIFT-CLEAN", "LIFT-NOPE"]
            )
        )
    )
    code, details = await stream_status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("lift_ids:"), details
    assert "LIFT-CLEAN" not in service.bus.router.devices


async def test_controller_stream_rules(client: Client, service: Service) -> None:
    not_hello = client.infra.Connect()
    await not_hello.write(
        infrastructure_pb2.InfrastructureMessage(
            door_state=infrastructure_pb2.DoorState(
                door_id="D-OR-01", mode=infrastructure_pb2.DOOR_MODE_CLOSED
            )
        )
    )
    assert await stream_status(not_hello) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "first message must be hello",
    )
    call = client.infra.Connect()
    await call.write(
        infrastructure_pb2.InfrastructureMessage(
            hello=infrastructure_pb2.ControllerHello(
                controller_id="DOORS-1", door_ids=["D-OR-01"], lift_ids=["LIFT-CLEAN"]
            )
        )
    )
    await wait_until(lambda: "D-OR-01" in service.bus.router.devices)
    assert "LIFT-CLEAN" in service.bus.router.devices
    await call.write(
        infrastructure_pb2.InfrastructureMessage(
            door_state=infrastructure_pb2.DoorState(
                door_id="D-OR-02", mode=infrastructure_pb2.DOOR_MODE_OPEN
            )
        )
    )
    code, details = await stream_status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("door_state.door_id:"), details
    await wait_until(lambda: not service.bus.router.devices)


# ---- health, reflection, metrics ---------------------------------------------------------------


async def test_health_reports_serving(client: Client) -> None:
    health = health_pb2_grpc.HealthStub(client.channel)
    for name in ("", "fleet.v1.OrderService", "fleet.v1.RobotGateway"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, name


async def test_reflection_lists_the_services(client: Client) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names: set[str] = set()
    async for response in call:
        names.update(s.name for s in response.list_services_response.service)
    assert {
        "fleet.v1.OrderService",
        "fleet.v1.RobotGateway",
        "fleet.v1.InfrastructureGateway",
        "grpc.health.v1.Health",
    } <= names


async def test_metrics_endpoint(client: Client, service: Service) -> None:
    await client.create()
    service.metrics.refresh(service.core)
    port = service.metrics_port
    assert port

    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    text = await asyncio.to_thread(fetch)
    lines = text.splitlines()
    assert 'fleet_orders{state="PENDING"} 1.0' in lines
    assert "fleet_orders_created_total 1.0" in lines
    assert any(line.startswith("fleet_robots{") for line in lines)
    assert any(line.startswith("fleet_dispatch_latency_seconds_bucket") for line in lines)


# ---- restart -----------------------------------------------------------------------------------


async def test_restart_keeps_every_order(store_url: str) -> None:
    first = await start_service(store_url)
    client = Client(first)
    try:
        robot = client.robots.Connect()
        await robot.write(robot_hello("AMR-01"))
        assert (await asyncio.wait_for(robot.read(), STEP_TIMEOUT_S)).WhichOneof("msg") == (
            "welcome"
        )
        created = [
            await client.create(),
            await client.create(dropoff_station="OR-05", quantity=1),
            await client.create(
                pickup_station="SOILED-UTIL-1",
                dropoff_station="WASTE-STATION",
                cargo_class=common_pb2.CARGO_CLASS_SOILED,
            ),
            await client.create(dropoff_station="OR-08"),
        ]
        await client.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=created[3].id))
        assigned = [orders_pb2.ORDER_STATE_ASSIGNED]

        async def some_assigned() -> bool:
            return bool(await client.list_all(states=assigned))

        deadline = time.monotonic() + 15
        while not await some_assigned():
            assert time.monotonic() < deadline, "no order was assigned to the robot"
            await asyncio.sleep(0.05)
        before = await client.list_all()
        robot.cancel()
    finally:
        await client.close()
        await first.stop(grace=0)

    second = await start_service(store_url)
    client = Client(second)
    try:
        after = await client.list_all()
        assert [(o.id, o.pickup_station, o.dropoff_station, o.quantity) for o in after] == [
            (o.id, o.pickup_station, o.dropoff_station, o.quantity) for o in before
        ]
        states = {o.id: o.state for o in after}
        assert states[created[3].id] == orders_pb2.ORDER_STATE_CANCELLED
        for order in created[:3]:  # no robot is connected: nothing can be assigned now
            assert states[order.id] == orders_pb2.ORDER_STATE_PENDING
        nxt = await client.create()
        assert nxt.id == "ORD-000005"
    finally:
        await client.close()
        await second.stop(grace=0)


async def test_weight_and_controlled_drug_return_over_grpc(store_url: str) -> None:
    """A return leg created over the wire rides on the outbound's robot, in its compartment:
    the order says so, and the robot is told which compartment to open."""
    # The outbound: PHARMACY -> OR-03, delivered by AMR-01 from compartment index 2 (number 3).
    store = open_store(store_url)
    try:
        t = time.time() - 3600
        outbound = Order(
            id="ORD-000001",
            pickup_station="PHARMACY",
            dropoff_station="OR-03",
            cargo_class=CargoClass.CONTROLLED_DRUG,
            quantity=1,
            priority=Priority.ROUTINE,
            created_at=t,
            state=OrderState.DELIVERED,
            robot_id="AMR-01",
            picked_up_at=t + 600,
            delivered_at=t + 1200,
            weight_kg=0.5,
            compartment=2,
        )
        outbound.history = [
            OrderEvent(t, OrderState.PENDING, "accepted"),
            OrderEvent(t + 1, OrderState.ASSIGNED, "assigned to AMR-01"),
            OrderEvent(t + 600, OrderState.PICKED_UP, "on board AMR-01"),
            OrderEvent(t + 1200, OrderState.DELIVERED, "delivered by AMR-01"),
        ]
        store.add_order(outbound)
    finally:
        store.close()
    service = await start_service(store_url)
    client = Client(service)
    try:
        hello = robot_hello("AMR-01", node="L1-OR-03")
        hello.hello.cargo_classes.append(common_pb2.CARGO_CLASS_CONTROLLED_DRUG)
        hello.hello.max_payload_kg = 60.0
        hello.hello.compartments = 4
        robot = client.robots.Connect()
        await robot.write(hello)
        assert (await asyncio.wait_for(robot.read(), STEP_TIMEOUT_S)).WhichOneof("msg") == (
            "welcome"
        )
        caps = service.core.robot_view()[0].capabilities
        assert (caps.max_payload_kg, caps.compartments) == (60.0, 4)
        drug = {
            "pickup_station": "OR-03",
            "dropoff_station": "PHARMACY",
            "cargo_class": common_pb2.CARGO_CLASS_CONTROLLED_DRUG,
            "quantity": 1,
        }
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda: client.create(**drug, return_of="ORD-000404"),
            field="return_of",
        )
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda: client.create(**drug, return_of="ORD-000001", weight_kg=75.0),
            field="weight_kg",
        )
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda: client.create(weight_kg=-1.0),
            field="weight_kg",
        )
        created = await client.create(**drug, return_of="ORD-000001", weight_kg=0.25)
        got = await client.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=created.id))
        assert (got.weight_kg, got.return_of, got.compartment) == (0.25, "ORD-000001", 3)
        # The robot stands at OR-03: its first step loads the return into compartment 3.
        message = await asyncio.wait_for(robot.read(), 15)
        assert message.step.WhichOneof("kind") == "pickup", message
        assert list(message.step.order_ids) == [created.id]
        uses = [(u.order_id, u.compartment) for u in message.step.pickup.compartments]
        assert uses == [(created.id, 3)]
        got = await client.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=created.id))
        assert got.robot_id == "AMR-01" and got.compartment == 3
        # A weighed ordinary order reads back its weight; its compartment is not known yet.
        plain = await client.create(weight_kg=12.5)
        got = await client.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=plain.id))
        assert got.weight_kg == 12.5 and got.return_of == ""
        robot.cancel()
    finally:
        await client.close()
        await service.stop(grace=0)


# ---- configuration and command line ----------------------------------------------------------


def test_settings_flags_override_environment() -> None:
    import argparse

    from fleet.config import add_serve_arguments

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    env = {
        "FLEET_MAP": "env.yaml",
        "FLEET_GRPC_PORT": "6000",
        "FLEET_METRICS_PORT": "-1",
        "FLEET_TIME_SCALE": "20",
        "FLEET_DATABASE_URL": "postgresql://fleet@db/fleet",
        "FLEET_DEFER_MARGIN_MIN": "45",
    }
    settings = Settings.from_env_and_args(parser.parse_args(["--port", "7000"]), env)
    assert settings.defer_margin_min == 45.0
    assert settings.map_path == Path("env.yaml")
    assert settings.grpc_port == 7000
    assert settings.metrics_port == -1
    assert settings.time_scale == 20.0
    assert settings.database_url == "postgresql://fleet@db/fleet"
    defaults = Settings.from_env_and_args(None, {"FLEET_MAP": "m.yaml"})
    assert (defaults.database_url, defaults.grpc_port, defaults.metrics_port) == (
        "sqlite:///fleet.db",
        50051,
        9464,
    )
    assert defaults.defer_margin_min == 0.0  # late commitment is the hospital's choice
    for args, environ, name in [
        (["--port", "http"], env, "--port"),
        ([], env | {"FLEET_GRPC_PORT": "70000"}, "FLEET_GRPC_PORT"),
        ([], env | {"FLEET_TIME_SCALE": "0"}, "FLEET_TIME_SCALE"),
        (["--metrics-port", "-2"], env, "--metrics-port"),
        (["--log-level", "chatty"], env, "--log-level"),
        (["--defer-margin-min", "-5"], env, "--defer-margin-min"),
        ([], {}, "--map"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}"):
            Settings.from_env_and_args(parser.parse_args(args), environ)
    with pytest.raises(ValueError, match=r"^solve_time_limit_s"):
        Settings(map_path=MAP, solve_time_limit_s=-1)


def test_cli_map_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from fleet.cli import main

    assert main(["map", "check", str(MAP)]) == 0
    assert "Demo Hospital" in capsys.readouterr().out
    assert main(["map", "check", str(tmp_path / "missing.yaml")]) == 1
    assert "file not found" in capsys.readouterr().out
    assert main(["serve", "--port", "x", "--map", str(MAP)]) == 2
    assert "--port" in capsys.readouterr().err


async def test_service_with_a_bad_map_does_not_start(tmp_path: Path) -> None:
    from fleet.building.loader import MapError

    service = Service(
        Settings(map_path=tmp_path / "nope.yaml", database_url=f"sqlite:///{tmp_path}/f.db")
    )
    with pytest.raises(MapError):
        await service.start()
    await service.stop()


# ---- controllers: fire alarm, acks, faults and leases ------------------------------------------


def record_handled(service: Service) -> list[object]:
    """Every message the core handles from now on, in order."""
    handled: list[object] = []
    handle = service.core.handle

    def record(msg: Any) -> Any:
        handled.append(msg)
        return handle(msg)

    service.core.handle = record  # type: ignore[method-assign]
    return handled


async def test_controller_relays_fire_alarm_acks_and_faults(
    client: Client, service: Service
) -> None:
    from fleet.dispatch import messages as m

    handled = record_handled(service)
    ipb = infrastructure_pb2
    call = client.infra.Connect()
    await call.write(
        ipb.InfrastructureMessage(
            hello=ipb.ControllerHello(
                controller_id="SIEMENS-1", door_ids=["D-OR-01"], lift_ids=["LIFT-CLEAN"]
            )
        )
    )
    await wait_until(lambda: "LIFT-CLEAN" in service.bus.router.devices)
    for message in (
        ipb.InfrastructureMessage(fire_alarm=ipb.FireAlarm(active=True, detail="zone 3")),
        ipb.InfrastructureMessage(
            ack=ipb.RequestAck(
                device_id="LIFT-CLEAN", session_id="S-1", accepted=False, reason="lease expired"
            )
        ),
        ipb.InfrastructureMessage(
            door_state=ipb.DoorState(
                door_id="D-OR-01", mode=ipb.DOOR_MODE_FAULT, fault_detail="motor overcurrent"
            )
        ),
        ipb.InfrastructureMessage(
            lift_state=ipb.LiftState(
                lift_id="LIFT-CLEAN",
                current_level="L1",
                door=ipb.LIFT_DOOR_OPEN,
                mode=ipb.LIFT_MODE_OUT_OF_SERVICE,
                session_id="S-2",
                fault_detail="maintenance",
                lease_remaining_s=12.5,
            )
        ),
    ):
        await call.write(message)
    expected = [
        m.FireAlarm(active=True, controller_id="SIEMENS-1", detail="zone 3"),
        m.RequestAck("LIFT-CLEAN", "S-1", False, "lease expired"),
        m.DoorReport("D-OR-01", m.DoorMode.FAULT, "", "motor overcurrent"),
        m.LiftReport(
            "LIFT-CLEAN",
            "L1",
            m.LiftDoorState.OPEN,
            m.LiftMode.OUT_OF_SERVICE,
            session_id="S-2",
            fault="maintenance",
            lease_remaining_s=12.5,
        ),
    ]
    await wait_until(lambda: all(e in handled for e in expected))
    # An ack may only name a device of this controller.
    await call.write(
        ipb.InfrastructureMessage(
            ack=ipb.RequestAck(device_id="LIFT-DIRTY", session_id="S-3", accepted=True)
        )
    )
    code, details = await stream_status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("ack.device_id:"), details


async def test_controller_messages_with_bad_fields_are_refused(
    client: Client, service: Service
) -> None:
    ipb = infrastructure_pb2
    bad = [
        (ipb.InfrastructureMessage(ack=ipb.RequestAck(session_id="S-1")), "ack.device_id"),
        (ipb.InfrastructureMessage(ack=ipb.RequestAck(device_id="LIFT-CLEAN")), "ack.session_id"),
        (
            ipb.InfrastructureMessage(
                lift_state=ipb.LiftState(
                    lift_id="LIFT-CLEAN",
                    current_level="L1",
                    door=ipb.LIFT_DOOR_CLOSED,
                    mode=ipb.LIFT_MODE_NORMAL,
                    lease_remaining_s=-1,
                )
            ),
            "lift_state.lease_remaining_s",
        ),
    ]
    for message, field in bad:
        call = client.infra.Connect()
        await call.write(
            ipb.InfrastructureMessage(
                hello=ipb.ControllerHello(controller_id="KONE-1", lift_ids=["LIFT-CLEAN"])
            )
        )
        await call.write(message)
        code, details = await stream_status(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert details.startswith(f"{field}:"), details


async def test_lift_requests_carry_the_lease(client: Client, service: Service) -> None:
    from fleet.dispatch import messages as m

    ipb = infrastructure_pb2
    call = client.infra.Connect()
    await call.write(
        ipb.InfrastructureMessage(
            hello=ipb.ControllerHello(controller_id="KONE-1", lift_ids=["LIFT-CLEAN"])
        )
    )
    await wait_until(lambda: "LIFT-CLEAN" in service.bus.router.devices)
    service.bus.router.route(
        [m.LiftCommand("LIFT-CLEAN", m.LiftAction.RENEW, "S-1", "AMR-01", lease_s=30.0)]
    )
    command = await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)
    assert isinstance(command, ipb.InfrastructureCommand)
    request = command.lift
    assert (request.lift_id, request.session_id, request.robot_id) == (
        "LIFT-CLEAN",
        "S-1",
        "AMR-01",
    )
    assert (request.action, request.lease_s) == (ipb.LIFT_ACTION_RENEW, 30.0)
    call.cancel()
